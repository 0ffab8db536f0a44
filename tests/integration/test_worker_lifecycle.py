"""`iotad run` lifecycle: readiness, SIGTERM, status topic, reconnects, sessions, failures."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    TINY_START_TS,
    Collector,
    Mosquitto,
    WorkerProcess,
    publish_all,
)
from tests.pki import make_ca, make_cert

pytestmark = pytest.mark.integration


def readings(n: int, device: str = "life", start: float = TINY_START_TS) -> list[tuple[str, str]]:
    return [
        (f"sensors/{device}/temp", json.dumps({"ts": start + 60 * i, "value": 20.0 + i % 7}))
        for i in range(n)
    ]


def retained_status(port: int, worker_id: str) -> dict:
    """The retained status of `worker_id`, read by a fresh subscriber."""
    c = Collector(port, [f"iotad/status/{worker_id}"])
    try:
        msgs = c.wait_for(lambda ms: len(ms) >= 1, timeout_s=5)
        assert msgs[0].retain
        return json.loads(msgs[-1].payload)
    finally:
        c.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0_and_status_goes_offline(
    mosquitto: Mosquitto, start_worker, signum: int
) -> None:
    worker: WorkerProcess = start_worker()
    assert worker.get("/readyz")[0] == 200
    assert worker.get("/healthz") == (200, "ok\n")
    assert worker.get("/nope")[0] == 404
    online = retained_status(mosquitto.port, worker.worker_id)
    assert online["state"] == "online" and online["worker"] == worker.worker_id
    assert online["model"]
    publish_all(mosquitto.port, readings(20))
    worker.wait_metric("iotad_readings_total", lambda v: v >= 20)
    worker.signal(signum)
    assert worker.wait(timeout_s=15) == 0
    assert retained_status(mosquitto.port, worker.worker_id)["state"] == "offline"
    assert "Traceback" not in worker.log()


def test_metrics_have_process_python_and_build_info(start_worker, tiny_artifact: Path) -> None:
    worker: WorkerProcess = start_worker()
    samples = worker.metrics()
    assert samples[("process_resident_memory_bytes", ())] > 1_000_000
    assert samples[("process_cpu_seconds_total", ())] > 0
    assert any(name == "python_gc_collections_total" for name, _ in samples)
    (build,) = [dict(labels) for name, labels in samples if name == "iotad_build_info"]
    model_version = json.loads((tiny_artifact / "artifact.json").read_text())["version"]
    assert build["model_version"] == model_version
    assert build["version"] and build["python_version"]


def test_processed_messages_are_acked_and_offline_ones_delivered_on_return(
    mosquitto: Mosquitto, start_worker
) -> None:
    first = start_worker(worker_id="w-session")
    publish_all(mosquitto.port, readings(30))
    first.wait_metric("iotad_readings_total", lambda v: v >= 30)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    # Away: the persistent session queues what arrives meanwhile.
    publish_all(mosquitto.port, readings(25, start=TINY_START_TS + 60 * 30))
    second = start_worker(worker_id="w-session")
    # Barrier: one more reading after the 25. The session delivers in order (redeliveries of
    # unacknowledged messages first), so when it is counted, everything before it is too.
    publish_all(mosquitto.port, [("sensors/barrier/x/y", b"1")])  # rejected as bad_topic
    second.wait_metric("iotad_readings_rejected_total", lambda v: v >= 1, reason="bad_topic")
    # Exactly the 25 queued ones: the first worker's 30 were acknowledged, none redelivered.
    assert second.sample("iotad_readings_total") == 25 + 1
    assert second.sample("iotad_readings_accepted_total") == 25


def test_killed_worker_leaves_offline_will_and_resumes_its_session(
    mosquitto: Mosquitto, start_worker
) -> None:
    first = start_worker(worker_id="w-killed")
    first.signal(signal.SIGKILL)
    first.wait()
    assert retained_status(mosquitto.port, "w-killed")["state"] == "offline"  # the will
    publish_all(mosquitto.port, readings(10, device="killed"))
    second = start_worker(worker_id="w-killed")
    second.wait_metric("iotad_readings_accepted_total", lambda v: v >= 10)
    assert retained_status(mosquitto.port, "w-killed")["state"] == "online"


def test_broker_restart_readiness_and_resubscription(start_worker, tmp_path: Path) -> None:
    # A broker of its own: stopping the session's shared one failed whatever other test was
    # talking to it at that moment.
    broker = Mosquitto(tmp_path / "own-broker").start()
    try:
        worker = start_worker(env={"IOTAD_MQTT__RECONNECT_MAX_S": "1"}, broker=broker)
        try:
            broker.stop()
            worker.wait_metric("iotad_mqtt_connected", lambda v: v == 0, timeout_s=10)
            assert worker.get("/readyz")[0] == 503
            assert worker.get("/healthz")[0] == 200
        finally:
            broker.start()
        worker.wait_metric("iotad_mqtt_reconnects_total", lambda v: v >= 1, timeout_s=15)
        worker.wait_ready(timeout_s=10)
        # The broker forgot everything (persistence off): messages still arrive, so the
        # worker subscribed again on reconnect.
        publish_all(broker.port, readings(5, device="after-restart"))
        worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= 5)
    finally:
        broker.stop()


def run_to_exit(
    mosquitto: Mosquitto,
    tiny_artifact: Path,
    tmp_path: Path,
    env: dict[str, str],
    worker_id: str = "w-fail",
) -> tuple[int, str, float]:
    w = WorkerProcess(mosquitto, tiny_artifact, tmp_path, worker_id, env)
    started = time.monotonic()
    w.start()
    try:
        code = w.wait(timeout_s=30)
    except subprocess.TimeoutExpired:
        w.stop()
        raise
    return code, w.log(), time.monotonic() - started


def test_unreachable_broker_exits_1_after_bounded_retry(
    mosquitto: Mosquitto, tiny_artifact: Path, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    env = {
        "IOTAD_MQTT__PORT": str(free_port()),
        "IOTAD_MQTT__CONNECT_TIMEOUT_S": "2",
        "IOTAD_MQTT__USERNAME": "worker",
        "IOTAD_MQTT__PASSWORD": "hunter2-secret",
    }
    code, log, took = run_to_exit(mosquitto, tiny_artifact, tmp_path, env)
    assert code == 1
    assert took < 15
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert "connection refused" in errors[0] and "gave up after 2 s" in errors[0]
    assert "hunter2-secret" not in log
    assert "Traceback" not in log


def test_bad_credentials_are_reported(
    mosquitto: Mosquitto, tiny_artifact: Path, tmp_path: Path
) -> None:
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "worker", "right"], check=True)
    secure = Mosquitto(tmp_path / "auth", conf=["allow_anonymous false", f"password_file {pw}"])
    secure.start()
    try:
        env = {
            "IOTAD_MQTT__PORT": str(secure.port),
            "IOTAD_MQTT__CONNECT_TIMEOUT_S": "2",
            "IOTAD_MQTT__USERNAME": "worker",
            "IOTAD_MQTT__PASSWORD": "wrong-secret",
        }
        code, log, _ = run_to_exit(secure, tiny_artifact, tmp_path, env)
        assert code == 1
        assert "broker refused the connection: Not authorized" in log
        assert "wrong-secret" not in log

        # The right password from a secrets directory works.
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        (secrets / "iotad_mqtt__password").write_text("right\n")
        env.pop("IOTAD_MQTT__PASSWORD")
        env["IOTAD_SECRETS_DIR"] = str(secrets)
        w = WorkerProcess(secure, tiny_artifact, tmp_path, "w-auth", env)
        w.start()
        try:
            w.wait_ready()
        finally:
            w.signal(signal.SIGTERM)
            assert w.wait() == 0
    finally:
        secure.stop()


def make_tls_files(d: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""
    ca = make_ca(d, "test-ca")
    key, pem = make_cert(d, "localhost", ca, "subjectAltName=DNS:localhost,IP:127.0.0.1")
    return {"ca.pem": ca[1], "srv.pem": pem, "srv.key": key}


def test_tls_connects_with_the_right_ca_and_refuses_another(
    mosquitto: Mosquitto, tiny_artifact: Path, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    files = make_tls_files(tmp_path / "tls")
    other = make_tls_files(tmp_path / "other")
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "tlsbroker",
        conf=[
            f"listener {tls_port} 127.0.0.1",
            f"cafile {files['ca.pem']}",
            f"certfile {files['srv.pem']}",
            f"keyfile {files['srv.key']}",
        ],
    )
    broker.start()
    try:
        env = {"IOTAD_MQTT__PORT": str(tls_port), "IOTAD_MQTT__CONNECT_TIMEOUT_S": "2"}
        bad = {**env, "IOTAD_MQTT__TLS__CA_FILE": str(other["ca.pem"])}
        code, log, _ = run_to_exit(broker, tiny_artifact, tmp_path, bad, "w-tls-bad")
        assert code == 1
        assert "TLS certificate verification failed" in log

        good = {**env, "IOTAD_MQTT__TLS__CA_FILE": str(files["ca.pem"])}
        w = WorkerProcess(broker, tiny_artifact, tmp_path, "w-tls", good)
        w.start()
        try:
            w.wait_ready()
            assert "mqtts://" in w.log()
        finally:
            w.signal(signal.SIGTERM)
            assert w.wait() == 0
    finally:
        broker.stop()


def test_missing_model_exits_1_with_a_clear_line(
    mosquitto: Mosquitto, tiny_artifact: Path, tmp_path: Path
) -> None:
    env = {"IOTAD_MODEL__PATH": str(tmp_path / "no-model")}
    code, log, _ = run_to_exit(mosquitto, tiny_artifact, tmp_path, env)
    assert code == 1
    assert "cannot load the model" in log and "no-model" in log
    assert "Traceback" not in log
