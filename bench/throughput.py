"""Worker throughput against a bare paho subscriber, lag, memory and start-up time.

Starts its own mosquitto on a free loopback port and measures:

1. drain rate of a bare paho subscriber (QoS 1, counts messages and nothing else) over a
   backlog of N readings (default 200,000 over 1,000 series) queued in its persistent
   session while it was offline;
2. drain rate of ``iotad run`` (full decoding, detection, acks) over the same backlog;
3. the ratio of the two (target >= 0.7);
4. end-to-end lag (reading ts -> decision, from ``iotad_lag_seconds``) at half the worker's
   rate, live;
5. worker RSS with 100,000 active series;
6. time from process start to ``/readyz`` 200.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/throughput.py [--model DIR] [--readings N]

Without ``--model`` a small LSTM (window 32, 32 units) is trained first (~30 s, TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from support.mosquitto import Mosquitto  # noqa: E402
from support.worker_process import WorkerProcess  # noqa: E402

RECEIVE_MAXIMUM = 4096
LIVE_IN_FLIGHT = 100
SESSION_EXPIRY_S = 600


def series_names(n: int) -> list[tuple[str, str]]:
    metrics = ("temperature", "vibration", "pressure", "current", "speed")
    return [(f"machine-{k // len(metrics):04d}", metrics[k % len(metrics)]) for k in range(n)]


def value(k: int, i: int, rng: np.random.Generator) -> float:
    return 50.0 + 10.0 * math.sin(2 * math.pi * i / 60 + k) + float(rng.normal(0, 0.3))


def backlog(n_readings: int, n_series: int, t0: float) -> list[tuple[str, bytes]]:
    """Round-robin readings over the series, one per series per second of stream time."""
    rng = np.random.default_rng(0)
    names = series_names(n_series)
    out = []
    for j in range(n_readings):
        k, i = j % n_series, j // n_series
        device, metric = names[k]
        body = json.dumps({"ts": t0 + i, "value": round(value(k, i, rng), 4)}).encode()
        out.append((f"sensors/{device}/{metric}", body))
    return out


PROTOCOL = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}


def client(client_id: str, version: str) -> mqtt.Client:
    """A paho client; persistent session for v3.1.1 (v5 asks for it on connect)."""
    if version == "5":
        return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    return mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=False,
    )


def connect(c: mqtt.Client, port: int, version: str) -> None:
    if version == "5":
        c.connect("127.0.0.1", port, clean_start=False, properties=connect_props())
    else:
        c.connect("127.0.0.1", port)


def connect_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    return props


def make_session(port: int, client_id: str, version: str) -> None:
    """Create a persistent session subscribed to sensors/# and leave it (it queues)."""
    done = threading.Event()
    c = client(client_id, version)
    c.on_connect = lambda cl, *a: cl.subscribe("sensors/#", qos=1)
    c.on_subscribe = lambda *a: done.set()
    connect(c, port, version)
    c.loop_start()
    if not done.wait(10):
        raise RuntimeError("could not subscribe")
    c.disconnect()
    c.loop_stop()


def publish(port: int, messages: list[tuple[str, bytes]], rate: float | None = None) -> float:
    """Publish at QoS 1 (paced to `rate` msg/s if given); returns msg/s achieved."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    # paho rescans its in-flight list on every PUBACK (O(window) each): no paho limit, and
    # our own bound on outstanding messages instead.
    c.max_inflight_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    started = time.perf_counter()
    infos = []
    try:
        for n, (topic, payload) in enumerate(messages):
            if rate is not None and n % 50 == 0:
                ahead = started + n / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            if rate is not None:  # live: the reading's time is now
                doc = json.loads(payload)
                doc["ts"] = time.time()
                payload = json.dumps(doc).encode()
            infos.append(c.publish(topic, payload, qos=1))
            if len(infos) >= 2000:  # paho stalls past 65,535 outstanding QoS 1 messages
                infos[999].wait_for_publish(60)  # acks come in order
                del infos[:1000]
        for info in infos:
            info.wait_for_publish(60)
    finally:
        c.disconnect()
        c.loop_stop()
    return len(messages) / (time.perf_counter() - started)


def live_publisher(port: int, n: int, n_series: int, rate: float) -> subprocess.Popen[bytes]:
    """A separate process publishing `n` readings at `rate`/s, each stamped with its publish
    time: in this process its network thread would compete for the GIL with whatever this
    process measures, and its queueing would be counted as the subscriber's lag."""
    return subprocess.Popen(
        [sys.executable, __file__, "--publish-live", str(port), str(n), str(n_series), str(rate)],
        cwd=ROOT,
    )


