"""Shared fixtures: a real mosquitto per test session, MQTT helpers, a tiny model artifact.

- `mosquitto`: a `Mosquitto` on a free loopback port with its own config (persistence off,
  queues large enough for tests). It can be stopped, restarted and reconfigured
  (``mosquitto.restart(conf=["max_inflight_messages 5"])``); tests that change it should
  restore it with ``mosquitto.restart(conf=[])``. The system broker on 1883 is never used.
- `Collector` / `collect`: subscribe and gather messages, with `wait_for`.
- `publish_all`: publish a list of messages at QoS 1 and wait until the broker has them all.
- `tiny_artifact`: trains a small LSTM (window 16, 8 units, 2 epochs) once per session on a
  few noisy sine series; skipped when `training.pipeline` is not importable.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on `port`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port}") from None
            time.sleep(0.05)


class Mosquitto:
    """A mosquitto broker in a temp dir, on 127.0.0.1:`port`.

    Args:
        workdir: where the config and log go.
        port: the port (default: a free one, kept across restarts).
        conf: extra config lines (e.g. ``["max_queued_messages 300000"]``).
    """

    BASE_CONF = (
        "persistence false",
        "allow_anonymous true",
        "max_queued_messages 100000",
        "log_type error",
        "log_type warning",
    )

    def __init__(self, workdir: Path, port: int | None = None, conf: Sequence[str] = ()) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = list(conf)
        self.host = "127.0.0.1"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def write_config(self) -> None:
        lines = [f"listener {self.port} {self.host}", *self.BASE_CONF]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root mosquitto drops to user "mosquitto", who cannot read pytest's 0700 tmp
            # dirs (password files, certificates, its own log).
            lines.append("user root")
        lines.extend(self.conf)
        lines.append(f"log_dest file {self.log_path}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        if self.running:
            return self
        self.write_config()
        with open(self.workdir / "mosquitto.out", "ab") as out:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_port(self.port, timeout_s)
        except TimeoutError:
            self.stop()
            logs = [
                p.read_text(errors="replace")
                for p in (self.log_path, self.workdir / "mosquitto.out")
                if p.exists()
            ]
            raise RuntimeError(
                f"mosquitto did not start on port {self.port}: {' '.join(logs)}"
            ) from None
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def restart(self, conf: Sequence[str] | None = None) -> Mosquitto:
        """Stop and start again on the same port; `conf` replaces the extra lines if given."""
        self.stop()
        if conf is not None:
            self.conf = list(conf)
        return self.start()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A mosquitto broker for the whole test session (never the system one on 1883)."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (make test installs it)")
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int


class Collector:
    """Subscribes to `topics` on the broker and keeps every message it receives.

    Uses a clean, non-persistent session, so it leaves nothing behind on the broker.
    """

    def __init__(self, port: int, topics: Sequence[str], host: str = "127.0.0.1") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("collector could not subscribe")

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        m = Message(msg.topic, msg.payload, bool(msg.retain), msg.qos)  # type: ignore[attr-defined]
        with self._lock:
            self.messages.append(m)

    def snapshot(self, prefix: str = "") -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic.startswith(prefix)]

    def json(self, prefix: str = "") -> list[dict]:
        import json

        return [json.loads(m.payload) for m in self.snapshot(prefix)]

    def wait_for(
        self, predicate: Callable[[list[Message]], bool], timeout_s: float = 10.0
    ) -> list[Message]:
        """Poll until `predicate(messages)` holds; returns the messages (raises on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            msgs = self.snapshot()
            if predicate(msgs):
                return msgs
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met; got {len(msgs)} messages")
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collect(mosquitto: Mosquitto) -> Iterator[Callable[..., Collector]]:
    """``collect("alerts/#", "iotad/#")`` -> a started `Collector`, closed after the test."""
    made: list[Collector] = []

    def make(*topics: str) -> Collector:
        c = Collector(mosquitto.port, topics)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def publish_all(
    port: int,
    messages: Sequence[tuple[str, bytes | str]],
    qos: int = 1,
    host: str = "127.0.0.1",
    timeout_s: float = 30.0,
    retain: bool = False,
) -> None:
    """Publish `messages` in order and return once the broker acknowledged all of them."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    try:
        infos = []
        for topic, payload in messages:
            infos.append(client.publish(topic, payload, qos=qos, retain=retain))
            # paho stalls past 65,535 outstanding QoS 1 messages: keep the window bounded.
            if qos and len(infos) % 10_000 == 0:
                infos[-10_000].wait_for_publish(timeout_s)
        for info in infos:
            info.wait_for_publish(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()


# -- the tiny model ---------------------------------------------------------------------------

TINY_SERIES = ("line1/temperature", "line1/vibration", "line2/temperature")
TINY_START_TS = 1_700_000_000.0
TINY_STEP_S = 60.0
TINY_PERIOD = 50  # readings per sine period


def tiny_value(key: str, i: int) -> float:
    """The clean signal of series `key` at step `i` (tests add spikes and shifts to it)."""
    k = TINY_SERIES.index(key) if key in TINY_SERIES else 0
    return 20.0 + 5.0 * k + 3.0 * math.sin(2 * math.pi * i / TINY_PERIOD + k)


def write_tiny_csv(path: Path, n: int = 1500, seed: int = 0) -> Path:
    """Noisy sine series in long format ``ts,device,metric,value``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lines = ["ts,device,metric,value"]
    for key in TINY_SERIES:
        device, metric = key.split("/")
        noise = rng.normal(0.0, 0.1, n)
        for i in range(n):
            ts = TINY_START_TS + i * TINY_STEP_S
            lines.append(f"{ts:.0f},{device},{metric},{tiny_value(key, i) + noise[i]:.5f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _training_fingerprint() -> str:
    """Hash of the code a trained artifact depends on (cached artifacts go stale with it)."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(Path(__file__).read_bytes())
    files = sorted((root / "training").rglob("*.py")) + [
        root / "detector" / name for name in ("artifact.py", "features.py", "readings.py")
    ]
    for path in files:
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def tiny_artifact(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained model artifact directory.

    Training takes ~20 s (TensorFlow), so the artifact is cached in pytest's cache directory,
    keyed by the training code's hash; ``pytest --cache-clear`` retrains. Without the cache
    plugin (``-p no:cacheprovider``) it is trained once per session in a temp directory.
    """
    try:
        from training.pipeline import TrainConfig, train
    except ImportError as exc:
        pytest.skip(f"training.pipeline is not importable yet ({exc})")
    pytest_cache = getattr(request.config, "cache", None)
    if pytest_cache is None:
        cache = tmp_path_factory.mktemp("tiny_model_cache")
    else:
        cache = Path(pytest_cache.mkdir("iotad_tiny_artifact"))
    cached = cache / _training_fingerprint()
    if (cached / "artifact.json").is_file():
        return cached
    root = tmp_path_factory.mktemp("tiny_model")
    csv_path = write_tiny_csv(root / "tiny.csv")
    cfg = TrainConfig(
        data=[csv_path],
        out=root / "artifact",
        window=16,
        units=(8,),
        epochs=2,
        quiet=True,
        seed=0,
        plots=False,
    )
    artifact_dir = Path(train(cfg).artifact_dir)
    staging = cache / f".{cached.name}.{os.getpid()}"
    shutil.copytree(artifact_dir, staging)
    try:
        staging.rename(cached)  # atomic: a concurrent session sees all or nothing
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another session got there first
    return cached if (cached / "artifact.json").is_file() else artifact_dir


@pytest.fixture
def registry():  # type: ignore[no-untyped-def]
    """A fresh Prometheus registry (never the global default)."""
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


# -- the worker as a subprocess ---------------------------------------------------------------


class WorkerProcess:
    """`iotad run` as a subprocess against the test broker, with a free metrics port.

    Args:
        broker: the test broker.
        artifact: model artifact directory.
        workdir: where its log goes (``worker.log``).
        worker_id: stable id (the MQTT client id): reuse it to resume a session.
        env: extra IOTAD_* variables; args: extra flags.
    """

    def __init__(
        self,
        broker: Mosquitto,
        artifact: Path,
        workdir: Path,
        worker_id: str,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        import sys

        self.metrics_port = free_port()
        self.worker_id = worker_id
        self.log_path = Path(workdir) / f"{worker_id}.log"
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOTAD_")}
        base.update(
            {
                "IOTAD_MQTT__HOST": broker.host,
                "IOTAD_MQTT__PORT": str(broker.port),
                "IOTAD_MODEL__PATH": str(artifact),
                "IOTAD_METRICS__HOST": "127.0.0.1",
                "IOTAD_METRICS__PORT": str(self.metrics_port),
                "IOTAD_WORKER_ID": worker_id,
                # Test sessions expire soon after the worker goes: nothing piles up.
                "IOTAD_MQTT__SESSION_EXPIRY_S": "60",
                "IOTAD_MQTT__CONNECT_TIMEOUT_S": "10",
                "IOTAD_LOG__REJECT_INTERVAL_S": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        base.update(env or {})
        self.env = base
        self.args = [sys.executable, "-m", "detector", "run", "--env-file", "", *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> WorkerProcess:
        self.started_at = time.monotonic()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in wait/kill)
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.log_path.parent,
        )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def get(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def wait_ready(self, timeout_s: float = 30.0, poll_s: float = 0.05) -> float:
        """Seconds from start until /readyz said 200 (raises with the log if it never does)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            time.sleep(poll_s)
        raise TimeoutError(f"worker not ready after {timeout_s} s:\n{self.log()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Samples of /metrics as ``{(name, sorted labels): value}``."""
        from prometheus_client.parser import text_string_to_metric_families

        _, text = self.get("/metrics")
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_metric(
        self, name: str, predicate: Callable[[float], bool], timeout_s: float = 20.0, **labels: str
    ) -> float:
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.sample(name, **labels)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}{labels} = {value}:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def settle(self, port: int) -> None:
        """Return once the worker has fully handled every message delivered to it so far.

        A barrier, twice: a message it rejects as ``bad_topic`` (``sensors/settle/x/y``),
        and a wait for that count. Deliveries reach the worker in order (on reconnect,
        redeliveries first) and batches run one after another; the second barrier is
        published after the first was counted, so it lands in a later batch, and the
        earlier batches have finished by then (alerts and dead letters published). Each
        call adds two ``bad_topic`` rejections and two dead letters.
        """
        for _ in range(2):
            before = self.sample("iotad_readings_rejected_total", reason="bad_topic")
            publish_all(port, [("sensors/settle/x/y", b"1")])
            self.wait_metric(
                "iotad_readings_rejected_total",
                lambda v, before=before: v >= before + 1,
                reason="bad_topic",
            )

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout_s: float = 20.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout_s)
        self._log.close()
        return code

    def stop(self) -> None:
        """Kill if still running (cleanup)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def start_worker(
    mosquitto: Mosquitto, tiny_artifact: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., WorkerProcess]]:
    """``start_worker(env={...}, args=[...], wait=True, broker=None)`` -> a ready
    `WorkerProcess` on the session broker, or on `broker` (killed after the test)."""
    made: list[WorkerProcess] = []
    default_id = "w-" + "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]

    def start(
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        worker_id: str | None = None,
        wait: bool = True,
        broker: Mosquitto | None = None,
    ) -> WorkerProcess:
        w = WorkerProcess(
            broker or mosquitto, tiny_artifact, tmp_path, worker_id or default_id, env, args
        )
        made.append(w)
        w.start()
        if wait:
            w.wait_ready()
        return w

    yield start
    for w in made:
        w.stop()
