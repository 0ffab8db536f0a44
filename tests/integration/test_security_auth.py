"""User name and password on a broker with an ACL: the worker gets in with valid credentials,
is told clearly when they are wrong, holds only the rights it needs, and its password never
shows up anywhere it could leak.

test_worker_lifecycle.py already checks one wrong password (exit 1, "Not authorized") and a
password from the secrets directory; tests/deploy/test_mosquitto_acl.py checks the deploy
ACL file itself. Here: least privilege of the worker's account, every password source, and
a search for the password in every output.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import Mosquitto, WorkerProcess, free_port
from tests.integration.test_reliability_broker import numbered

pytestmark = pytest.mark.integration

SECRET = "Wkr-S3cr3t-7f3a91-pw"  # distinctive: grep-able in any output
USERS = {"worker": SECRET, "sensor": "sensor-pw", "observer": "observer-pw", "admin": "admin-pw"}
ACL = """\
user worker
topic read sensors/#
topic write alerts/#
topic write scores/#
topic write iotad/#
topic read iotad/status/#

user sensor
topic write sensors/#

user observer
topic read #

user admin
topic readwrite #
"""


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    pw = tmp_path / "passwd"
    for i, (user, password) in enumerate(USERS.items()):
        flags = ["-b", "-c"] if i == 0 else ["-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(pw), user, password], check=True)
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    broker = Mosquitto(
        tmp_path / "acl-broker",
        conf=["allow_anonymous false", f"password_file {pw}", f"acl_file {acl}"],
    ).start()
    yield broker
    broker.stop()


class Client:
    """A paho client logged in as `user`, recording what it receives and its acks."""

    def __init__(self, port: int, user: str, password: str | None = None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.suback: list[str] = []
        self.puback: list[str] = []
        self._lock = threading.Lock()
        connected, self._subscribed = threading.Event(), threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, USERS[user] if password is None else password)
        self.c.on_connect = lambda *a: connected.set()
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = lambda _c, _u, _mid, reason, _p: self.puback.append(str(reason))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert connected.wait(5), f"{user} could not connect"

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, msg.payload))

    def _on_subscribe(self, _c: object, _u: object, _mid: int, reasons: list, _p: object) -> None:
        self.suback.extend(str(r) for r in reasons)
        self._subscribed.set()

    def subscribe(self, *topics: str) -> None:
        self._subscribed.clear()
        self.c.subscribe([(t, 1) for t in topics])
        assert self._subscribed.wait(5)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.c.publish(topic, payload, qos=qos).wait_for_publish(5)

    def topics(self, prefix: str = "") -> list[str]:
        with self._lock:
            return [t for t, _ in self.received if t.startswith(prefix)]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def worker_env(broker: Mosquitto, password: str | None = SECRET) -> dict[str, str]:
    env = {
        "IOTAD_MQTT__USERNAME": "worker",
        "IOTAD_MQTT__PORT": str(broker.port),
        "IOTAD_MQTT__CONNECT_TIMEOUT_S": "2",
        "IOTAD_OUTPUT__SCORES": "true",
    }
    if password is not None:
        env["IOTAD_MQTT__PASSWORD"] = password
    return env


def test_worker_has_only_the_rights_it_needs(
    acl_broker: Mosquitto, tiny_artifact: Path, tmp_path: Path
) -> None:
    observer = Client(acl_broker.port, "observer")
    observer.subscribe("#")
    w = WorkerProcess(acl_broker, tiny_artifact, tmp_path, "w-acl", worker_env(acl_broker))
    w.start()
    try:
        w.wait_ready()
        sensor = Client(acl_broker.port, "sensor")
        for topic, payload in [*numbered(20), ("sensors/line1/temperature", b"{bad")]:
            sensor.publish(topic, payload)
        w.wait_metric("iotad_readings_total", lambda v: v >= 21)
        assert w.sample("iotad_readings_accepted_total") == 20
        # What it must be able to do: read sensors, write scores, dead letters and status.
        deadline = time.monotonic() + 10
        while not (observer.topics("scores/") and observer.topics("iotad/deadletter")):
            assert time.monotonic() < deadline, observer.topics()
            time.sleep(0.05)
        assert "iotad/status/w-acl" in observer.topics("iotad/status/")

        # What it must not: with the worker's own credentials, publishing readings...
        rogue = Client(acl_broker.port, "worker")
        before = len(observer.topics("sensors/x"))
        rogue.publish("sensors/x/injected", b"99")
        # ...and reading anything but sensors (alerts are write-only for it, secrets unlisted).
        # The probe, which it may read, is its barrier: it comes after the others.
        rogue.subscribe("secret/#", "alerts/#", "sensors/x/probe")
        admin = Client(acl_broker.port, "admin")
        admin.publish("secret/plan", b"keep out")
        admin.publish("alerts/line1/temperature", b"{}")
        admin.publish("sensors/x/probe", b"1")  # delivered: the observer is listening
        # The broker handles a publisher's messages in order and hands each to its
        # subscribers before acknowledging it: once the probe is in, so would be anything
        # published before it.
        deadline = time.monotonic() + 5
        while "sensors/x/probe" not in observer.topics("sensors/x") or not rogue.topics():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert observer.topics("sensors/x")[before:] == ["sensors/x/probe"]  # not the injection
        assert rogue.topics() == ["sensors/x/probe"]
        assert rogue.puback == ["Not authorized"]  # MQTT v5 says why
        w.signal(signal.SIGTERM)
        assert w.wait() == 0
        for c in (observer, sensor, rogue, admin):
            c.close()
    finally:
        w.stop()


# -- the password never leaks -----------------------------------------------------------------


def run_worker(
    broker: Mosquitto,
    artifact: Path,
    workdir: Path,
    env: dict[str, str],
    worker_id: str,
    args: list[str] | None = None,
) -> WorkerProcess:
    w = WorkerProcess(broker, artifact, workdir, worker_id, env)
    if args is not None:
        w.args = [*w.args[:4], *args]  # python -m detector run + these flags
    return w.start()


def outputs_of_a_run(w: WorkerProcess, observer: Client) -> str:
    """Everything a running worker shows: /metrics, /readyz, /healthz, its argv and
    environment-free command line, and what it published (status, scores, dead letters)."""
    parts = [w.get(p)[1] for p in ("/metrics", "/readyz", "/healthz")]
    parts.append(Path(f"/proc/{w.proc.pid}/cmdline").read_bytes().decode(errors="replace"))
    parts.extend(p.decode(errors="replace") for _, p in observer.received)
    return "\n".join(parts)


def test_password_never_appears_in_logs_metrics_messages_or_help(
    acl_broker: Mosquitto, tiny_artifact: Path, tmp_path: Path
) -> None:
    seen: list[str] = []
    observer = Client(acl_broker.port, "observer")
    observer.subscribe("#")
    sensor = Client(acl_broker.port, "sensor")

    # Each password source works, at DEBUG level, and leaves no trace.
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "iotad_mqtt__password").write_text(SECRET + "\n")
    dotenv = tmp_path / "worker.env"
    dotenv.write_text(f"IOTAD_MQTT__PASSWORD={SECRET}\n")
    base = worker_env(acl_broker, password=None) | {"IOTAD_LOG__LEVEL": "DEBUG"}
    sources = {
        "environment": (base | {"IOTAD_MQTT__PASSWORD": SECRET}, None),
        "secrets-dir": (base | {"IOTAD_SECRETS_DIR": str(secrets)}, None),
        "dotenv": (base, ["--env-file", str(dotenv)]),
    }
    for name, (env, args) in sources.items():
        w = run_worker(acl_broker, tiny_artifact, tmp_path, env, f"w-{name}", args)
        try:
            w.wait_ready()
            sensor.publish("sensors/line1/temperature", b"{oops")  # a dead letter, too
            w.wait_metric("iotad_deadletter_total", lambda v: v >= 1)
            seen.append(outputs_of_a_run(w, observer))
            w.signal(signal.SIGTERM)
            assert w.wait() == 0, name
        finally:
            w.stop()
        seen.append(w.log())

    # Failures: a wrong password, an unreachable broker, an invalid setting beside it.
    wrong = "Wrong-" + SECRET
    failing = {
        "wrong-password": (base | {"IOTAD_MQTT__PASSWORD": wrong}, 1, "Not authorized"),
        "no-broker": (
            base | {"IOTAD_MQTT__PASSWORD": SECRET, "IOTAD_MQTT__PORT": str(free_port())},
            1,
            "connection refused",
        ),
        "bad-setting": (
            base | {"IOTAD_MQTT__PASSWORD": SECRET, "IOTAD_MQTT__KEEPALIVE_S": "never"},
            2,
            "IOTAD_MQTT__KEEPALIVE_S",
        ),
    }
    for name, (env, code, says) in failing.items():
        w = run_worker(acl_broker, tiny_artifact, tmp_path, env, f"w-{name}")
        try:
            assert w.wait(timeout_s=30) == code, w.log()
        finally:
            w.stop()
        log = w.log()
        assert says in log and "Traceback" not in log, log
        assert wrong not in log
        seen.append(log)

    # --help, with the password in the environment: no password flag, no password.
    env = {**worker_env(acl_broker), "PYTHONPATH": ":".join(sys.path)}
    helped = subprocess.run(
        [sys.executable, "-m", "detector", "run", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # only a file holding it (--password-file), never the password itself as a flag's value
    assert helped.stdout.count("--password") == helped.stdout.count("--password-file") > 0
    assert "IOTAD_MQTT__PASSWORD" in helped.stdout
    seen.append(helped.stdout + helped.stderr)

    leaks = [text for text in seen if SECRET in text]
    assert not leaks, leaks[0][-2000:]
    assert len(seen) == 2 * len(sources) + len(failing) + 1
    observer.close()
    sensor.close()


def test_a_password_given_as_a_flag_is_refused_without_echoing_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "detector", "run", "--password", SECRET],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert out.returncode == 2
    assert SECRET not in out.stdout + out.stderr
