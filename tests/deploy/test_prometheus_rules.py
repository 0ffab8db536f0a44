"""Prometheus config and rules: `promtool check config`, `check rules` and `test rules`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROM = DEPLOY / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found (scripts/system-deps.sh installs prometheus)"
)


def promtool(*args: str, cwd: Path | None = None) -> str:
    assert PROMTOOL
    proc = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_check_config_with_the_rules(tmp_path: Path) -> None:
    # In the container the rules live in /etc/prometheus/rules; point the same config at the
    # repository's copy so `check config` also parses them (a glob with no match passes).
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(PROM / "rules" / "*.yml")]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    out = promtool("check", "config", str(checked))
    assert "iotad.rules.yml" in out
    assert "SUCCESS" in out


def test_check_config_as_shipped() -> None:
    promtool("check", "config", str(PROM / "prometheus.yml"))


def test_check_rules() -> None:
    rules = sorted((PROM / "rules").glob("*.yml"))
    assert rules
    promtool("check", "rules", *map(str, rules))


def test_rule_unit_tests() -> None:
    tests = sorted((PROM / "tests").glob("*.yml"))
    assert tests
    out = promtool("test", "rules", *[t.name for t in tests], cwd=PROM / "tests")
    assert "SUCCESS" in out


def all_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in sorted((PROM / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_every_rules_file_has_its_tests() -> None:
    rules = {p.name for p in (PROM / "rules").glob("*.yml")}
    tested = {
        Path(f).name
        for path in (PROM / "tests").glob("*.yml")
        for f in yaml.safe_load(path.read_text())["rule_files"]
    }
    assert rules == tested == {"iotad.rules.yml", "iotad-shards.rules.yml"}


def test_every_alert_is_unit_tested() -> None:
    alerts = {r["alert"] for r in all_rules() if "alert" in r}
    assert alerts >= {
        "IotadWorkerDown",
        "IotadNotReady",
        "IotadLagHigh",
        "IotadRejectedRatioHigh",
        "IotadNoReadings",
        # the alerting path itself (issue 14)
        "IotadAlertmanagerDropped",
        "IotadAlertmanagerPeerFailing",
        "IotadPublishFailed",
        "IotadCheckpointFailing",
        "IotadModelReloadFailed",  # docs/model-lifecycle.md
        # the anomaly table's cap (IOTAD_METRICS__MAX_ACTIVE_ANOMALIES)
        "IotadAnomalyTableFull",
        # the NATS workers' shards and partitions (iotad-shards.rules.yml)
        "IotadShardMissing",
        "IotadShardDuplicated",
        "IotadShardCountMismatch",
        "IotadPartitionBacklogGrowing",
        "IotadRedeliveriesHigh",
    }
    tested = {
        case["alertname"]
        for path in (PROM / "tests").glob("*.yml")
        for t in yaml.safe_load(path.read_text())["tests"]
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == tested


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for rule in all_rules():
        if "record" in rule:
            level, metric, ops = rule["record"].split(":")
            assert level and ops and metric.startswith("iotad_"), rule["record"]
            assert not metric.endswith("_total"), "drop _total when rating a counter"
