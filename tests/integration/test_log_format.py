"""``--log-format json`` / ``IOTAD_LOG__FORMAT=json``: every long-running command's stderr is
JSON lines (ts, level, logger, message) that a log shipper parses line by line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mosquitto, free_port, publish_all

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line as a JSON object with the four fields (fails on any other line)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        assert {"ts", "level", "logger", "message"} <= set(obj), line
        out.append(obj)
    assert out, "no log lines"
    return out


def iotad(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IOTAD_")}
    clean.update(OPENBLAS_NUM_THREADS="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "detector", *argv],
        capture_output=True,
        text=True,
        env=clean,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_run_logs_json_lines_from_start_to_stop(start_worker: Any, mosquitto: Mosquitto) -> None:
    worker = start_worker(env={"IOTAD_LOG__FORMAT": "json", "IOTAD_BIND": "0.0.0.0"})
    publish_all(mosquitto.port, [("sensors/press01/temperature", b"not a number")])
    worker.wait_metric("iotad_readings_rejected_total", lambda v: v >= 1, reason="malformed_json")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    lines = json_lines(worker.log())
    by_logger = {(o["logger"], o["level"]) for o in lines}
    assert ("iotad.run", "INFO") in by_logger and ("iotad.rejects", "WARNING") in by_logger
    messages = [o["message"] for o in lines]
    assert any("ready in" in m for m in messages)
    assert any("IOTAD_BIND names no setting" in m for m in messages)
    assert messages[-1] == "stopped"
    if "XNNPACK" in worker.log():  # what LiteRT itself prints while loading is a record too
        assert any(o["logger"] == "litert" and "XNNPACK" in o["message"] for o in lines)


def test_record_errors_are_json_lines_too(tmp_path: Path) -> None:
    port = free_port()  # nothing listens
    out = iotad(
        "record", "--out", str(tmp_path / "h"), "--port", str(port), "--env-file", "",
        "--log-format", "json",
        env={"IOTAD_MQTT__CONNECT_TIMEOUT_S": "1", "IOTAD_MQTT__RECONNECT_MAX_S": "1"},
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    lines = json_lines(out.stderr)
    errors = [o for o in lines if o["level"] == "ERROR"]
    assert errors and errors[-1]["logger"] == "iotad.record"
    assert "summary" not in out.stderr and out.stdout.strip()  # the summary stays on stdout


def test_simulate_progress_is_json_lines(mosquitto: Mosquitto) -> None:
    out = iotad(
        "simulate", "--host", "127.0.0.1", "--port", str(mosquitto.port),
        "--max-readings", "48", "--speed", "0", "--topic-prefix", "logtest",
        env={"IOTAD_LOG__FORMAT": "json"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = json_lines(out.stderr)
    assert any(o["message"].startswith("sent 48 readings") for o in lines)
    assert {o["logger"] for o in lines} == {"iotad.simulate"}


def test_simulate_failure_is_a_json_line() -> None:
    out = iotad(
        "simulate", "--port", str(free_port()), "--max-readings", "1", "--log-format", "json"
    )
    assert out.returncode == 1
    (line,) = json_lines(out.stderr)
    assert line["level"] == "ERROR" and "connect" in line["message"]


@pytest.mark.slow
def test_demo_logs_json_lines(tiny_artifact: Path, tmp_path: Path) -> None:
    out = iotad(
        "demo", "--model", str(tiny_artifact), "--duration", "3", "--broker", "embedded",
        "--no-faults", "--metrics-port", "0", "--cache-dir", str(tmp_path),
        "--log-format", "json", "--log-level", "INFO",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = json_lines(out.stderr)
    assert any(o["logger"] == "iotad.run" and "ready in" in o["message"] for o in lines)
