"""deploy/k8s/scale-out: the NATS StatefulSet and the worker shards, checked without a cluster.

Valid against the Kubernetes schemas (kubernetes-validate, offline), rendered by
`kubectl kustomize` when kubectl is there, and wired like the compose profile: the NATS
config is deploy/nats's, the routes name every pod, the shards are `ordinal/<replicas>`,
the workers use the server's partition count and the cluster's size as replicas, and the
Secret's keys land where make-auth.sh and the settings read them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.k8s_rules import check_rules_mount

kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCALE_OUT = DEPLOY / "k8s" / "scale-out"
MANIFESTS = sorted(p for p in SCALE_OUT.glob("*.yaml") if p.name != "kustomization.yaml")
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
NATS_CONF = (DEPLOY / "nats" / "nats.conf").read_text()
KUBECTL = shutil.which("kubectl")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in docs(p)}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_valid_against_kubernetes_schema(path: Path, version: str) -> None:
    for doc in docs(path):
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not found")
@pytest.mark.parametrize("root", [DEPLOY / "k8s", SCALE_OUT], ids=["k8s", "scale-out"])
def test_kustomize_builds_valid_manifests(root: Path) -> None:
    assert KUBECTL
    built = subprocess.run(
        [KUBECTL, "kustomize", str(root)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    rendered = [d for d in yaml.safe_load_all(built.stdout) if d]
    for doc in rendered:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "iotad"
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    listed = sum(len(resource_docs(root / r)) for r in kustomization["resources"])
    assert len(rendered) == listed


def resource_docs(path: Path) -> list[Any]:
    """The documents of a kustomization's resource: a file, or a directory whose
    kustomization generates ConfigMaps (deploy/k8s/rules)."""
    if path.is_file():
        return docs(path)
    kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "configMapGenerator"}
    return list(kustomization["configMapGenerator"])


def test_kustomization_lists_everything_but_the_example_secret() -> None:
    kustomization = yaml.safe_load((SCALE_OUT / "kustomization.yaml").read_text())
    expected = {p.name for p in MANIFESTS} - {"secret.example.yaml"} | {"../rules"}
    assert set(kustomization["resources"]) == expected


def test_the_two_deployments_do_not_collide() -> None:
    """Names differ from deploy/k8s's, so that a mistake of applying both fails nothing."""
    base = {
        (d["kind"], d["metadata"]["name"])
        for p in (DEPLOY / "k8s").glob("*.yaml")
        if p.name != "kustomization.yaml"
        for d in docs(p)
    }
    assert base & set(resources()) == set()


def test_nats_config_is_deploy_nats() -> None:
    config = resources()[("ConfigMap", "iotad-nats-config")]["data"]
    for name in ("nats.conf", "make-auth.sh"):
        assert config[name] == (DEPLOY / "nats" / name).read_text(), (
            f"{name} is stale: run python deploy/k8s/scale-out/write_nats_config.py"
        )


