"""Workers on NATS JetStream: drain rate against a bare nats-py consumer, 1-3 workers, lag.

Starts its own nats-server (JetStream, the partition mapping, a temp store) on a free
loopback port and measures, on the same backlog each time (N readings over S series,
published as NATS ``sensors.{device}.{metric}`` and partitioned by the server):

1. a bare nats-py consumer in this process: one durable pull consumer per partition,
   fetching 1,000 at a time and acking every message, nothing else (readings/s, CPU us);
   and a bare consumer that pulls the way the worker does (one open request per partition,
   each message acked in the inbox callback as it comes);
2. one ``iotad run`` (IOTAD_SOURCE=nats, shard 0/1) over the backlog: readings/s and the
   ratios to both bare consumers (target >= 0.8);
3. 2 and 3 workers (shards i/2, i/3) started together over the backlog: aggregate
   readings/s and worker CPU seconds per reading (on 2 cores the workers share the cores,
   so the aggregate cannot grow much: absolute scaling needs more cores than this machine);
4. p50/p99 lag from publish to decision (``iotad_lag_seconds``: the readings carry their
   publish time as ts) with one worker fed live at half its drain rate.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/nats_throughput.py [--model DIR]
        [--readings N] [--series S] [--partitions P]

Without ``--model`` a small LSTM (window 32, 32 units) is trained first (~30 s, TensorFlow),
the same as bench/throughput.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.throughput import backlog as mqtt_backlog  # noqa: E402
from bench.throughput import cpu_s, lag_quantiles, series_names, train_model, value  # noqa: E402
from support.nats_servers import NatsCluster  # noqa: E402
from support.worker_process import WorkerProcess  # noqa: E402

STREAM = "SENSORS"
POLL_S = 0.25


def backlog(n: int, n_series: int, t0: float) -> list[tuple[str, bytes]]:
    """`bench.throughput`'s backlog, its MQTT topics as the NATS subjects they map to."""
    return [(topic.replace("/", "."), body) for topic, body in mqtt_backlog(n, n_series, t0)]


async def _stream_count(js: Any) -> int:
    return int((await js.stream_info(STREAM)).state.messages)


