"""`iotad simulate` against a real mosquitto: what it says it sent is what a subscriber gets."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from detector.sim.simulate_cli import PublishError, PublishSettings, PublishStats, run_publisher
from detector.sim.simulation import FactoryConfig, Fault, FaultSpec

pytestmark = pytest.mark.integration

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def run_mosquitto(workdir: Path, extra: str = "") -> Iterator[int]:
    """A mosquitto of our own on a free loopback port (never the system one on 1883)."""
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed")
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    if os.geteuid() == 0:
        # As root, mosquitto drops to user "mosquitto", who cannot read pytest's temp dirs.
        extra += "\nuser root"
    # Unlimited queues: a subscriber that falls behind must not lose QoS 1 messages here.
    conf.write_text(
        f"listener {port} 127.0.0.1\npersistence false\nmax_queued_messages 0\n{extra}\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def broker_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with run_mosquitto(tmp_path_factory.mktemp("simulate-broker"), "allow_anonymous true") as port:
        yield port


class Subscriber:
    """Collects every message on `topic` at QoS 1 (the callback only appends)."""

    def __init__(
        self, port: int, topic: str, version: int = mqtt.MQTTv5, auth: tuple[str, str] | None = None
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._topic = topic
        self._ready = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=version)
        if auth:
            self._client.username_pw_set(*auth)
        self._client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload))
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        assert self._ready.wait(5), "subscription not acknowledged"

    def wait_for(self, n: int, timeout_s: float = 20.0) -> list[tuple[str, bytes]]:
        """The messages once `n` have come, and everything that was on its way with them.

        Anything beyond `n` must show up: after the first `n`, the subscriber publishes a
        barrier to its own subscription and waits for it. The broker hands a message to its
        subscribers before it acknowledges it, so whatever the publisher had sent (and
        counted as acknowledged) is ahead of the barrier. The barrier is not returned.
        """
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        barrier = self._topic.removesuffix("#") + "zz-barrier" if self._topic.endswith("#") else ""
        if barrier:
            self._client.publish(barrier, b"", qos=1)
            while not any(t == barrier for t, _ in self.messages):
                assert time.monotonic() < deadline + 10, "barrier did not come back"
                time.sleep(0.02)
        return [(t, p) for t, p in self.messages if t != barrier]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix per test, so tests sharing the broker never see each other's messages."""
    return "sim-" + re.sub(r"[^A-Za-z0-9]", "", request.node.name)[-40:]


def publish(port: int, prefix: str, **kw: object) -> tuple[PublishStats, list[Fault]]:
    settings = PublishSettings(host="127.0.0.1", port=port, topic_prefix=prefix, **kw)  # type: ignore[arg-type]
    faults: list[Fault] = []
    stats = run_publisher(settings, threading.Event(), on_fault=faults.append)
    return stats, faults


def test_json_messages_arrive_as_reported(broker_port: int, prefix: str) -> None:
    sub = Subscriber(broker_port, f"{prefix}/#")
    spike = FaultSpec("line1-press01", "current", "spike", 0.5, 0.175, 99.0)  # 4 ticks
    factory = FactoryConfig(n_devices=3, interval_s=0.05, shifts="24/7", seed=4)
    t0 = time.time()
    stats, faults = publish(
        broker_port, prefix, factory=factory, faults=(spike,), speed=1.0, duration_s=1.5
    )
    got = sub.wait_for(stats.acked)
    sub.close()
    assert stats.acked == stats.messages == stats.readings == len(got) > 300
    assert stats.failed == stats.pending == 0
    series: dict[str, list[tuple[float, float]]] = {}
    for topic, payload in got:
        head, device, metric = topic.split("/")
        assert head == prefix and device.startswith("line1-") and metric in factory.metrics
        body = json.loads(payload)
        assert set(body) == {"ts", "value"} and math.isfinite(body["value"])
        series.setdefault(f"{device}/{metric}", []).append((body["ts"], body["value"]))
    assert len(series) == 12
    for points in series.values():
        ts = [t for t, _ in points]
        assert ts == sorted(ts) and t0 - 1 < ts[0] < t0 + 1  # real time: stamped now
    (fault,) = faults
    assert fault.kind == "spike" and fault.start_ts == pytest.approx(stats.first_ts + 0.5)
    # Full-load current stays under 60 A; the 99 A spike hits exactly the 4 ticks in its span.
    assert sum(v > 100 for _, v in series["line1-press01/current"]) == 4


def test_batch_payload_over_mqtt311(broker_port: int, prefix: str) -> None:
    sub = Subscriber(broker_port, f"{prefix}/#", version=mqtt.MQTTv311)
    factory = FactoryConfig(n_devices=2, metrics=("temperature", "current"), interval_s=60.0)
    stats, _ = publish(
        broker_port,
        prefix,
        factory=factory,
        payload="batch",
        mqtt_version="3.1.1",
        speed=0,
        start_ts=1_704_067_200.0,
        max_readings=400,
    )
    got = sub.wait_for(stats.acked)
    sub.close()
    assert stats.readings == 400 and stats.messages == stats.acked == len(got) == 200
    first = json.loads(got[0][1])
    assert got[0][0] == f"{prefix}/line1-press01"
    assert first["ts"] == 1_704_067_200.0 and set(first["values"]) == {"temperature", "current"}
    assert sum(len(json.loads(p)["values"]) for _, p in got) == stats.readings


