"""Bursts, hostile floods and too many series, through a real mosquitto.

- A burst far above the processing speed into a tiny ingest queue: the worker applies
  backpressure (stops reading, the broker holds the rest), its memory stays flat and every
  reading is counted.
- 100,000 mixed good and bad messages: the worker survives, accepted + rejected equals
  published, and every bad one reaches the dead-letter topic with its reason.
- Series cardinality: past ``max_series`` new series are rejected (``too_many_series``);
  idle series are evicted and their slots reused.
- Unsafe device and metric names never reach a topic, a metric label or a checkpoint key.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from detector.engine.readings import valid_name
from tests.conftest import TINY_START_TS, Collector, Mosquitto, WorkerProcess, publish_all
from tests.integration.test_reliability_broker import rejected

pytestmark = pytest.mark.integration


@pytest.fixture
def big_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of its own whose queues hold a whole flood (the session one holds 100k)."""
    b = Mosquitto(
        tmp_path / "big", conf=["max_queued_messages 400000", "max_queued_bytes 0"]
    ).start()
    yield b
    b.stop()


def readings_of(n_series: int, steps: int, t0: float = TINY_START_TS) -> list[tuple[str, bytes]]:
    """Round-robin readings over `n_series` series, one step per 60 s of stream time."""
    out = []
    for i in range(steps):
        for k in range(n_series):
            value = 20.0 + (k % 7) + ((i * 7919 + k) % 13) * 0.05
            body = b'{"ts": %.1f, "value": %.3f}' % (t0 + 60.0 * i, value)
            out.append((f"sensors/dev-{k:04d}/temp", body))
    return out