async def publish_backlog(url: str, messages: list[tuple[str, bytes]]) -> float:
    """Publish (core NATS: the mapping applies, the stream captures) and wait until the
    stream holds them all; returns seconds."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    before = await _stream_count(js)
    started = time.perf_counter()
    for i, (subject, body) in enumerate(messages):
        await nc.publish(subject, body)
        if i % 5000 == 4999:
            await nc.flush()
            # Stay within what the stream takes in: a core publisher can outrun it.
            while await _stream_count(js) < before + i - 20_000:
                await asyncio.sleep(0.01)
    await nc.flush()
    while await _stream_count(js) < before + len(messages):
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


async def fresh_stream(url: str) -> None:
    """Delete the stream (its consumers with it) and the checkpoints, create the stream
    again: every run starts from the same empty state, whatever the previous one left."""
    import nats
    from nats.js import api

    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream(STREAM)
    with contextlib.suppress(Exception):
        await js.delete_key_value("iotad-checkpoints")
    await js.add_stream(
        api.StreamConfig(
            name=STREAM,
            subjects=["part.*.sensors.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
        )
    )
    await nc.close()


async def bare_drain(url: str, partitions: int, expected: int) -> tuple[float, float]:
    """A consumer that only acks: one pull consumer per partition, fetch 1,000, ack each."""
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js import api

    nc = await nats.connect(url)
    js = nc.jetstream()
    subs = []
    for p in range(partitions):
        cfg = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=20_000)
        subs.append(
            await js.pull_subscribe(
                f"part.{p}.sensors.>", durable=f"bare-p{p:02d}", stream=STREAM, config=cfg
            )
        )
    count = 0
    first = last = 0.0
    done = asyncio.Event()

    async def pull(sub: Any) -> None:
        nonlocal count, first, last
        while not done.is_set():
            try:
                msgs = await sub.fetch(1000, timeout=1.0)
            except (NatsTimeout, TimeoutError):
                continue
            if count == 0:
                first = time.perf_counter()
            for m in msgs:
                await nc.publish(m.reply, b"+ACK")
            count += len(msgs)
            if count >= expected:
                last = time.perf_counter()
                done.set()

    cpu0 = cpu_s()
    tasks = [asyncio.ensure_future(pull(s)) for s in subs]
    await asyncio.wait_for(done.wait(), 600)
    cpu = cpu_s() - cpu0
    for t in tasks:
        t.cancel()
    await nc.flush()
    for p in range(partitions):
        await js.delete_consumer(STREAM, f"bare-p{p:02d}")
    await nc.close()
    return expected / (last - first), cpu / expected * 1e6


async def bare_pull(url: str, partitions: int, expected: int) -> tuple[float, float]:
    """A consumer that only acks, pulling the way the worker does (`NatsSource._pull`): one
    open request of 1,000 per partition, messages acked in the inbox callback as they come,
    the next request once one is filled or expired."""
    import nats
    from nats.js import api

    nc = await nats.connect(url)
    js = nc.jetstream()
    count = 0
    first = last = 0.0
    done = asyncio.Event()

    async def one(p: int) -> None:
        nonlocal count, first, last
        durable = f"barepull-p{p:02d}"
        await js.add_consumer(
            STREAM,
            api.ConsumerConfig(
                durable_name=durable,
                filter_subject=f"part.{p}.sensors.>",
                ack_policy=api.AckPolicy.EXPLICIT,
                max_ack_pending=20_000,
            ),
        )
        got = asyncio.Event()
        state = {"n": 0}

        async def on_msg(msg: Any) -> None:
            nonlocal count, first, last
            if msg.headers and "Status" in msg.headers:
                got.set()
                return
            await nc.publish(msg.reply, b"+ACK")
            if count == 0:
                first = time.perf_counter()
            count += 1
            state["n"] += 1
            if state["n"] >= 1000:
                got.set()
            if count >= expected:
                last = time.perf_counter()
                done.set()

        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=on_msg)
        while not done.is_set():
            got.clear()
            state["n"] = 0
            await nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}",
                b'{"batch":1000,"expires":5000000000}',
                reply=inbox,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got.wait(), 6)

    cpu0 = cpu_s()
    tasks = [asyncio.ensure_future(one(p)) for p in range(partitions)]
    await asyncio.wait_for(done.wait(), 600)
    cpu = cpu_s() - cpu0
    for t in tasks:
        t.cancel()
    await nc.flush()
    await nc.close()
    return expected / (last - first), cpu / expected * 1e6


def start_workers(
    cluster: NatsCluster, model: Path, work: Path, count: int, partitions: int, tag: str
) -> list[WorkerProcess]:
    workers = []
    for i in range(count):
        w = WorkerProcess(
            cluster,  # type: ignore[arg-type]
            model,
            work,
            f"{tag}-w{i}",
            env={
                "IOTAD_SOURCE": "nats",
                "IOTAD_SHARD": f"{i}/{count}",
                "IOTAD_NATS__URLS": cluster.urls,
                "IOTAD_NATS__PARTITIONS": str(partitions),
                "IOTAD_DETECTION__MAX_SERIES": "200000",
                "IOTAD_LOG__LEVEL": "WARNING",
            },
        )
        workers.append(w.start())
    return workers


def readings_of(w: WorkerProcess) -> float:
    try:
        return w.sample("iotad_readings_total")
    except OSError:  # not listening yet
        return 0.0


def drain(workers: list[WorkerProcess], expected: int) -> tuple[float, float]:
    """Aggregate readings/s (slope between the first and last polls of the drain) and
    worker CPU seconds per reading over the whole drain."""
    pids = [w.proc.pid for w in workers if w.proc is not None]
    cpu0 = sum(cpu_s(p) for p in pids)
    points: list[tuple[float, float]] = []
    while True:
        n = sum(readings_of(w) for w in workers)
        now = time.perf_counter()
        if n >= expected:
            cpu = sum(cpu_s(p) for p in pids) - cpu0
            break
        if n > 0:
            points.append((now, n))
        if any(w.proc is not None and w.proc.poll() is not None for w in workers):
            raise RuntimeError("a worker died:\n" + workers[0].log()[-2000:])
        time.sleep(POLL_S)
    if len(points) < 2:
        raise RuntimeError("the drain was too short to measure; use more --readings")
    (t0, n0), (t1, n1) = points[0], points[-1]
    return (n1 - n0) / (t1 - t0), cpu / expected


def samples(w: WorkerProcess) -> dict[str, float]:
    """/metrics as ``{name + json labels: value}`` (what `lag_quantiles` reads)."""
    return {
        name + (json.dumps(dict(labels), sort_keys=True) if labels else ""): v
        for (name, labels), v in w.metrics().items()
    }


def stop(workers: list[WorkerProcess]) -> None:
    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        w.wait(60)


async def live(url: str, n_series: int, rate: float, seconds: float) -> int:
    """Publish readings stamped with their publish time at `rate`/s for `seconds`."""
    import nats

    nc = await nats.connect(url)
    names = series_names(n_series)
    rng = np.random.default_rng(2)
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        due = int((time.perf_counter() - started) * rate)
        while sent < due:
            k = sent % n_series
            device, metric = names[k]
            body = json.dumps(
                {"ts": time.time(), "value": round(value(k, sent // n_series, rng), 4)}
            ).encode()
            await nc.publish(f"sensors.{device}.{metric}", body)
            sent += 1
        await nc.flush()
        await asyncio.sleep(0.002)
    await nc.close()
    return sent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="model artifact (default: train a small one)")
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--lag-seconds", type=float, default=10.0)
    args = ap.parse_args()
    cmd = "OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/nats_throughput.py " + " ".join(
        sys.argv[1:]
    )
    work = Path(tempfile.mkdtemp(prefix="iotad-nats-bench-"))
    model = args.model or train_model(work / "train")
    cluster = NatsCluster(work / "nats", size=1, partitions=args.partitions).start()
    url = cluster.nodes[0].url
    n = args.readings
    try:
        t0 = time.time() - 86_400
        messages = backlog(n, args.series, t0)
        asyncio.run(fresh_stream(url))
        pub_s = asyncio.run(publish_backlog(url, messages))
        bare_rate, bare_cpu_us = asyncio.run(bare_drain(url, args.partitions, n))
        asyncio.run(fresh_stream(url))
        asyncio.run(publish_backlog(url, messages))
        pull_rate, pull_cpu_us = asyncio.run(bare_pull(url, args.partitions, n))
        rows = []
        for count in (1, 2, 3):
            # Ready and frozen while the backlog goes in, then resumed together: every
            # worker drains the same backlog from the same moment, start-up not counted.
            asyncio.run(fresh_stream(url))
            workers = start_workers(cluster, model, work, count, args.partitions, f"n{count}")
            try:
                for w in workers:
                    w.wait_ready(60)
                    w.signal(signal.SIGSTOP)
                asyncio.run(publish_backlog(url, messages))
                for w in workers:
                    w.signal(signal.SIGCONT)
                rate, cpu = drain(workers, n)
            finally:
                for w in workers:
                    w.signal(signal.SIGCONT)
                stop(workers)
            rows.append((count, rate, cpu))
        one_rate = rows[0][1]
        asyncio.run(fresh_stream(url))
        workers = start_workers(cluster, model, work, 1, args.partitions, "lag")
        try:
            for w in workers:
                w.wait_ready(60)
            time.sleep(1.0)
            before = samples(workers[0])
            sent = asyncio.run(live(url, args.series, one_rate / 2, args.lag_seconds))
            done = before.get("iotad_lag_seconds_count", 0.0) + sent
            deadline = time.monotonic() + 60
            while workers[0].sample("iotad_lag_seconds_count") < done:
                if time.monotonic() > deadline:
                    raise RuntimeError("the live readings were not all decided")
                time.sleep(0.1)
            lag = lag_quantiles(before, samples(workers[0]))
        finally:
            stop(workers)
    finally:
        cluster.stop()
    print(f"# {cmd}")
    print(f"backlog: {n} readings over {args.series} series, {args.partitions} partitions")
    print(f"publish into the stream: {n / pub_s:,.0f} readings/s")
    print(
        f"bare nats-py consumer (fetch 1000, ack each): {bare_rate:,.0f} readings/s, "
        f"{bare_cpu_us:.1f} us CPU per message"
    )
    print(
        f"bare nats-py consumer pulling like the worker (open request of 1000, ack in the "
        f"callback): {pull_rate:,.0f} readings/s, {pull_cpu_us:.1f} us CPU per message"
    )
    print(
        f"1 worker: {one_rate:,.0f} readings/s = {one_rate / bare_rate:.2f} x the fetching "
        f"bare consumer, {one_rate / pull_rate:.2f} x the pulling one (target >= 0.8)"
    )
    for count, rate, cpu in rows:
        print(
            f"{count} worker(s): aggregate {rate:,.0f} readings/s, "
            f"{cpu * 1e6:.1f} us worker CPU per reading "
            f"({cpu / rows[0][2]:.2f} x one worker's)"
        )
    print(
        f"lag publish -> decision at {one_rate / 2:,.0f} readings/s (half of one worker's "
        f"drain), {sent} readings: p50 {lag['p50'] * 1000:.1f} ms, p99 {lag['p99'] * 1000:.1f} ms"
    )
    print(
        f"note: this machine has {os.cpu_count()} cores; the workers and nats-server share "
        "them, so the aggregate cannot scale with workers here: absolute scaling needs a core "
        "or two per worker. What must hold is CPU per reading staying flat."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
