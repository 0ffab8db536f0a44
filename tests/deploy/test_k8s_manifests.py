"""deploy/k8s: valid against the Kubernetes schemas (kubernetes-validate, offline), and wired
together (labels, ports, probes, the secret file the worker reads, a non-root pod)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.settings import unknown_env_vars

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# Oldest Kubernetes still in support when this was written, and the newest the package knows.
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]


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
    deployment = resources()[("Deployment", "iotad-worker")]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_lists_everything_but_the_example_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in MANIFESTS} - {"secret.example.yaml"}


def test_example_secret_is_a_placeholder() -> None:
    (secret,) = docs(K8S / "secret.example.yaml")
    assert secret["stringData"]["password"].startswith("CHANGE-ME")
    assert "EXAMPLE ONLY" in (K8S / "secret.example.yaml").read_text()


def worker_pod() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = resources()[("Deployment", "iotad-worker")]
    pod = deployment["spec"]["template"]
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
    deployment = resources()[("Deployment", "iotad-worker")]
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


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
    env = {**config["data"], **{e["name"]: e["value"] for e in container["env"]}}
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
