"""The partition hash against a real nats-server, and a worker that refuses a server whose
mapping uses another partition count."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from detector.worker.partitions import partition_of
from support.nats_servers import PARTITIONS, NatsCluster
from tests.conftest import WorkerProcess

DEVICES = [f"dev{i}" for i in range(200)] + ["press-4", "a_b", "Z", "x-1", "héat"]


async def _server_partitions(url: str, devices: list[str]) -> dict[str, int]:
    import nats

    nc = await nats.connect(url)
    got: dict[str, int] = {}
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        parts = msg.subject.split(".")
        got[parts[3]] = int(parts[1])
        if len(got) == len(devices):
            done.set()

    await nc.subscribe("part.*.sensors.*.temp", cb=on_msg)
    await nc.flush()
    for device in devices:
        await nc.publish(f"sensors.{device}.temp", b"1")
    await asyncio.wait_for(done.wait(), 30)
    await nc.close()
    return got


def test_partition_hash_matches_the_server(nats_server: NatsCluster) -> None:
    got = asyncio.run(_server_partitions(nats_server.nodes[0].url, DEVICES))
    assert len(set(got.values())) == PARTITIONS  # the devices spread over every partition
    wrong = {
        d: (p, partition_of(d, PARTITIONS))
        for d, p in got.items()
        if p != partition_of(d, PARTITIONS)
    }
    assert wrong == {}


def test_worker_refuses_a_mapping_with_another_partition_count(
    nats_server: NatsCluster, tiny_artifact: Path, tmp_path: Path
) -> None:
    w = WorkerProcess(
        nats_server,  # type: ignore[arg-type]
        tiny_artifact,
        tmp_path,
        "w-mismatch",
        env={
            "IOTAD_SOURCE": "nats",
            "IOTAD_NATS__URLS": nats_server.urls,
            "IOTAD_NATS__PARTITIONS": str(PARTITIONS * 2),
            "IOTAD_NATS__CONNECT_TIMEOUT_S": "10",
        },
    ).start()
    try:
        code = w.wait(60)
    finally:
        w.stop()
    assert code == 1
    assert "IOTAD_NATS__PARTITIONS = 16" in w.log()
