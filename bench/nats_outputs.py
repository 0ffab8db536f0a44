"""Alerts through the JetStream output stream: the worker's outbox against awaiting each ack.

Starts its own nats-server (JetStream, a temp store) on a free loopback port, creates the
output stream as a worker does, and measures:

1. the outbox (`detector.worker.nats_outbox.Outbox`): N QoS 1 publishes boxed from another thread,
   as the detection thread does, sent in rounds whose publish acks are awaited together;
   publishes/s until every delivery is done (all must be confirmed);
2. nats-py's ``js.publish`` awaited one by one (what a naive sink would do): publishes/s.

Usage::

    .venv/bin/python bench/nats_outputs.py [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.config.nats_settings import NatsSettings
from detector.worker.nats_outbox import Outbox
from detector.worker.nats_stream import ensure_output_stream
from support.nats_servers import NatsCluster

SUBJECTS = ["alerts.>", "iotad.deadletter"]
BODY = b'{"id":"x","state":"firing","device":"m01","metric":"temp","ts":1.0,"value":1.0}'


async def outbox_rate(url: str, n: int) -> float:
    import nats

    nc = await nats.connect(url)
    await ensure_output_stream(nc.jetstream(), NatsSettings(urls=[url]), SUBJECTS)
    outbox = Outbox({"Iotad-Worker": "bench"})
    loop = asyncio.get_running_loop()
    task = await outbox.start(loop, nc)
    deliveries = []
    t0 = time.perf_counter()

    def detection_thread() -> None:
        for i in range(n):
            d = outbox.publish(f"alerts.m{i % 100:02d}.temp", BODY, 1)
            assert d is not None
            deliveries.append(d)

    thread = threading.Thread(target=detection_thread)
    thread.start()
    while thread.is_alive() or not all(d.done() for d in deliveries):
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    lost = sum(d.lost() for d in deliveries)
    assert not lost, f"{lost} lost: refused {outbox.refused}, retried {outbox.retried}"
    task.cancel()
    await nc.close()
    return n / elapsed


async def one_by_one_rate(url: str, n: int) -> float:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    t0 = time.perf_counter()
    for i in range(n):
        await js.publish(f"alerts.m{i % 100:02d}.rpm", BODY)
    elapsed = time.perf_counter() - t0
    await nc.close()
    return n / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Below MAX_UNCONFIRMED: past it the outbox gives up on new publishes at once (by design).
    ap.add_argument("--messages", type=int, default=8_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = NatsCluster(Path(tmp), size=1).start()
        try:
            url = cluster.nodes[0].url
            batched = asyncio.run(outbox_rate(url, args.messages))
            single = asyncio.run(one_by_one_rate(url, args.messages // 4))
        finally:
            cluster.stop()
    print(f"outbox, acks awaited together: {batched:,.0f} alerts/s ({args.messages} confirmed)")
    print(f"js.publish awaited one by one: {single:,.0f} alerts/s ({args.messages // 4})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
