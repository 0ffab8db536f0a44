"""`iotad record` against a real mosquitto: every reading in the files exactly once, rotation,
clean and crashed shutdowns, the worker's TLS settings, and record -> `iotad train` on the
recorded directory -> `iotad run` on that model."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from detector.engine.readings import Reading
from tests.conftest import Collector, Mosquitto, WorkerProcess, free_port, publish_all
from tests.integration.test_security_tls import pki  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
STEP_S = 60.0
Message = tuple[str, bytes]


def listing(directory: Path) -> list[Path]:
    """The directory's files but the writer's hidden lock file."""
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def fleet(prefix: str, steps: int, start: int = 0) -> tuple[list[Message], list[Reading]]:
    """Messages of a small fleet in the worker's forms, and the readings they carry.

    press-1 and press-2 publish one JSON reading per metric topic, press-3 one message with
    ``values`` per step; every 40th step also brings two messages the decoder rejects.
    """
    messages: list[Message] = []
    readings: list[Reading] = []
    for i in range(start, start + steps):
        ts = T0 + i * STEP_S
        temp = {d: round(20 + 3 * d + math.sin(i / 7 + d), 4) for d in (1, 2, 3)}
        rpm = {d: round(1500 + 40 * math.cos(i / 5 + d), 3) for d in (1, 2, 3)}
        for d in (1, 2):
            for metric, value in (("temp", temp[d]), ("rpm", rpm[d])):
                body = json.dumps({"ts": ts, "value": value}).encode()
                messages.append((f"{prefix}/press-{d}/{metric}", body))
                readings.append(Reading(f"press-{d}", metric, ts, value))
        body = json.dumps({"ts": ts, "values": {"temp": temp[3], "rpm": rpm[3]}}).encode()
        messages.append((f"{prefix}/press-3", body))
        readings += [Reading("press-3", "temp", ts, temp[3]), Reading("press-3", "rpm", ts, rpm[3])]
        if i % 40 == 0:
            messages.append((f"{prefix}/press-1/temp", b"NaN"))  # non_finite
            messages.append((f"{prefix}/press-1/temp", b'{"ts": 1, "value": 2'))  # malformed
    return messages, readings


def n_rejected(steps: int, start: int = 0) -> int:
    return 2 * sum(1 for i in range(start, start + steps) if i % 40 == 0)


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Wait on a condition; the timeout only keeps a broken run from hanging the suite."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_history(directory: Path) -> list[Reading]:
    """Every row of the finished files (CSV and Parquet), in file order."""
    out: list[Reading] = []
    for path in sorted(directory.iterdir()):
        if path.suffix == ".csv":
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            continue
        out += [Reading(r["device"], r["metric"], float(r["ts"]), float(r["value"])) for r in rows]
    return out


def journal_rows(directory: Path) -> int:
    """Rows on disk so far, finished files and the journal being written (-1 when a file
    was renamed while being counted: ask again)."""
    n = 0
    try:
        for path in directory.iterdir():
            if path.name.endswith((".csv", ".csv.part")):
                n += max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return -1
    return n


def settings_for(mosquitto: Mosquitto, prefix: str):  # type: ignore[no-untyped-def]
    from detector.config.settings import WorkerSettings

    return WorkerSettings(
        _env_file=None,  # type: ignore[call-arg]
        mqtt={
            "host": mosquitto.host,
            "port": mosquitto.port,
            "topics": [f"{prefix}/#"],
            "topic_patterns": [f"{prefix}/{{device}}/{{metric}}", f"{prefix}/{{device}}"],
            "session_expiry_s": 60,  # a short-lived session: nothing piles up on the broker
        },
    )


@pytest.mark.slow
def test_record_parquet_every_reading_once_then_train_and_run(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pyarrow")
    from detector.worker.record_cli import record

    prefix = f"rec{uuid.uuid4().hex[:8]}"
    out = tmp_path / "history"
    stop = threading.Event()
    started = threading.Event()
    box: dict[str, object] = {}

    def on_started(recorder: object) -> None:
        box["recorder"] = recorder
        started.set()

    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            record(
                settings_for(mosquitto, prefix),
                out=out,
                fmt="parquet",
                rotate_s=0,
                max_rows=250,
                client_id=f"{prefix}-record",
                stop=stop,
                started=on_started,
            )
        )
    )
    thread.start()
    try:
        wait_for(started.is_set, "the recorder to connect")
        messages, readings = fleet(prefix, steps=150)
        publish_all(mosquitto.port, messages)
        recorder = box["recorder"]
        wait_for(lambda: recorder.stats.messages == len(messages), "every message")  # type: ignore[attr-defined]
    finally:
        stop.set()
        thread.join()
    assert result == [0]

    files = listing(out)
    assert len(files) == math.ceil(900 / 250) and all(p.suffix == ".parquet" for p in files)
    recorded = read_history(out)
    assert len(recorded) == len(readings) == 900
    assert Counter(recorded) == Counter(readings)  # each exactly once, values exact
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    rejected = n_rejected(150)
    assert summary.startswith(f"iotad record: 900 readings from {len(messages)} messages in 4 ")
    assert f"rejected {rejected} (" in summary
    assert f"non_finite {rejected // 2}" in summary and f"malformed_json {rejected // 2}" in summary

    pytest.importorskip("tensorflow")
    from detector.cli import main

    model = tmp_path / "model"
    code = main(
        [
            "train",
            str(out),
            "--out",
            str(model),
            "--window",
            "8",
            "--units",
            "4",
            "--epochs",
            "1",
            "--max-windows",
            "256",
            "--export-batch-sizes",
            "1",
            "--no-plots",
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads((model / "report.json").read_text())
    training = report.get("training", report)
    assert training["rows_total"] == 900 and training["series"] == 6
    assert [Path(f["path"]).name for f in training["files"]] == [p.name for p in files]

    # ... and the worker runs that model on the same fleet's next readings.
    worker = WorkerProcess(
        mosquitto,
        model,
        tmp_path,
        f"{prefix}-worker",
        {
            "IOTAD_MQTT__TOPICS": f"{prefix}/#",
            "IOTAD_MQTT__TOPIC_PATTERNS": f"{prefix}/{{device}}/{{metric}},{prefix}/{{device}}",
        },
    ).start()
    try:
        worker.wait_ready()
        later, later_readings = fleet(prefix, steps=20, start=150)
        publish_all(mosquitto.port, later)
        worker.wait_metric(
            "iotad_readings_accepted_total", lambda v: v == len(later_readings), timeout_s=60
        )
        # every series is one the model was trained on; each scores once its window is full
        worker.wait_metric("iotad_readings_scored_total", lambda v: v > 0, timeout_s=60)
    finally:
        worker.stop()


def _record_cli(mosquitto: Mosquitto, prefix: str, out: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTAD_")}
    env.update(
        {
            "IOTAD_MQTT__TOPIC_PATTERNS": f"{prefix}/{{device}}/{{metric}},{prefix}/{{device}}",
            "IOTAD_MQTT__SESSION_EXPIRY_S": "60",
            "PYTHONPATH": str(REPO),
        }
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "detector",
            "record",
            "--out",
            str(out),
            "--host",
            mosquitto.host,
            "--port",
            str(mosquitto.port),
            "--topic",
            f"{prefix}/#",
            "--client-id",
            f"{prefix}-record",
            "--max-rows",
            "100",
            "--rotate-s",
            "0",
            "--env-file",
            "",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_online(collector: Collector, prefix: str, runs: int) -> None:
    def online() -> bool:
        docs = [json.loads(m.payload) for m in collector.snapshot(f"iotad/status/{prefix}-record")]
        return sum(d.get("state") == "online" for d in docs) >= runs

    wait_for(online, f"online status number {runs}")


def test_cli_sigterm_flushes_and_sigkill_loses_nothing_acked(
    mosquitto: Mosquitto, tmp_path: Path, collect: Callable[..., Collector]
) -> None:
    prefix = f"rec{uuid.uuid4().hex[:8]}"
    out = tmp_path / "history"
    status = collect(f"iotad/status/{prefix}-record")

    # Run 1: record, then die without any chance to clean up.
    proc = _record_cli(mosquitto, prefix, out)
    try:
        _wait_online(status, prefix, 1)
        first, first_readings = fleet(prefix, steps=30)
        publish_all(mosquitto.port, first)
        wait_for(lambda: journal_rows(out) == len(first_readings), "run 1's rows on disk")
    finally:
        proc.kill()
        proc.wait()
    assert any(p.name.endswith(".csv.part") for p in listing(out))  # cut short mid-file

    # While it is down, the broker keeps what arrives for its persistent session.
    second, second_readings = fleet(prefix, steps=30, start=30)
    publish_all(mosquitto.port, second)

    # Run 2: finishes run 1's journal, gets the backlog, stops cleanly on SIGTERM.
    proc = _record_cli(mosquitto, prefix, out)
    try:
        _wait_online(status, prefix, 2)
        expected = first_readings + second_readings
        wait_for(lambda: journal_rows(out) >= len(expected), "run 2's rows on disk")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    names = [p.name for p in listing(out)]
    assert names and all(n.endswith(".csv") for n in names), names  # no part file is left
    assert len(names) >= 3  # max 100 rows a file
    recorded = read_history(out)
    # At least once: all there; a repeat (an ack lost with the killed process) is exact.
    assert set(recorded) == set(expected)
    assert len(recorded) - len(expected) == sum(n - 1 for n in Counter(recorded).values())
    (line,) = stdout.strip().splitlines()
    assert line.startswith("iotad record: ") and "finished 1 file(s) an earlier run left" in line
    assert f"rejected {n_rejected(30, start=30)} (" in line

    from training.data import load_files

    loaded = load_files([out])
    assert sum(ts.size for ts, _ in loaded.series.values()) == len(expected)


def test_cli_uses_the_workers_tls_settings(
    tmp_path: Path,
    pki: dict[str, Path],  # noqa: F811
) -> None:
    """IOTAD_MQTT__TLS__* as for `iotad run`: in with the client certificate, a clear one-line
    refusal with another CA's."""
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "mtls",
        conf=[
            f"listener {tls_port} 127.0.0.1",
            f"cafile {pki['ca']}",
            f"certfile {pki['srv.pem']}",
            f"keyfile {pki['srv.key']}",
            "require_certificate true",
        ],
    ).start()
    prefix = f"rec{uuid.uuid4().hex[:8]}"
    out = tmp_path / "history"
    try:
        for cert, expect_ok in (("rogue", False), ("client", True)):
            env = {k: v for k, v in os.environ.items() if not k.startswith("IOTAD_")}
            env |= {
                "PYTHONPATH": str(REPO),
                "IOTAD_MQTT__PORT": str(tls_port),
                "IOTAD_MQTT__HOST": "localhost",
                "IOTAD_MQTT__TOPICS": f"{prefix}/#",
                "IOTAD_MQTT__TOPIC_PATTERNS": f"{prefix}/{{device}}/{{metric}}",
                "IOTAD_MQTT__SESSION_EXPIRY_S": "60",
                "IOTAD_MQTT__CONNECT_TIMEOUT_S": "2",
                "IOTAD_MQTT__TLS__CA_FILE": str(pki["ca"]),
                "IOTAD_MQTT__TLS__CERT_FILE": str(pki[f"{cert}.pem"]),
                "IOTAD_MQTT__TLS__KEY_FILE": str(pki[f"{cert}.key"]),
            }
            argv = [sys.executable, "-m", "detector", "record", "--out", str(out)]
            argv += ["--client-id", f"{prefix}-{cert}", "--env-file", ""]
            proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            try:
                if not expect_ok:
                    _, stderr = proc.communicate(timeout=60)
                    assert proc.returncode == 1
                    lines = [ln for ln in stderr.splitlines() if ln.startswith("iotad record: ")]
                    assert len(lines) == 1 and "cannot connect to mqtts://localhost" in lines[0]
                    assert "Traceback" not in stderr
                    continue
                status = Collector(broker.port, [f"iotad/status/{prefix}-{cert}"])
                try:
                    wait_for(
                        lambda s=status: any(b'"online"' in m.payload for m in s.snapshot()),
                        "the recorder online over TLS",
                    )
                finally:
                    status.close()
                messages, readings = fleet(prefix, steps=5)
                publish_all(broker.port, [m for m in messages if m[0].count("/") == 2])
                wanted = [r for r in readings if r.device != "press-3"]
                wait_for(lambda w=wanted: journal_rows(out) == len(w), "rows over TLS")
                proc.send_signal(signal.SIGTERM)
                stdout, stderr = proc.communicate(timeout=60)
                assert proc.returncode == 0, stderr
                assert stdout.startswith(f"iotad record: {len(wanted)} readings")
                assert Counter(read_history(out)) == Counter(wanted)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        broker.stop()
