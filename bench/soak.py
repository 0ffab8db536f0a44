"""Soak: `iotad run` under a steady live stream of many series for many minutes.

Starts its own mosquitto on a free loopback port and an ``iotad run`` worker (checkpoints
on, every 60 s), then publishes ``--rate`` readings/s spread round-robin over ``--series``
series (``--metrics`` per device, one ``{"ts", "values"}`` message per device and round),
QoS 1 with a bounded number of unacknowledged messages. Every minute it prints the worker's
RSS, ingest queue depth, lag (reading ts -> decision, p50/p99 of that minute), readings
published and processed, CPU and series. At the end it stops publishing, lets the worker
drain and checks:

- no lost readings: published == accepted + rejected (``iotad_readings_*`` counters);
- RSS flat: the peak of any minute after the warm-up (``--warmup-minutes``: series allocated,
  windows filled, a checkpoint or two taken, whose snapshot is a transient copy of the state)
  is at most 5% above the warm-up's peak.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/soak.py [--minutes 10] [--series 100000]
        [--rate 10000] [--checkpoint-interval 60] [--model DIR]

Without ``--model`` a small LSTM (window 32, 32 units) is trained first (TensorFlow, ~30 s).
Exit code 0 when both checks pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from bench.throughput import Worker, cpu_s, lag_quantiles, train_model  # noqa: E402
from support.mosquitto import Mosquitto  # noqa: E402

METRICS = ("temperature", "vibration", "pressure", "current", "speed", "flow", "humidity", "rpm")
MAX_OUTSTANDING = 5000  # unacknowledged QoS 1 publishes (paho stalls past 65,535)
RSS_TOLERANCE = 0.05


class SteadyPublisher(threading.Thread):
    """Publishes one message per device per round, paced to `rate` readings/s, until stopped.

    Each message carries `n_metrics` readings with the current time as ts. `published`
    counts readings whose message the broker acknowledged.
    """

    def __init__(self, port: int, n_series: int, n_metrics: int, rate: float) -> None:
        super().__init__(name="soak-publisher", daemon=True)
        self.n_devices = math.ceil(n_series / n_metrics)
        self.metrics = METRICS[:n_metrics]
        self.n_series = n_series
        self.msg_rate = rate / n_metrics
        self.sent_readings = 0
        self._stop_event = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        # No paho in-flight limit (it rescans its list on every PUBACK); our own bound instead.
        self.client.max_inflight_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._outstanding: collections.deque[tuple[mqtt.MQTTMessageInfo, int]] = collections.deque()

    def payload(self, device: int, now: float) -> tuple[str, bytes, int]:
        """The topic, body and reading count of `device`'s message at time `now`."""
        names = self.metrics
        first = device * len(names)
        k = min(len(names), self.n_series - first)
        phase = device * 0.7  # every series its own sine, values vary a little per device
        wave = [50 + 10 * math.sin(now / 300 + phase + j) + (device + j) % 7 / 99 for j in range(k)]
        values = ", ".join(f'"{names[j]}": {wave[j]:.3f}' for j in range(k))
        body = f'{{"ts": {now:.6f}, "values": {{{values}}}}}'.encode()
        return f"sensors/machine-{device:06d}", body, k

    def run(self) -> None:
        started = time.monotonic()
        sent_msgs = 0
        device = 0
        while not self._stop_event.is_set():
            due = int((time.monotonic() - started) * self.msg_rate)
            if sent_msgs >= due:
                time.sleep(0.005)
                continue
            now = time.time()
            for _ in range(min(due - sent_msgs, 500)):
                topic, body, k = self.payload(device, now)
                info = self.client.publish(topic, body, qos=1)
                self._outstanding.append((info, k))
                self.sent_readings += k
                sent_msgs += 1
                device = (device + 1) % self.n_devices
                while len(self._outstanding) > MAX_OUTSTANDING:
                    self._outstanding[0][0].wait_for_publish(60)
                    self._outstanding.popleft()

    def stop(self) -> int:
        """Stop, wait for every PUBACK, disconnect; returns readings published."""
        self._stop_event.set()
        self.join()
        for info, _ in self._outstanding:
            info.wait_for_publish(60)
        self.client.disconnect()
        self.client.loop_stop()
        return self.sent_readings


def counted(s: dict[str, float]) -> tuple[float, float]:
    """``(accepted, rejected)`` readings from a scrape."""
    rejected = sum(v for k, v in s.items() if k.startswith("iotad_readings_rejected_total"))
    return s.get("iotad_readings_accepted_total", 0.0), rejected