def test_example_secret_is_a_placeholder_with_every_key() -> None:
    (secret,) = docs(SCALE_OUT / "secret.example.yaml")
    assert all(v.startswith("CHANGE-ME") for v in secret["stringData"].values())
    assert "EXAMPLE ONLY" in (SCALE_OUT / "secret.example.yaml").read_text()
    nats = resources()[("StatefulSet", "nats")]["spec"]["template"]["spec"]
    (volume,) = [v for v in nats["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert {i["key"] for i in volume["secret"]["items"]} == set(secret["stringData"])


def nats_parts() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    sts = resources()[("StatefulSet", "nats")]
    pod = sts["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (nats,) = pod["containers"]
    return sts, pod, init, nats


def test_nats_cluster_wiring() -> None:
    sts, pod, init, nats = nats_parts()
    replicas = sts["spec"]["replicas"]
    assert replicas == 3 == int(re.search(r"stream_replicas: (\d+)", NATS_CONF).group(1))  # type: ignore[union-attr]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"  # OrderedReady never gets a quorum
    headless = resources()[("Service", sts["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True

    # make-auth.sh writes the file nats.conf includes, with a route to every pod
    (include,) = re.findall(r'(?m)^include "([^"]+)"', NATS_CONF)
    conf_mount = next(m for m in nats["volumeMounts"] if m.get("subPath") == "nats.conf")
    conf_dir = conf_mount["mountPath"].rsplit("/", 1)[0]
    assert nats["command"] == ["nats-server", "--config", conf_mount["mountPath"]]
    script_path = "/etc/nats-config/make-auth.sh"
    assert init["command"][:3] == ["/bin/sh", script_path, f"{conf_dir}/{include}"]
    name, svc = sts["metadata"]["name"], sts["spec"]["serviceName"]
    assert init["command"][3:] == [f"{name}-{i}.{svc}:6222" for i in range(replicas)]
    auth = next(m for m in nats["volumeMounts"] if m["mountPath"] == f"{conf_dir}/auth")
    assert any(m["name"] == auth["name"] for m in init["volumeMounts"])

    # the Secret's keys become the files make-auth.sh reads, in its SECRETS_DIR
    secrets_dir = {e["name"]: e["value"] for e in init["env"]}["SECRETS_DIR"]
    mount = next(m for m in init["volumeMounts"] if m["mountPath"] == secrets_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    files = {i["path"] for i in volume["secret"]["items"]}
    script = (DEPLOY / "nats" / "make-auth.sh").read_text()
    assert files == set(re.findall(r"[A-Z_]+:([a-z_]+)", script.split('vars="')[1].split('"')[0]))

    # server_name from the pod name; JetStream on the claim; ports as in nats.conf
    env = {e["name"]: e for e in nats["env"]}
    assert env["NATS_SERVER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    data = next(m for m in nats["volumeMounts"] if m["name"] == "data")
    assert f"store_dir: {data['mountPath']}/" in NATS_CONF
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["data"]
    ports = {p["name"]: p["containerPort"] for p in nats["ports"]}
    assert ports == {"client": 4222, "cluster": 6222, "mqtt": 1883, "monitor": 8222}
    for port in ports.values():
        assert re.search(rf"(?m)^\s*(listen|http): 0\.0\.0\.0:{port}$", NATS_CONF), port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert nats[probe]["httpGet"]["path"].startswith("/healthz")
        assert nats[probe]["httpGet"]["port"] == "monitor"


def shard_parts() -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    sts = resources()[("StatefulSet", "iotad-shard")]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = resources()[("ConfigMap", "iotad-shard-config")]["data"]
    env = {**config, **{e["name"]: e.get("value", "") for e in container["env"]}}
    return sts, container, env


def test_shards_are_the_ordinals() -> None:
    sts, container, env = shard_parts()
    n = sts["spec"]["replicas"]
    assert env["IOTAD_SHARD"] == f"ordinal/{n}"  # N must follow replicas
    fields = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}) for e in container["env"]}
    assert fields["HOSTNAME"]["fieldPath"] == "metadata.name"
    assert fields["IOTAD_WORKER_ID"]["fieldPath"] == "metadata.name"
    headless = resources()[("Service", sts["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]


def test_shards_match_the_cluster() -> None:
    _sts, container, env = shard_parts()
    nats_sts, _pod, _init, _nats = nats_parts()
    (partitions,) = {int(p) for p in re.findall(r"partition\((\d+),1\)", NATS_CONF)}
    assert env["IOTAD_SOURCE"] == "nats"
    assert int(env["IOTAD_NATS__PARTITIONS"]) == partitions
    assert int(env["IOTAD_NATS__REPLICAS"]) == nats_sts["spec"]["replicas"]
    name, svc = nats_sts["metadata"]["name"], nats_sts["spec"]["serviceName"]
    urls = [f"nats://{name}-{i}.{svc}:4222" for i in range(nats_sts["spec"]["replicas"])]
    assert env["IOTAD_NATS__URLS"].split(",") == urls
    assert env["IOTAD_NATS__USER"] == "iotad"
    assert "IOTAD_CHECKPOINT__PATH" not in env
    assert not any("PASSWORD" in key for key in env)
    # the Secret's key `iotad` is the file the settings read for IOTAD_NATS__PASSWORD
    pod = resources()[("StatefulSet", "iotad-shard")]["spec"]["template"]["spec"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == env["IOTAD_SECRETS_DIR"])
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["items"] == [{"key": "iotad", "path": "iotad_nats__password"}]
    assert volume["secret"]["secretName"] == "iotad-nats"
    models = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert env["IOTAD_MODEL__PATH"].startswith(models["mountPath"] + "/")
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims <= {n for kind, n in resources() if kind == "PersistentVolumeClaim"}


def test_shard_pods_probe_and_run_like_the_single_worker() -> None:
    base = yaml.safe_load((DEPLOY / "k8s" / "worker.yaml").read_text())
    base_pod = base["spec"]["template"]["spec"]
    (base_container,) = base_pod["containers"]
    sts = resources()[("StatefulSet", "iotad-shard")]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for key in ("startupProbe", "livenessProbe", "readinessProbe", "securityContext", "ports"):
        assert container[key] == base_container[key], key
    assert pod["securityContext"] == base_pod["securityContext"]
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations == base["spec"]["template"]["metadata"]["annotations"]


def test_shard_settings_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod's environment is real settings and pod iotad-shard-2 is shard 2/3 (needs the
    NATS worker of issue 12)."""
    from detector.config.settings import load_settings, unknown_env_vars

    sts, container, env = shard_parts()
    n = sts["spec"]["replicas"]
    assert unknown_env_vars(env) == []
    (tmp_path / "iotad_nats__password").write_text("s3cret")
    # The rules file the pods mount: the one the single worker's ConfigMap is made from.
    rules = check_rules_mount(sts["spec"]["template"]["spec"], container, env)
    for i in range(n):
        pod_env = {**env, "HOSTNAME": f"{sts['metadata']['name']}-{i}", "IOTAD_WORKER_ID": "w"}
        pod_env.pop("IOTAD_SECRETS_DIR")
        pod_env["IOTAD_RULES__PATH"] = str(rules)
        with monkeypatch.context() as m:
            for key, value in pod_env.items():
                m.setenv(key, value)
            settings = load_settings(env_file=None, secrets_dir=tmp_path)
        assert str(settings.shard) == f"{i}/{n}"
        assert settings.rules.path == rules
        assert settings.nats.password.get_secret_value() == "s3cret"
