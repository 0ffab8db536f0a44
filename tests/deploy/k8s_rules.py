"""The per-device rules ConfigMap of deploy/k8s and deploy/k8s/scale-out, and how a worker
pod mounts it: shared by test_k8s_manifests.py and test_k8s_scale_out.py."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "rules"


def rules_generator() -> dict[str, Any]:
    """The configMapGenerator entry of deploy/k8s/rules/kustomization.yaml."""
    kustomization = yaml.safe_load((RULES_DIR / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    return generator


def check_rules_mount(pod: dict[str, Any], container: dict[str, Any], env: dict[str, str]) -> Path:
    """Assert that the pod reads IOTAD_RULES__PATH from the rules ConfigMap, mounted as a
    directory (never with subPath: the kubelet never updates a subPath mount) and read-only;
    return the file of the repository that the pod reads there."""
    path = PurePosixPath(env["IOTAD_RULES__PATH"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount.get("readOnly") is True
    assert "subPath" not in mount and "subPathExpr" not in mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    generator = rules_generator()
    assert volume["configMap"]["name"] == generator["name"]
    assert "items" not in volume["configMap"]  # every key, under its own name
    # A fixed name: an edit updates the mounted ConfigMap instead of making a new one.
    assert generator["options"]["disableNameSuffixHash"] is True
    assert path.name in generator["files"]
    return RULES_DIR / path.name