def run_live_publisher(port: int, n: int, n_series: int, rate: float) -> int:
    """Publish `n` readings at `rate`/s at QoS 1, each stamped with the time it is handed to
    paho. At most LIVE_IN_FLIGHT are unconfirmed: without a bound, paho's own outgoing queue
    grew whenever this process lost the CPU for a moment, and the time the readings waited
    there (seconds, measured with a second subscriber) was counted as the worker's lag."""
    rng = np.random.default_rng(0)
    names = [f"sensors/{device}/{metric}" for device, metric in series_names(n_series)]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos: deque[mqtt.MQTTMessageInfo] = deque()
    started = time.perf_counter()
    try:
        for j in range(n):
            if j % 10 == 0:
                ahead = started + j / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            k, i = j % n_series, j // n_series
            body = f'{{"ts": {time.time():.6f}, "value": {value(k, i, rng):.4f}}}'.encode()
            infos.append(c.publish(names[k], body, qos=1))
            if len(infos) > LIVE_IN_FLIGHT:
                infos.popleft().wait_for_publish(60)
        for info in infos:
            info.wait_for_publish(60)
    finally:
        c.disconnect()
        c.loop_stop()
    got = n / (time.perf_counter() - started)
    print(f"    (live publisher: {got:,.0f} readings/s)", flush=True)
    return 0


def bare_lag(port: int, n: int, n_series: int, rate: float, version: str) -> tuple[float, float]:
    """p50 and p99 of publish -> receipt for a bare subscriber at `rate`: the floor that the
    publisher, the broker and this machine's scheduling put under the worker's lag.

    The callback only notes the arrival time and keeps the payload; decoding JSON there cost
    ~100 us a message, and at 9,000 messages/s the subscriber's own backlog (150 ms) had been
    measured as the floor."""
    arrivals: list[tuple[float, bytes]] = []

    def on_message(client: object, userdata: object, msg: object) -> None:
        arrivals.append((time.time(), msg.payload))  # type: ignore[attr-defined]

    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=PROTOCOL[version])
    c.on_message = on_message
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port)
    c.subscribe("sensors/#", qos=1)
    c.loop_start()
    done.wait(10)
    live_publisher(port, n, n_series, rate).wait()
    deadline = time.monotonic() + 30
    while len(arrivals) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    c.disconnect()
    c.loop_stop()
    lags = [t - json.loads(payload)["ts"] for t, payload in arrivals]
    p50, p99 = np.percentile(np.array(lags), [50, 99])
    return float(p50), float(p99)


def cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of process `pid` (default: this one) so far."""
    fields = Path(f"/proc/{pid or os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_drain(port: int, client_id: str, expected: int, version: str) -> tuple[float, float]:
    """Rate at which a bare paho subscriber (auto-ack, counting only) drains its session,
    and its CPU microseconds per message."""
    count = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(client: object, userdata: object, msg: object) -> None:
        nonlocal count, first, last
        if count == 0:
            first = time.perf_counter()
        count += 1
        if count >= expected:
            last = time.perf_counter()
            done.set()

    c = client(client_id, version)
    c.on_message = on_message
    cpu0 = cpu_s()
    connect(c, port, version)
    c.loop_start()
    if not done.wait(600):
        raise RuntimeError(f"bare subscriber got {count} of {expected}")
    cpu = cpu_s() - cpu0
    c.disconnect()
    c.loop_stop()
    return (expected - 1) / (last - first), cpu / expected * 1e6


class Worker(WorkerProcess):
    """`iotad run` as a subprocess with its own metrics port (the tests' `WorkerProcess`,
    with the benchmark's settings and a few readings of its state)."""

    def __init__(
        self,
        broker: Mosquitto,
        model: Path,
        worker_id: str,
        workdir: Path,
        version: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {
            "IOTAD_MQTT__SESSION_EXPIRY_S": str(SESSION_EXPIRY_S),
            "IOTAD_MQTT__RECEIVE_MAXIMUM": str(RECEIVE_MAXIMUM),
            "IOTAD_DETECTION__MAX_SERIES": "200000",
            "IOTAD_MQTT__VERSION": version,
            "IOTAD_LOG__LEVEL": "WARNING",
            **(extra_env or {}),
        }
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(broker, model, workdir, worker_id, env)
        self.start()

    def samples(self) -> dict[str, float]:
        """/metrics as ``{name + json labels: value}``."""
        return {
            name + (json.dumps(dict(labels), sort_keys=True) if labels else ""): value
            for (name, labels), value in self.metrics().items()
        }

    def readings(self) -> float:
        return self.sample("iotad_readings_total")

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def terminate(self) -> int:
        """SIGTERM, as an operator would; returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(30)


def drain_rate(worker: Worker, expected: int) -> tuple[float, float]:
    """Readings/s over the drain and the worker's CPU microseconds per reading.

    /metrics is polled 4 times a second (each scrape costs the worker CPU, so polling much
    faster would slow down what it measures); the rate is the slope between the first and
    the last poll that saw the drain in progress, so the poll interval adds no bias.
    """
    points: list[tuple[float, float]] = []
    cpu0 = cpu_s(worker.proc.pid)
    while True:
        n = worker.readings()
        now = time.perf_counter()
        if n >= expected:
            cpu = cpu_s(worker.proc.pid) - cpu0
            break
        if n > 0:
            points.append((now, n))
        if worker.proc.poll() is not None:
            raise RuntimeError("worker died")
        time.sleep(0.25)
    if len(points) < 2:
        raise RuntimeError("the drain was too short to measure; use more --readings")
    (t0, n0), (t1, n1) = points[0], points[-1]
    return (n1 - n0) / (t1 - t0), cpu / expected * 1e6


def lag_quantiles(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """p50/p99 of iotad_lag_seconds between two scrapes (linear within a bucket)."""
    buckets = []
    for key, v in after.items():
        if key.startswith("iotad_lag_seconds_bucket"):
            le = json.loads(key[len("iotad_lag_seconds_bucket") :])["le"]
            bound = math.inf if le == "+Inf" else float(le)
            buckets.append((bound, v - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1]
    out = {}
    for q in (0.5, 0.99):
        rank, prev_bound, prev_count = q * total, 0.0, 0.0
        for bound, count in buckets:
            if count >= rank:
                if math.isinf(bound):
                    out[f"p{int(q * 100)}"] = prev_bound
                else:
                    frac = (rank - prev_count) / max(count - prev_count, 1e-9)
                    out[f"p{int(q * 100)}"] = prev_bound + frac * (bound - prev_bound)
                break
            prev_bound, prev_count = bound, count
    out["n"] = total
    return out


def train_model(workdir: Path, n_series: int = 50, steps: int = 1500) -> Path:
    """A small LSTM (window 32, 32 units) trained on the benchmark's own kind of series."""
    from training.pipeline import TrainConfig, train

    rng = np.random.default_rng(1)
    names = series_names(n_series)
    lines = ["ts,device,metric,value"]
    for i in range(steps):
        for k, (device, metric) in enumerate(names):
            lines.append(f"{1_600_000_000 + i},{device},{metric},{value(k, i, rng):.4f}")
    workdir.mkdir(parents=True, exist_ok=True)
    csv = workdir / "train.csv"
    csv.write_text("\n".join(lines) + "\n")
    cfg = TrainConfig(
        data=[csv],
        out=workdir / "model",
        window=32,
        units=(32,),
        epochs=3,
        quiet=True,
        seed=0,
        plots=False,
        max_windows=40_000,
    )
    return Path(train(cfg).artifact_dir)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="model artifact (default: train a small one)")
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--rss-series", type=int, default=100_000)
    ap.add_argument("--lag-seconds", type=float, default=10.0)
    ap.add_argument("--mqtt-version", choices=["5", "3.1.1"], default="5")
    ap.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="IOTAD_X=V",
        help="extra setting for the worker (repeatable), e.g. IOTAD_LINGER_S=0",
    )
    ap.add_argument("--publish-live", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publish_live:
        port, n, n_series, rate = args.publish_live
        return run_live_publisher(int(port), int(n), int(n_series), float(rate))
    cmd = "OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/throughput.py " + " ".join(sys.argv[1:])
    version = args.mqtt_version
    extra_env = dict(kv.split("=", 1) for kv in args.worker_env)
    work = Path(tempfile.mkdtemp(prefix="iotad-bench-"))
    broker = Mosquitto(
        work / "broker",
        conf=[
            f"max_queued_messages {args.readings + 10_000}",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
        ],
    )
    workers: list[Worker] = []
    try:
        model = args.model or train_model(work)
        broker.start()
        t0 = time.time() - 86_400.0  # a day ago: live readings later are in order
        messages = backlog(args.readings, args.series, t0)
        n = len(messages)
        print(
            f"backlog: {n} readings over {args.series} series, QoS 1, MQTT {version}, "
            f"mosquitto on {broker.port}"
        )

        make_session(broker.port, "bench-bare", version)
        pub = publish(broker.port, messages)
        bare, bare_cpu = bare_drain(broker.port, "bench-bare", n, version)
        print(
            f"(a) bare paho subscriber: {bare:,.0f} msg/s, {bare_cpu:.1f} us CPU/msg "
            f"(preload published at {pub:,.0f}/s)"
        )

        make_session(broker.port, "bench-worker", version)
        publish(broker.port, messages)
        worker = Worker(broker, model, "bench-worker", work, version, extra_env)
        workers.append(worker)
        ready_s = worker.wait_ready(poll_s=0.01)
        rate, worker_cpu = drain_rate(worker, n)
        s = worker.samples()
        print(
            f"(b) iotad run, full detection: {rate:,.0f} readings/s, "
            f"{worker_cpu:.1f} us CPU/reading "
            f"(scored {s.get('iotad_readings_scored_total', 0):,.0f}, "
            f"mean batch {s['iotad_batch_size_sum'] / max(s['iotad_batch_size_count'], 1):,.0f}, "
            f"anomalies {s.get('iotad_anomalies_total', 0):,.0f}, "
            f"alert events {sum(v for k, v in s.items() if k.startswith('iotad_alert_ev')):,.0f})"
        )
        print(
            f"    ratio (b)/(a): {rate / bare:.2f}  (target >= 0.70); "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        print(f"    start to ready: {ready_s:.2f} s (process start -> /readyz 200)")

        live_rate = rate / 2
        n_live = int(live_rate * args.lag_seconds)
        before = worker.samples()
        live_publisher(broker.port, n_live, args.series, live_rate).wait()
        target = before["iotad_readings_total"] + n_live
        while worker.readings() < target:
            time.sleep(0.25)
        q = lag_quantiles(before, worker.samples())
        print(
            f"    lag at {live_rate:,.0f} readings/s live (half rate): "
            f"p50 {q['p50'] * 1000:.1f} ms, "
            f"p99 {q['p99'] * 1000:.1f} ms over {q['n']:,.0f} readings "
            "(ts -> decision, interpolated in iotad_lag_seconds buckets)"
        )
        rss_before = worker.rss_mb()
        extra = args.rss_series - args.series
        gateway = []
        for start in range(0, extra, 1000):
            batch = [
                {"device": f"rss-{k // 10:06d}", "metric": f"m{k % 10}", "value": 1.0}
                for k in range(start, min(start + 1000, extra))
            ]
            gateway.append(("sensors/gateway", json.dumps(batch).encode()))
        target = worker.readings() + extra
        publish(broker.port, gateway)
        while worker.readings() < target:
            time.sleep(0.25)
        time.sleep(1.5)  # series gauges refresh once a second
        s = worker.samples()
        print(
            f"    RSS: {rss_before:.0f} MB with {args.series:,} series, {worker.rss_mb():.0f} MB "
            f"with {s['iotad_series_active']:,.0f} active series"
        )
        code = worker.terminate()
        print(f"    worker exit code {code} after SIGTERM")
        p50, p99 = bare_lag(broker.port, n_live, args.series, live_rate, version)
        print(
            f"    the live stream to a bare subscriber instead: p50 {p50 * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms (publisher + broker + scheduling floor)"
        )
        print(f"reproduce: {cmd}")
        return 0
    finally:
        for w in workers:
            w.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
