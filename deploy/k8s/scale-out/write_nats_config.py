"""Writes nats-config.yaml: deploy/nats/nats.conf and make-auth.sh as a ConfigMap.

kustomize reads no file outside its directory, so the StatefulSet's config is a copy of the
files the compose stack mounts. Edit those, then run
``python deploy/k8s/scale-out/write_nats_config.py`` and commit both;
tests/deploy/test_k8s_scale_out.py checks that the copy is current.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
NATS = HERE.parents[1] / "nats"
FILES = ("nats.conf", "make-auth.sh")

HEADER = """\
# deploy/nats/nats.conf and make-auth.sh, the files the compose profile scale-out mounts, for
# the NATS StatefulSet (nats.yaml). A copy, written by write_nats_config.py (kustomize reads no
# file outside this directory); tests/deploy/test_k8s_scale_out.py checks it is current.
apiVersion: v1
kind: ConfigMap
metadata:
  name: iotad-nats-config
  labels:
    app.kubernetes.io/name: nats
    app.kubernetes.io/component: broker
data:
"""


def render() -> str:
    """The ConfigMap's YAML, each file a literal block."""
    out = [HEADER]
    for name in FILES:
        lines = (NATS / name).read_text().splitlines()
        out.append(f"  {name}: |\n")
        out.extend(f"    {line}\n" if line else "\n" for line in lines)
    return "".join(out)


def main() -> None:
    path = HERE / "nats-config.yaml"
    path.write_text(render())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
