"""docs/scale-out.md says what deploy/ does: its settings exist, its alerts are the rules',
its commands name the files and Secret keys the manifests use."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "scale-out.md").read_text()


def test_alert_table_is_the_rules() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/iotad-shards.rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert set(re.findall(r"(?m)^\| `(Iotad\w+)` \|", DOC)) == alerts


def test_secret_command_matches_the_manifests() -> None:
    (example,) = [
        d
        for d in yaml.safe_load_all((ROOT / "deploy/k8s/scale-out/secret.example.yaml").read_text())
        if d
    ]
    command = re.search(r"kubectl create secret generic iotad-nats(.*?)\n(?!\s)", DOC, re.S)
    assert command, "the kubectl create secret command"
    keys = dict(re.findall(r"--from-file=(\w+)=deploy/secrets/(\w+)", command.group(1)))
    assert set(keys) == set(example["stringData"])
    for secret_file in keys.values():
        assert secret_file in (ROOT / "deploy/init-secrets.sh").read_text()


def test_partition_count_and_mapping_are_the_configs() -> None:
    conf = (ROOT / "deploy/nats/nats.conf").read_text()
    for mapping in re.findall(r'"sensors\.[^"]*": "part\.[^"]*"', DOC):
        assert mapping in conf
    assert "P = 64" in DOC and "partition(64,1)" in conf


def test_figure_placeholders_are_there() -> None:
    assert DOC.count("<!-- figures: bench/nats_throughput.py -->") >= 1


def test_settings_named_are_real() -> None:
    """Every IOTAD_ variable the page names is a setting (needs the NATS worker, issue 12)."""
    from detector.config.settings import unknown_env_vars

    names = set(re.findall(r"\b(IOTAD_[A-Z0-9_]+[A-Z0-9])\b", DOC))
    # `__CREDS_FILE`-style shorthands in the table stand for IOTAD_NATS__...
    names |= {f"IOTAD_NATS{m}" for m in re.findall(r"`(__[A-Z_]+)`", DOC)}
    assert unknown_env_vars(dict.fromkeys(names, "x")) == []
