"""deploy/k8s: valid against the Kubernetes schemas (kubernetes-validate, offline), and wired
together (labels, ports, probes, the secret file the worker reads, a non-root pod)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from detector.config.settings import unknown_env_vars
from detector.engine.readings import valid_name
from detector.worker.rules_file import load_rules
from tests.deploy.k8s_rules import check_rules_mount

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# Oldest Kubernetes still in support when this was written, and the newest the package knows.
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
COMPONENTS = K8S / "components"
KUBECTL = shutil.which("kubectl")
BUSYBOX = shutil.which("busybox")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in docs(p)}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_valid_against_kubernetes_schema(path: Path, version: str) -> None:
    for doc in docs(path):
        # strict: unknown fields (a misspelt key) are errors, as `kubectl apply` would say
        kubernetes_validate.validate(doc, version, strict=True)


def test_validator_rejects_a_misspelt_field() -> None:
    worker = resources()[("StatefulSet", "iotad-worker")]
    broken = yaml.safe_load(yaml.safe_dump(worker))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_lists_everything_but_the_example_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in MANIFESTS} - {"secret.example.yaml"} | {"rules"}


def test_example_secret_is_a_placeholder() -> None:
    (secret,) = docs(K8S / "secret.example.yaml")
    assert secret["stringData"]["password"].startswith("CHANGE-ME")
    assert "EXAMPLE ONLY" in (K8S / "secret.example.yaml").read_text()


def pod_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's `env`; a value from the pod's fields reads as `<fieldPath>`."""
    return {
        e["name"]: e["value"] if "value" in e else f"<{e['valueFrom']['fieldRef']['fieldPath']}>"
        for e in container["env"]
    }


def worker_pod() -> tuple[dict[str, Any], dict[str, Any]]:
    worker = resources()[("StatefulSet", "iotad-worker")]
    pod = worker["spec"]["template"]
    return pod, pod["spec"]["containers"][0]