def test_bare_numbers_and_bounded_in_flight(broker_port: int, prefix: str) -> None:
    sub = Subscriber(broker_port, f"{prefix}/#")
    factory = FactoryConfig(n_devices=4, interval_s=1.0)
    stats, _ = publish(
        broker_port,
        prefix,
        factory=factory,
        payload="bare",
        speed=0,
        max_readings=3000,
        max_pending=5,
    )
    got = sub.wait_for(stats.acked)
    sub.close()
    assert stats.max_pending <= 5
    assert stats.acked == len(got) == 3000
    assert all(math.isfinite(float(p)) for _, p in got)


@pytest.mark.slow
def test_more_than_65535_outstanding_ids_do_not_stall(broker_port: int, prefix: str) -> None:
    # paho's 16-bit message ids: without a bound on in-flight messages this run would hang.
    # MQTT 3.1.1, because a v5 mosquitto asks for at most 20 in flight (Receive Maximum).
    sub = Subscriber(broker_port, f"{prefix}/#")
    stats, _ = publish(
        broker_port, prefix, speed=0, max_readings=70_000, max_pending=10_000, mqtt_version="3.1.1"
    )
    got = sub.wait_for(stats.acked, timeout_s=60)
    sub.close()
    assert stats.acked == len(got) == 70_000
    assert 20 < stats.max_pending <= 10_000


def test_unreachable_broker_is_an_error() -> None:
    with pytest.raises(PublishError, match="cannot connect"):
        publish(_free_port(), "x", connect_timeout_s=2)


def _cli(port: int, *args: str, password: str = "") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTAD_")}
    if password:
        env["IOTAD_MQTT__PASSWORD"] = password
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "detector",
            "simulate",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _confirmed(stderr: str) -> int:
    return int(re.findall(r"confirmed (\d+)", stderr)[-1])


def test_cli_runs_for_a_duration_and_writes_truth(
    broker_port: int, prefix: str, tmp_path: Path
) -> None:
    sub = Subscriber(broker_port, f"{prefix}/#")
    truth = tmp_path / "truth.json"
    proc = _cli(
        broker_port,
        "--topic-prefix",
        prefix,
        "--duration",
        "1.5",
        "--rate",
        "200",
        "--fault",
        "line2-oven01:*:silent@0.2:0.5",
        "--truth",
        str(truth),
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    got = sub.wait_for(_confirmed(err))
    sub.close()
    assert len(got) == _confirmed(err) > 200
    assert "fault kind=silent device=line2-oven01 metric=*" in out
    doc = json.loads(truth.read_text())
    (fault,) = doc["faults"]
    assert fault["kind"] == "silent" and fault["end_ts"] - fault["start_ts"] == pytest.approx(0.5)
    assert doc["interval_s"] == pytest.approx(24 / 200)  # --rate spread over 24 series
    silent = [
        t
        for topic, p in got
        if "/line2-oven01/" in topic
        and fault["start_ts"] <= (t := json.loads(p)["ts"]) < fault["end_ts"]
    ]
    assert silent == []


def test_cli_stops_cleanly_on_sigterm(broker_port: int, prefix: str) -> None:
    sub = Subscriber(broker_port, f"{prefix}/#")
    proc = _cli(broker_port, "--topic-prefix", prefix, "--rate", "300")
    deadline = time.monotonic() + 15
    while len(sub.messages) < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    got = sub.wait_for(_confirmed(err))
    sub.close()
    assert len(got) == _confirmed(err) >= 50


def test_password_from_environment_or_file(tmp_path: Path) -> None:
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd is not installed")
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "sim", "s3cret"], check=True)
    extra = f"allow_anonymous false\npassword_file {passwd}"
    with run_mosquitto(tmp_path, extra) as port:
        sub = Subscriber(port, "sensors/#", auth=("sim", "s3cret"))
        run = ("--username", "sim", "--max-readings", "48", "--speed", "0")
        ok = _cli(port, *run, password="s3cret")
        _, err = ok.communicate(timeout=30)
        assert ok.returncode == 0, err
        (tmp_path / "pw").write_text("s3cret\n")
        from_file = _cli(port, *run, "--password-file", str(tmp_path / "pw"))
        _, err = from_file.communicate(timeout=30)
        assert from_file.returncode == 0, err
        assert len(sub.wait_for(96)) == 96
        sub.close()
        wrong = _cli(port, *run, password="nope")
        _, err = wrong.communicate(timeout=30)
        assert wrong.returncode == 1 and "refused" in err
