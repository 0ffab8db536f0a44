"""`iotad run` with a rules file, through mosquitto: what the rules let out is what the broker
gets. Mute, a maintenance window a fault outlasts, a threshold override, labels; reloads on
change and on SIGHUP, a bad file on reload keeps the rules in force, a bad file at start
refuses to start.

The stream is test_worker_pipeline's: the training series continued, a +12 spike on
line1/temperature at step 60 and a +20 level shift on line2/temperature from step 70 on.
Without rules both fire (line2 at step 70, and it stays anomalous for the rest of the stream);
line1/vibration stays below a score of 0.5 throughout but reaches 0.09.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    TINY_SERIES,
    TINY_START_TS,
    TINY_STEP_S,
    Collector,
    Mosquitto,
    WorkerProcess,
    publish_all,
    tiny_value,
)
from tests.integration.test_worker_pipeline import FIRST_STEP, stream

pytestmark = pytest.mark.integration


def ts(step: int) -> float:
    return TINY_START_TS + (FIRST_STEP + step) * TINY_STEP_S


def iso(step: int) -> str:
    return datetime.fromtimestamp(ts(step), UTC).isoformat()


def alerts_of(out: Collector, worker: WorkerProcess) -> list[dict]:
    """Every alert `worker` published, once it has settled and all of them arrived."""
    port = int(worker.env["IOTAD_MQTT__PORT"])
    worker.settle(port)
    events = sum(worker.sample("iotad_alert_events_total", state=s) for s in ("firing", "resolved"))

    def mine(msgs: list) -> list[dict]:
        got = [json.loads(m.payload) for m in msgs if m.topic.startswith("alerts/")]
        return [a for a in got if a["worker"] == worker.worker_id]

    return mine(out.wait_for(lambda ms: len(mine(ms)) >= events))


def firing(alerts: list[dict], key: str) -> list[dict]:
    return [a for a in alerts if f"{a['device']}/{a['metric']}" == key and a["state"] == "firing"]


def test_mute_maintenance_and_threshold_decide_what_the_broker_gets(
    mosquitto: Mosquitto, start_worker, collect, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        f"""
[[rule]]
name = "line 1 temperature sensor is being replaced"
device = "line1"
metric = "temperature"
mute = true

[[rule]]
name = "line 2 stop"
device = "line2*"

[[rule.maintenance]]
start = {iso(65)}
end = "{iso(80)}"

[[rule]]
name = "line 1 vibration matters"
device = "line1"
metric = "vibration"
threshold = 0.09
severity = "critical"
labels = {{ team = "line1" }}
"""
    )
    out = collect("alerts/#")
    ruled = start_worker(worker_id="w-rules", env={"IOTAD_RULES__PATH": str(rules)})
    plain = start_worker(worker_id="w-plain")
    assert ruled.sample("iotad_rules") == 3
    publish_all(mosquitto.port, stream())

    without = alerts_of(out, plain)
    assert [a["ts"] for a in firing(without, "line1/temperature")] == [ts(60)]
    assert [a["ts"] for a in firing(without, "line2/temperature")] == [ts(70)]
    assert firing(without, "line1/vibration") == []

    got = alerts_of(out, ruled)
    assert [a for a in got if a["metric"] == "temperature" and a["device"] == "line1"] == []
    # The shift began in the window (65-79) and outlasted it: it fires at step 80.
    assert [a["ts"] for a in firing(got, "line2/temperature")] == [ts(80)]
    vibration = firing(got, "line1/vibration")
    assert vibration, "the threshold override raised no alert"
    for a in vibration:
        assert a["threshold"] == 0.09 and 0.09 <= a["score"] < 0.5
        assert a["severity"] == "critical" and a["labels"] == {"team": "line1"}
    assert ruled.sample("iotad_alerts_suppressed_total", reason="mute") == 1
    assert ruled.sample("iotad_alerts_suppressed_total", reason="maintenance") == 1
    assert plain.sample("iotad_alerts_suppressed_total", reason="mute") == 0
    # Scored and counted all the same.
    assert ruled.sample("iotad_readings_scored_total") == plain.sample(
        "iotad_readings_scored_total"
    )


def continuation() -> list[tuple[str, bytes]]:
    """Steps 100-139 of the same series (line2 still shifted), a +25 spike on
    line1/temperature at step 130."""
    rng = np.random.default_rng(8)
    out = []
    for step in range(100, 140):
        i = FIRST_STEP + step
        for key in TINY_SERIES:
            value = tiny_value(key, i) + rng.normal(0.0, 0.1)
            value += 25.0 if key == "line1/temperature" and step == 130 else 0.0
            value += 20.0 if key == "line2/temperature" else 0.0
            out.append((f"sensors/{key}", json.dumps({"ts": ts(step), "value": value}).encode()))
    return out


MUTE_LINE1 = '[[rule]]\ndevice = "line1"\nmetric = "temperature"\nmute = true\n'


def test_reload_on_change_and_sighup_a_bad_file_keeps_the_rules(
    mosquitto: Mosquitto, start_worker, collect, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(MUTE_LINE1)
    out = collect("alerts/#")
    worker = start_worker(
        env={"IOTAD_RULES__PATH": str(rules), "IOTAD_RULES__CHECK_INTERVAL_S": "0.2"}
    )
    # A bad file: refused, counted, each problem logged; the mute stays in force.
    rules.write_text(MUTE_LINE1.replace("true", '"yes"') + "threshold = 2\n")
    worker.wait_metric("iotad_rules_reload_failures_total", lambda v: v >= 1)
    publish_all(mosquitto.port, stream())
    got = alerts_of(out, worker)
    assert firing(got, "line1/temperature") == []
    assert [a["ts"] for a in firing(got, "line2/temperature")] == [ts(70)]
    assert worker.sample("iotad_alerts_suppressed_total", reason="mute") == 1
    assert worker.sample("iotad_rules_reload_failures_total") == 1
    log = worker.log()
    assert "mute: must be true or false, got 'yes'" in log
    assert "threshold: must be a number in (0, 1]" in log
    assert "keeping the 1 rules in force" in log

    # A good file: taken when the worker next looks; SIGHUP reloads it again on demand.
    rules.write_text("# no rules for now\n")
    worker.wait_metric("iotad_rules_reloads_total", lambda v: v >= 1)
    assert worker.sample("iotad_rules") == 0
    worker.signal(signal.SIGHUP)
    worker.wait_metric("iotad_rules_reloads_total", lambda v: v >= 2)
    assert worker.proc is not None and worker.proc.poll() is None  # SIGHUP did not end it
    publish_all(mosquitto.port, continuation())
    got = alerts_of(out, worker)
    assert [a["ts"] for a in firing(got, "line1/temperature")] == [ts(130)]


def test_a_bad_rules_file_at_start_exits_2_with_one_line_per_problem(
    start_worker, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\ndevice = "a"\nthreshold = 0\n\n[[rule]]\ncolour = "red"\n')
    worker = start_worker(env={"IOTAD_RULES__PATH": str(rules)}, wait=False)
    assert worker.wait() == 2
    log = worker.log()
    assert f"{rules}:3: rule 1: threshold: must be a number in (0, 1]" in log
    assert f"{rules}:6: rule 2: colour: unknown field" in log
    assert "Traceback" not in log