def report_line(
    minute: int,
    pub: SteadyPublisher,
    before: dict,
    after: dict,
    cpu: float,
    rss: float,
) -> str:
    """One line of the per-minute table (`rss`: the peak RSS of the minute, MB)."""
    q = lag_quantiles(before, after) if after.get("iotad_readings_total") else {}
    ckpt_n = after.get("iotad_checkpoint_seconds_count", 0.0)
    ckpt = after.get("iotad_checkpoint_seconds_sum", 0.0) / ckpt_n if ckpt_n else float("nan")
    processed = after.get("iotad_readings_total", 0.0) - before.get("iotad_readings_total", 0.0)
    line = (
        f"{minute:>4} {pub.sent_readings:>11,} {processed:>11,.0f} {rss:>8.1f} "
        f"{after.get('iotad_ingest_queue_depth', 0):>6.0f} "
        f"{q.get('p50', float('nan')) * 1000:>8.1f} {q.get('p99', float('nan')) * 1000:>8.1f} "
        f"{cpu:>5.0f}% {after.get('iotad_series_active', 0):>8,.0f} "
        f"{after.get('iotad_series_warming', 0):>8,.0f} {ckpt:>7.2f}"
    )
    return line


HEADER = (
    " min   published   processed  rss_max  queue  p50_ms   p99_ms   cpu   series  warming  ckpt_s"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to publish")
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=10_000.0, help="readings per second")
    ap.add_argument("--metrics", type=int, default=5, help="readings per message (1-8)")
    ap.add_argument(
        "--warmup-minutes",
        type=int,
        default=2,
        help="RSS baseline: the peak over these first minutes (include a checkpoint or two)",
    )
    ap.add_argument("--checkpoint-interval", type=float, default=60.0, help="seconds")
    ap.add_argument("--model", type=Path, help="model artifact (default: train a small one)")
    args = ap.parse_args()
    if not 1 <= args.metrics <= len(METRICS):
        ap.error(f"--metrics must be 1 to {len(METRICS)}")
    work = Path(tempfile.mkdtemp(prefix="iotad-soak-"))
    broker = Mosquitto(work / "broker", conf=["max_queued_messages 1000000", "max_queued_bytes 0"])
    worker: Worker | None = None
    try:
        model = args.model or train_model(work)
        broker.start()
        env = {
            "IOTAD_CHECKPOINT__PATH": str(work / "state.npz"),
            "IOTAD_CHECKPOINT__INTERVAL_S": str(args.checkpoint_interval),
            "IOTAD_DETECTION__MAX_SERIES": str(max(args.series, 1)),
        }
        worker = Worker(broker.port, model, "soak-worker", work, "5", env)
        worker.wait_ready()
        pub = SteadyPublisher(broker.port, args.series, args.metrics, args.rate)
        print(
            f"soak: {args.series:,} series, {args.rate:,.0f} readings/s "
            f"({args.metrics} per message), {args.minutes:g} min, mosquitto on {broker.port}, "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        print(HEADER)
        pub.start()
        started = time.monotonic()
        before, cpu_before, t_before = worker.samples(), cpu_s(worker.proc.pid), time.monotonic()
        rss_by_minute: list[float] = []
        minute = 0
        while minute < math.ceil(args.minutes):
            minute += 1
            end = started + min(minute, args.minutes) * 60
            peak = 0.0  # RSS is sampled twice a second: a checkpoint's transient counts
            while time.monotonic() < end:
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {worker.proc.returncode}")
                peak = max(peak, worker.rss_mb())
                time.sleep(0.5)
            after, cpu_after, t_after = worker.samples(), cpu_s(worker.proc.pid), time.monotonic()
            cpu = 100 * (cpu_after - cpu_before) / max(t_after - t_before, 1e-9)
            print(report_line(minute, pub, before, after, cpu, peak), flush=True)
            rss_by_minute.append(peak)
            before, cpu_before, t_before = after, cpu_after, t_after
        published = pub.stop()
        deadline = time.monotonic() + 120
        while worker.readings() < published and time.monotonic() < deadline:
            time.sleep(0.2)
        final = worker.samples()
        accepted, rejected = counted(final)
        lost = published - (accepted + rejected)
        print(
            f"published {published:,} readings; accepted {accepted:,.0f} + rejected "
            f"{rejected:,.0f} = {accepted + rejected:,.0f}; lost {lost:,.0f}"
        )
        warm = rss_by_minute[: args.warmup_minutes]
        rest = rss_by_minute[args.warmup_minutes :]
        growth = (max(rest) / max(warm) - 1) if warm and rest else float("nan")
        flat = not rest or growth <= RSS_TOLERANCE
        print(
            f"RSS peak {max(warm) if warm else float('nan'):.1f} MB in {len(warm)} warm-up min, "
            f"max {max(rest) if rest else float('nan'):.1f} MB after: growth "
            f"{growth * 100:+.1f}% (limit {RSS_TOLERANCE * 100:.0f}%)"
            + ("" if rest else " (run longer than the warm-up to judge)")
        )
        code = worker.stop()
        worker = None
        after_stop = (work / "state.npz").stat().st_size / 2**20
        print(f"worker exit code {code}; final checkpoint {after_stop:.1f} MB")
        ok = lost == 0 and flat and code == 0
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if worker is not None:
            worker.kill()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
