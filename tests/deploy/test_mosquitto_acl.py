"""The compose stack's broker config, run for real: deploy/mosquitto/* on a local mosquitto.

The secrets come from deploy/init-secrets.sh and the password file from
deploy/mosquitto/make-passwd.sh, exactly as the compose stack makes them; only the paths and
the port of mosquitto.conf are rewritten for this machine.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto with the stack's config, ACL and generated password file."""

    def __init__(self, tmp: Path) -> None:
        env = {
            **os.environ,
            "SECRETS_OUT": str(tmp / "secrets"),
            "SECRETS_DIR": str(tmp / "secrets"),
        }
        for script, args in (
            ("init-secrets.sh", []),
            ("mosquitto/make-passwd.sh", [str(tmp / "passwd")]),
        ):
            subprocess.run(
                ["sh", str(DEPLOY / script), *args],
                env=env,
                check=True,
                timeout=30,
                capture_output=True,
            )
        self.passwords = {
            user: (tmp / "secrets" / name).read_text()
            for user, name in (
                ("iotad", "iotad_mqtt__password"),
                ("simulator", "mqtt_simulator_password"),
                ("reader", "mqtt_reader_password"),
            )
        }
        self.port = free_port()
        conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
        replacements = {
            "/mosquitto/auth/passwd": str(tmp / "passwd"),
            "/mosquitto/config/acl": str(DEPLOY / "mosquitto" / "acl"),
            "/mosquitto/data/": f"{tmp}/",
            "listener 1883": f"listener {self.port} 127.0.0.1",
        }
        for old, new in replacements.items():
            assert old in conf, old
            conf = conf.replace(old, new)
        # As root mosquitto would drop to the `mosquitto` user, which cannot enter tmp_path.
        conf += f"\nuser {getpass.getuser()}\n"
        (tmp / "mosquitto.conf").write_text(conf)
        self.log = (tmp / "mosquitto.log").open("wb")
        assert MOSQUITTO
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(tmp / "mosquitto.conf")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mosquitto did not start, see {self.log.name}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class Client:
    """A paho client that records what it receives."""

    def __init__(self, broker: Broker, user: str | None, password: str | None = None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.connack = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda _c, _u, msg: self.received.append((msg.topic, msg.payload))
        self.c.connect("127.0.0.1", broker.port)
        # Drive the handshake by hand: a background loop of a refused client sits in paho's
        # reconnect delay, and stopping it costs a second.
        deadline = time.monotonic() + 5
        while not self.connack.is_set():
            assert time.monotonic() < deadline, "no CONNACK"
            self.c.loop(0.05)
        if self.ok:
            self.c.loop_start()

    def _on_connect(
        self, _c: object, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object
    ) -> None:
        self.reason = reason
        self.connack.set()

    @property
    def ok(self) -> bool:
        return self.reason is not None and not self.reason.is_failure

    def subscribe(self, *topics: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *_a: done.set()
        self.c.subscribe([(t, 1) for t in topics])
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes = b"1") -> None:
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(5)

    def wait_for(self, topic: str, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(t == topic for t, _ in self.received):
            assert time.monotonic() < deadline, f"{topic} not received; got {self.received}"
            time.sleep(0.01)

    def topics(self) -> set[str]:
        return {t for t, _ in self.received}

    def close(self) -> None:
        self.c.disconnect()
        if self.ok:
            self.c.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if not (MOSQUITTO and MOSQUITTO_PASSWD):
        pytest.skip("mosquitto / mosquitto_passwd not found (scripts/system-deps.sh installs them)")
    b = Broker(tmp_path_factory.mktemp("mosquitto"))
    yield b
    b.stop()


def test_anonymous_and_wrong_passwords_are_refused(broker: Broker) -> None:
    for user, password in ((None, None), ("iotad", "wrong"), ("nobody", "x"), ("iotad", "")):
        client = Client(broker, user, password)
        assert not client.ok, (user, client.reason)
        client.close()


def test_topic_rights(broker: Broker) -> None:
    iotad = Client(broker, "iotad", broker.passwords["iotad"])
    sim = Client(broker, "simulator", broker.passwords["simulator"])
    reader = Client(broker, "reader", broker.passwords["reader"])
    try:
        assert iotad.ok and sim.ok and reader.ok
        iotad.subscribe("sensors/#", "alerts/#")
        sim.subscribe("alerts/#", "sensors/#")
        reader.subscribe("sensors/#", "alerts/#", "scores/#", "iotad/#")

        # Readings: the simulator writes, only the worker reads.
        sim.publish("sensors/press-7/temp", b"21.5")
        iotad.wait_for("sensors/press-7/temp")
        # The worker writes alerts, scores and its own topics; readers read them.
        for topic in ("alerts/press-7/temp", "scores/press-7/temp", "iotad/deadletter"):
            iotad.publish(topic)
            reader.wait_for(topic)
        # Forbidden publishes are dropped by the broker. Each is followed by an allowed
        # "barrier" message: once that arrives, the forbidden one was handled before it.
        sim.publish("alerts/press-7/temp", b"forged")
        iotad.publish("sensors/forged/by-worker")
        sim.publish("sensors/barrier/x")
        iotad.publish("alerts/barrier/x")
        iotad.wait_for("sensors/barrier/x")
        reader.wait_for("alerts/barrier/x")

        assert "sensors/forged/by-worker" not in iotad.topics()
        assert not [p for t, p in reader.received if p == b"forged"]
        assert not any(t.startswith("sensors/") for t in reader.topics())  # no read right
        assert sim.received == []  # the simulator may read nothing at all
        assert not any(t.startswith("alerts/") for t in iotad.topics())  # write-only there
    finally:
        for c in (iotad, sim, reader):
            c.close()


def test_password_file_is_hashed_and_private(broker: Broker) -> None:
    passwd = Path(broker.log.name).parent / "passwd"
    text = passwd.read_text()
    assert set(re.findall(r"^(\w+):", text, re.M)) == {"iotad", "simulator", "reader"}
    for password in broker.passwords.values():
        assert password not in text
    assert passwd.stat().st_mode & 0o077 == 0
