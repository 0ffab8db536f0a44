"""Shared fixtures: a real mosquitto per test session, MQTT helpers, a tiny model artifact.

- `mosquitto`: a `Mosquitto` on a free loopback port with its own config (persistence off,
  queues large enough for tests). It can be stopped, restarted and reconfigured
  (``mosquitto.restart(conf=["max_inflight_messages 5"])``); tests that change it should
  restore it with ``mosquitto.restart(conf=[])``. The system broker on 1883 is never used.
- `Collector` / `collect`: subscribe and gather messages, with `wait_for`.
- `publish_all`: publish a list of messages at QoS 1 and wait until the broker has them all.
- `start_worker`: `iotad run` as a ready subprocess (`WorkerProcess`) on the session broker.

The process classes (`Mosquitto`, `WorkerProcess`, `free_port`, `publish_all`, ...) live in
the top-level `support` package, which `bench/` imports too; they are re-exported here so
tests keep importing them from one place.
- `tiny_artifact`: trains a small LSTM (window 16, 8 units, 2 epochs) once per session on a
  few noisy sine series; skipped when `training.pipeline` is not importable.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.mosquitto import MOSQUITTO as MOSQUITTO
from support.mosquitto import Mosquitto as Mosquitto
from support.mosquitto import publish_all as publish_all
from support.ports import free_port as free_port
from support.ports import wait_port as wait_port
from support.worker_process import WorkerProcess as WorkerProcess

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


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
        root / "detector" / name
        for name in ("artifact.py", "features.py", "readings.py", "device_model.py")
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
        # The worker tests publish each series as a message of its own, so whether a
        # device's readings share a batch depends on timing; a device model judges them
        # only together, which would make these tests' scores depend on it. The worker
        # with device models: tests/integration/test_factory_worker_identity.py.
        device_models=False,
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