def test_probes_and_ports() -> None:
    pod, container = worker_pod()
    (port,) = container["ports"]
    assert port["containerPort"] == 9108
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"

    service = resources()[("Service", "iotad-worker")]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    worker = resources()[("StatefulSet", "iotad-worker")]
    assert worker["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_runs_as_non_root_with_resources() -> None:
    pod, container = worker_pod()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys()


def test_settings_and_the_broker_password_file() -> None:
    pod, container = worker_pod()
    config = resources()[("ConfigMap", "iotad-config")]
    (env_from,) = container["envFrom"]
    assert env_from["configMapRef"]["name"] == "iotad-config"
    env = {**config["data"], **pod_env(container)}
    assert unknown_env_vars(env) == []
    assert not any("PASSWORD" in key for key in env)  # from the Secret, as a file

    # The Secret's key lands in the secrets dir under the name the settings look for.
    secrets_dir = env["IOTAD_SECRETS_DIR"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == secrets_dir)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    (item,) = volume["secret"]["items"]
    assert item["path"] == "iotad_mqtt__password"
    assert volume["secret"]["secretName"] == "iotad-mqtt"
    (example,) = docs(K8S / "secret.example.yaml")
    assert example["metadata"]["name"] == "iotad-mqtt" and item["key"] in example["stringData"]

    # The model path is on the models volume.
    models = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert env["IOTAD_MODEL__PATH"].startswith(models["mountPath"] + "/")
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims <= {name for kind, name in resources() if kind == "PersistentVolumeClaim"}


def test_rules_configmap_is_mounted_as_a_directory() -> None:
    """The worker reads its rules from the ConfigMap iotad-rules (deploy/k8s/rules), which
    ships with no rules, so the worker starts as it did without one."""
    pod, container = worker_pod()
    env = {**resources()[("ConfigMap", "iotad-config")]["data"], **pod_env(container)}
    rules = check_rules_mount(pod["spec"], container, env)
    assert len(load_rules(rules)) == 0


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not found")
@pytest.mark.parametrize("root", [K8S, K8S / "scale-out"], ids=["k8s", "scale-out"])
def test_rendered_rules_configmap(root: Path) -> None:
    """As kustomize renders it: one ConfigMap of that exact name (no content hash), holding
    the file, and a worker StatefulSet that mounts it."""
    assert KUBECTL
    built = subprocess.run(
        [KUBECTL, "kustomize", str(root)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    rendered = [d for d in yaml.safe_load_all(built.stdout) if d]
    (config,) = [
        d for d in rendered if d["kind"] == "ConfigMap" and "rules" in d["metadata"]["name"]
    ]
    assert config["metadata"]["name"] == "iotad-rules"
    assert config["data"] == {"rules.toml": (K8S / "rules" / "rules.toml").read_text()}
    workers = [
        d for d in rendered if d["kind"] == "StatefulSet" and d["metadata"]["name"] != "nats"
    ]
    assert len(workers) == 1
    pod = workers[0]["spec"]["template"]["spec"]
    assert {"name": "iotad-rules", "defaultMode": 0o444} in [
        v.get("configMap") for v in pod["volumes"]
    ]


def test_worker_id_is_the_pod_name_and_stable() -> None:
    """IOTAD_WORKER_ID (also the MQTT client id and status topic) comes from the pod's name,
    which a StatefulSet of one keeps across restarts: iotad-worker-0."""
    _pod, container = worker_pod()
    config = resources()[("ConfigMap", "iotad-config")]["data"]
    assert "IOTAD_WORKER_ID" not in config and "IOTAD_MQTT__CLIENT_ID" not in config
    (worker_id,) = [e for e in container["env"] if e["name"] == "IOTAD_WORKER_ID"]
    assert worker_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    sts = resources()[("StatefulSet", "iotad-worker")]
    assert sts["spec"]["replicas"] == 1  # more would each read every reading
    assert ("Service", sts["spec"]["serviceName"]) in resources()
    assert valid_name(f"{sts['metadata']['name']}-0")  # the settings' rule for a worker id


def test_network_policy() -> None:
    """Ingress: the metrics port from the monitoring namespace only. Egress: the broker and
    Alertmanager of configmap.yaml, and DNS, nothing else."""
    pod, container = worker_pod()
    policy = resources()[("NetworkPolicy", "iotad-worker")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]

    (rule,) = policy["ingress"]
    (port,) = rule["ports"]
    assert port == {"port": container["ports"][0]["name"], "protocol": "TCP"}
    (source,) = rule["from"]
    assert source == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }

    def namespace_of(host: str) -> str:  # <service>.<namespace>.svc.cluster.local
        _service, namespace, svc, *_ = host.split(".")
        assert svc == "svc", host
        return namespace

    config = resources()[("ConfigMap", "iotad-config")]["data"]
    alertmanager = urlsplit(config["IOTAD_ALERTMANAGER__URL"])
    assert alertmanager.hostname and alertmanager.port
    expected = {
        (namespace_of(config["IOTAD_MQTT__HOST"]), None, int(config["IOTAD_MQTT__PORT"]), "TCP"),
        (namespace_of(alertmanager.hostname), None, alertmanager.port, "TCP"),
        ("kube-system", "kube-dns", 53, "UDP"),
        ("kube-system", "kube-dns", 53, "TCP"),
    }
    allowed = set()
    for rule in policy["egress"]:
        assert rule.get("to") and rule.get("ports"), "a rule without `to` or `ports` allows all"
        for peer in rule["to"]:
            assert set(peer) <= {"namespaceSelector", "podSelector"}
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            app = peer.get("podSelector", {}).get("matchLabels", {}).get("k8s-app")
            for port in rule["ports"]:
                allowed.add((namespace, app, port["port"], port["protocol"]))
    assert allowed == expected


def overlay(tmp_path: Path, *components: str, extra: str = "") -> list[dict[str, Any]]:
    """`kubectl kustomize` of deploy/k8s with `components`, as an operator's overlay would."""
    assert KUBECTL
    rel = lambda p: os.path.relpath(p, tmp_path)  # noqa: E731
    listed = "".join(f"  - {rel(COMPONENTS / c)}\n" for c in components)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {rel(K8S)}\ncomponents:\n{listed}{extra}"
    )
    built = subprocess.run(
        [KUBECTL, "kustomize", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


def test_components_are_not_in_the_default_kustomization() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "components" not in kustomization
    for component in COMPONENTS.iterdir():
        doc = yaml.safe_load((component / "kustomization.yaml").read_text())
        assert doc["kind"] == "Component", component.name


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not found")
def test_servicemonitor_component(tmp_path: Path) -> None:
    rendered = overlay(tmp_path, "servicemonitor")
    by_kind = {d["kind"]: d for d in rendered}
    monitor, service = by_kind["ServiceMonitor"], by_kind["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "iotad"
        if doc["kind"] != "ServiceMonitor":  # its CRD is no part of the Kubernetes schemas
            kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    # the job name the rules select on (up{job="iotad"}), taken from the Service's label
    assert service["metadata"]["labels"][spec["jobLabel"]] == "iotad"
    assert set(spec) <= {"jobLabel", "selector", "endpoints", "namespaceSelector"}
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not found")
def test_model_from_image_component(tmp_path: Path) -> None:
    images = "images:\n  - name: iotad-model\n    newName: registry.example.net/m\n    newTag: v2\n"
    rendered = overlay(tmp_path, "model-from-image", extra=images)
    for doc in rendered:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
    (sts,) = [d for d in rendered if d["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (worker,) = pod["containers"]
    assert init["image"] == "registry.example.net/m:v2"
    assert init["securityContext"] == worker["securityContext"]
    # the init container writes the volume, the worker reads it (and still only reads it)
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"]["readOnly"] is False
    (mount,) = [m for m in init["volumeMounts"] if m["name"] == "models"]
    assert not mount.get("readOnly")
    worker_mount = next(m for m in worker["volumeMounts"] if m["name"] == "models")
    assert worker_mount["readOnly"] is True and worker_mount["mountPath"] == mount["mountPath"]
    # it writes <mount>/current, which is what the worker runs
    config = next(d for d in rendered if d["kind"] == "ConfigMap")["data"]
    assert config["IOTAD_MODEL__PATH"] == f"{mount['mountPath']}/current"
    assert '"${MODELS_DIR:-' + mount["mountPath"] + '}"' in init["command"][2]


def init_script() -> str:
    patch = yaml.safe_load((COMPONENTS / "model-from-image" / "init-container.yaml").read_text())
    (init,) = patch["spec"]["template"]["spec"]["initContainers"]
    assert init["command"][:2] == ["sh", "-c"]
    return init["command"][2]


@pytest.mark.skipif(BUSYBOX is None, reason="busybox not found (scripts/system-deps.sh)")
def test_model_init_script_on_busybox(tmp_path: Path) -> None:
    """The init container's script, run by busybox's sh and applets (as in the image)."""
    assert BUSYBOX
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in ("sh", "cp", "mv", "rm", "ln", "echo", "[", "test"):
        (bin_dir / applet).symlink_to(BUSYBOX)
    models = tmp_path / "models"
    models.mkdir()

    def image(version: str, files: dict[str, str]) -> Path:
        src = tmp_path / f"image-{version}"
        src.mkdir()
        for name, text in files.items():
            (src / name).write_text(text)
        return src

    def run(src: Path, version: str) -> subprocess.CompletedProcess:
        env = {"PATH": str(bin_dir), "MODEL_SRC": str(src), "MODELS_DIR": str(models)}
        env["MODEL_VERSION"] = version
        return subprocess.run(
            [str(bin_dir / "sh"), "-c", init_script()], env=env, capture_output=True, text=True
        )

    v1 = image("v1", {"artifact.json": '{"v": 1}', "model.tflite": "one"})
    first = run(v1, "v1")
    assert first.returncode == 0, first.stderr
    assert (models / "v1" / "model.tflite").read_text() == "one"
    assert os.readlink(models / "current") == "v1"  # relative: valid wherever it is mounted
    # a restart: nothing copied again
    (models / "v1" / "model.tflite").write_text("kept")
    again = run(v1, "v1")
    assert again.returncode == 0 and "already on the volume" in again.stdout
    assert (models / "v1" / "model.tflite").read_text() == "kept"
    # a new version, over the leftovers of a copy killed half-way
    (models / ".incoming-v2").mkdir()
    (models / ".incoming-v2" / "partial").write_text("")
    v2 = image("v2", {"artifact.json": '{"v": 2}', "model.tflite": "two"})
    assert run(v2, "v2").returncode == 0
    assert os.readlink(models / "current") == "v2"
    assert (models / "current" / "model.tflite").read_text() == "two"
    assert not (models / "v2" / "partial").exists() and not (models / ".incoming-v2").exists()
    assert (models / "v1").is_dir()  # the previous version stays, for a roll-back
    # refused: not an artifact, or a version that is not a plain directory name
    before = sorted(p.name for p in models.iterdir())
    bad = run(image("v3", {"model.tflite": "x"}), "v3")
    assert bad.returncode == 1 and "not a model artifact" in bad.stderr
    for version in ("", "../x", ".hidden", "current"):
        refused = run(v1, version)
        assert refused.returncode == 1 and "not a directory name" in refused.stderr, version
    assert sorted(p.name for p in models.iterdir()) == before
    assert os.readlink(models / "current") == "v2"


def test_model_image_dockerfile() -> None:
    dockerfile = pytest.importorskip("dockerfile")
    steps = dockerfile.parse_file(str(COMPONENTS / "model-from-image" / "Dockerfile"))
    by_cmd = {c.cmd: c for c in steps}
    base = by_cmd["FROM"].value[0]
    assert base.startswith("busybox:") and base != "busybox:latest"  # sh, cp, ln for the script
    assert by_cmd["ARG"].value == ("VERSION",)
    assert by_cmd["ENV"].value == ("MODEL_VERSION", "${VERSION}")
    assert by_cmd["COPY"].value == (".", "/model")
    assert by_cmd["USER"].value[0].split(":")[0] not in ("0", "root")