class RssSampler(threading.Thread):
    """Samples a process' RSS every `period_s` until stopped."""

    def __init__(self, pid: int, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.period_s = period_s
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.period_s):
            try:
                self.samples.append(self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join()
        return self.samples


@pytest.mark.slow
def test_burst_into_a_tiny_queue_is_held_back_not_dropped(
    big_broker: Mosquitto, tiny_artifact: Path, tmp_path: Path
) -> None:
    env = {"IOTAD_QUEUE_SIZE": "64"}
    worker = WorkerProcess(big_broker, tiny_artifact, tmp_path, "w-burst", env).start()
    try:
        worker.wait_ready()
        publish_all(big_broker.port, readings_of(50, 20))  # warm up: every series has a window
        worker.wait_metric("iotad_readings_total", lambda v: v >= 1000)
        baseline = psutil.Process(worker.proc.pid).memory_info().rss
        # The burst comes while the worker is frozen: 50,000 messages at once, far more than
        # it can take (receive window 4,096, ingest queue 64); it must hold back, not buffer.
        worker.signal(signal.SIGSTOP)
        burst = readings_of(50, 1000, t0=TINY_START_TS + 60.0 * 20)
        publish_all(big_broker.port, burst, timeout_s=120)
        published = 1000 + len(burst)
        sampler = RssSampler(worker.proc.pid)
        sampler.start()
        worker.signal(signal.SIGCONT)
        depth = []
        while worker.sample("iotad_readings_total") < published:
            depth.append(worker.sample("iotad_ingest_queue_depth"))
            assert time.monotonic() - worker.started_at < 180, "burst not drained"
            time.sleep(0.2)
        samples = sampler.stop()
        assert worker.sample("iotad_readings_accepted_total") == published
        assert rejected(worker) == {}
        assert max(depth) <= 64
        growth_mb = (max(samples) - baseline) / 2**20
        print(f"burst: RSS {baseline / 2**20:.0f} MB, +{growth_mb:.1f} MB at most while draining")
        assert growth_mb < 25, f"RSS grew {growth_mb:.1f} MB"
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    finally:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.signal(signal.SIGCONT)
        worker.stop()


BAD_KINDS: list[tuple[str, bytes, str]] = [
    # (topic, payload, reason)
    ("sensors/dev-0001/temp", b"{not json", "malformed_json"),
    ("sensors/dev-0001/temp", b'{"ts": 1700000000, "value": "hot"}', "not_a_number"),
    ("sensors/dev-0001/temp", b'{"value": NaN}', "non_finite"),
    ("sensors/dev-0001/temp", b"1e400", "non_finite"),
    ("sensors/dev-0001", b"42", "missing_field"),
    ("sensors/a/b/c", b"1", "bad_topic"),
    ("sensors/gw", b'[{"device": "x/../y", "metric": "t", "value": 1}]', "bad_name"),
    ("sensors/gw", b'[{"device": "#", "metric": "t", "value": 1}]', "bad_name"),
    ("sensors/gw", b'[{"device": "d", "metric": "' + b"m" * 80 + b'", "value": 1}]', "bad_name"),
    ("sensors/dev-0001/temp", b'{"ts": 4102444800, "value": 1}', "future_ts"),
    ("sensors/dev-0001/temp", b'{"ts": "yesterday", "value": 1}', "bad_ts"),
    ("sensors/dev-0001/temp", b"", "empty_payload"),
    ("sensors/dev-0001/temp", b"[" * 5000 + b"]" * 5000, "too_deep"),
]


@pytest.mark.slow
def test_a_flood_of_100k_mixed_messages(
    big_broker: Mosquitto, tiny_artifact: Path, tmp_path: Path
) -> None:
    good = readings_of(1000, 80)  # 80,000 readings of 1,000 series
    bad = [BAD_KINDS[i % len(BAD_KINDS)] for i in range(20_000)]
    flood: list[tuple[str, bytes]] = []
    for i, msg in enumerate(good):  # one bad message after every four good ones
        flood.append(msg)
        if i % 4 == 3:
            topic, payload, _ = bad[i // 4]
            flood.append((topic, payload))
    assert len(flood) == 100_000
    expected = Counter(reason for _, _, reason in bad)

    dead = Collector(big_broker.port, ["iotad/deadletter"])
    worker = WorkerProcess(big_broker, tiny_artifact, tmp_path, "w-flood").start()
    try:
        worker.wait_ready()
        started = time.monotonic()
        publish_all(big_broker.port, flood, timeout_s=120)
        worker.wait_metric("iotad_messages_total", lambda v: v >= len(flood), timeout_s=120)
        took = time.monotonic() - started
        m = worker.metrics()
        accepted = m[("iotad_readings_accepted_total", ())]
        reasons = rejected(worker)
        assert accepted == len(good)
        assert reasons == dict(expected)
        assert accepted + sum(reasons.values()) == len(flood)
        worker.settle(big_broker.port)
        # Settled: the worker's count of dead letters is final, and the collector has
        # exactly that many once they have all arrived.
        sent = worker.sample("iotad_deadletter_total")
        letters = dead.wait_for(lambda ms: len(ms) >= sent, timeout_s=60)
        got = Counter(json.loads(x.payload)["reason"] for x in dead.snapshot())
        assert len(dead.snapshot()) == sent
        assert got == expected + Counter({"bad_topic": 2})  # the settle barriers
        assert worker.sample("iotad_publish_failed_total", kind="deadletter") == 0
        assert worker.proc.poll() is None and worker.get("/readyz")[0] == 200
        print(f"100k mixed messages in {took:.1f} s; {len(letters)} dead letters")
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    finally:
        worker.stop()
        dead.close()


def test_series_cap_rejects_new_series_and_idle_ones_are_evicted(
    mosquitto: Mosquitto, tiny_artifact: Path, tmp_path: Path, collect
) -> None:
    dead = collect("iotad/deadletter")
    env = {"IOTAD_DETECTION__MAX_SERIES": "5", "IOTAD_DETECTION__IDLE_EVICT_S": "1"}
    # IDLE_EVICT_S 1: the worker sweeps every 0.25 s (detector.worker.loop.evict_interval).
    w = WorkerProcess(mosquitto, tiny_artifact, tmp_path, "w-cap", env).start()
    try:
        w.wait_ready()
        ts = TINY_START_TS

        def one_each(devices: str, t: float) -> list[tuple[str, bytes]]:
            return [(f"sensors/cap-{d}/temp", b'{"ts": %.1f, "value": 1.5}' % t) for d in devices]

        publish_all(mosquitto.port, one_each("abcde", ts) + one_each("fgh", ts))
        w.wait_metric("iotad_readings_total", lambda v: v >= 8)
        assert w.sample("iotad_readings_accepted_total") == 5
        assert w.sample("iotad_readings_rejected_total", reason="too_many_series") == 3
        letters = dead.wait_for(lambda ms: len(ms) >= 3)
        assert {json.loads(x.payload)["reason"] for x in letters} == {"too_many_series"}
        assert {json.loads(x.payload)["topic"] for x in letters} == {
            f"sensors/cap-{d}/temp" for d in "fgh"
        }
        w.wait_metric("iotad_series_active", lambda v: v == 5)
        # Idle for longer than idle_evict_s: evicted, and the slots take the new series.
        w.wait_metric("iotad_series_active", lambda v: v == 0, timeout_s=10)
        assert "evicted 5 idle series" in w.log()
        publish_all(mosquitto.port, one_each("fgh", ts + 60))
        w.wait_metric("iotad_readings_accepted_total", lambda v: v >= 8)
        w.wait_metric("iotad_series_active", lambda v: v == 3)
        w.signal(signal.SIGTERM)
        assert w.wait() == 0
    finally:
        w.stop()


def test_unsafe_names_never_reach_topics_labels_or_checkpoint_keys(
    mosquitto: Mosquitto, start_worker, collect, tmp_path: Path
) -> None:
    from detector.worker.checkpoint import load_state

    out = collect("scores/#", "alerts/#", "iotad/deadletter")
    state = tmp_path / "state.npz"
    hostile = ["x/../y", "#", "+", "a b", "dev\u202e", "温度", "..", "d" * 65, "a\u0000b"]
    worker = start_worker(
        env={
            "IOTAD_CHECKPOINT__PATH": str(state),
            "IOTAD_OUTPUT__SCORES": "true",
            # Per-series gauges for every hostile device, were any to get through.
            "IOTAD_METRICS__SERIES_DEVICES": ",".join(["ok-dev", *hostile[:5]]),
        },
        worker_id="w-names",
    )
    msgs = []
    for i in range(20):
        ts = TINY_START_TS + 60.0 * i
        batch = [{"device": d, "metric": "temp", "ts": ts, "value": 1.0 + i} for d in hostile]
        batch += [{"device": "ok-dev", "metric": m, "ts": ts, "value": 2.0 + i} for m in hostile]
        batch.append({"device": "ok-dev", "metric": "temp", "ts": ts, "value": 3.0 + i % 3})
        msgs.append(("sensors/gateway", json.dumps(batch).encode()))
    publish_all(mosquitto.port, msgs)
    n = 20 * (2 * len(hostile) + 1)
    worker.wait_metric("iotad_readings_total", lambda v: v >= n)
    assert worker.sample("iotad_readings_accepted_total") == 20
    assert worker.sample("iotad_readings_rejected_total", reason="bad_name") == n - 20
    dead = out.wait_for(lambda ms: sum(m.topic == "iotad/deadletter" for m in ms) >= n - 20)
    samples = worker.metrics()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    # Topics the worker published to: only safe segments (scores of ok-dev/temp, dead letters).
    for m in dead:
        assert all(valid_name(p) for p in m.topic.split("/")), m.topic
    assert {m.topic for m in dead} <= {"scores/ok-dev/temp", "iotad/deadletter"}
    # Metric labels: device and metric label values are safe names only.
    named = {
        (key, value)
        for (_, labels), _ in samples.items()
        for key, value in labels
        if key in ("device", "metric")
    }
    assert named == {("device", "ok-dev"), ("metric", "temp")}
    assert load_state(state)["keys"].tolist() == ["ok-dev/temp"]
