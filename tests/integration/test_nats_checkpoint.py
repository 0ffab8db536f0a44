"""Partition checkpoints in a real JetStream key-value bucket: written in chunks when a
partition's state is above the server's max payload, read back by whichever shard owns the
partition, old chunks removed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detector.config.nats_settings import NatsSettings
from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.worker.ingest import Intake
from detector.worker.metrics import NatsMetrics
from detector.worker.nats_checkpoint import PartitionCheckpointer, partition_rows
from detector.worker.nats_source import NatsSource
from detector.worker.partitions import Shard
from detector.worker.payloads import PayloadDecoder
from support.nats_servers import PARTITIONS, NatsCluster
from tests.detector.core_fixtures import LastValueForecaster, make_artifact
from tests.detector.worker.test_nats_checkpoint import DEVICES, fed_core
from tests.integration.conftest import _need_nats

pytestmark = pytest.mark.integration
MAX_PAYLOAD = 16_384


@pytest.fixture
def small_payload_server(tmp_path: Path) -> Iterator[NatsCluster]:
    """A server whose max payload (16 KB) is below a partition's state."""
    _need_nats()
    cluster = NatsCluster(tmp_path / "nats", size=1)
    cluster.nodes[0].extra_conf = f"max_payload: {MAX_PAYLOAD}"
    yield cluster.start()
    cluster.stop()


def connect(server: NatsCluster, shard: Shard) -> NatsSource:
    intake = Intake(PayloadDecoder(), queue_size=100, max_batch=100)
    source = NatsSource(
        NatsSettings(urls=[server.nodes[0].url], partitions=PARTITIONS),
        shard,
        intake,
        worker_id=f"t{shard.index}",
        metrics=NatsMetrics(CollectorRegistry()),
        status_subject="iotad/status/t",
    )
    source.start()
    return source


def checkpointer(source: NatsSource) -> PartitionCheckpointer:
    return PartitionCheckpointer(
        source,
        bucket="iotad-checkpoints",
        replicas=1,
        partitions=PARTITIONS,
        owned=source.partitions,
        interval_s=60,
        registry=CollectorRegistry(),
    )


async def _keys(source: NatsSource) -> dict[str, bytes]:
    """Every live key of the checkpoint bucket and its value.

    Listed from the bucket's stream, not with `kv.keys()`: nats-py's watcher behind it can
    end its listing before the entries already sent to it arrive (nats.py issue #842), and
    once raised NoKeysError on a full bucket here (CI, 2026-12-01).
    """
    from nats.js.errors import NotFoundError

    kv = await source.js.key_value("iotad-checkpoints")
    prefix = "$KV.iotad-checkpoints."
    info = await source.js.stream_info("KV_iotad-checkpoints", subjects_filter=prefix + ">")
    out = {}
    for subject in sorted(info.state.subjects or {}):
        key = subject.removeprefix(prefix)
        try:
            out[key] = (await kv.get(key)).value or b""
        except NotFoundError:  # deleted or purged: its marker is all that is left
            continue
    return out


def fresh_core() -> DetectionCore:
    return DetectionCore(make_artifact(window_len=4), LastValueForecaster(), DetectionConfig())


def bucket(source: NatsSource) -> dict[str, Any]:
    return source.run(_keys(source), 30)


def test_chunked_checkpoints_follow_their_partitions(small_payload_server: NatsCluster) -> None:
    core = fed_core()
    one = connect(small_payload_server, Shard(0, 1))
    try:
        cp = checkpointer(one)
        assert cp.save(core)
        stored = bucket(one)
        manifests = [k for k, v in stored.items() if "." not in k and v.startswith(b"{")]
        assert manifests, "no partition was big enough to be chunked"
        assert all(len(v) <= MAX_PAYLOAD for v in stored.values())
        first = set(stored)
        assert cp.save(core)  # a second generation replaces the first one's chunks
        second = set(bucket(one))
        chunk_keys = {k for k in second if "." in k}
        assert chunk_keys and not (chunk_keys & {k for k in first if "." in k})
    finally:
        one.close()
    restored: list[str] = []
    for i in range(2):
        source = connect(small_payload_server, Shard(i, 2))
        try:
            new = fresh_core()
            n = checkpointer(source).restore(new)
            keys = new.snapshot()["keys"]
            assert n == len(keys) > 0
            assert set(partition_rows(keys, PARTITIONS).tolist()) <= set(source.partitions)
            restored.extend(str(k) for k in keys)
        finally:
            source.close()
    assert sorted(restored) == sorted(f"{d}/{m}" for d in DEVICES for m in ("temp", "rpm"))


def test_a_corrupt_partition_starts_cold_alone(small_payload_server: NatsCluster) -> None:
    source = connect(small_payload_server, Shard(0, 1))
    try:
        cp = checkpointer(source)
        assert cp.save(fed_core())

        async def spoil() -> None:
            kv = await source.js.key_value("iotad-checkpoints")
            await kv.put("p03", b"PK not a zip at all")

        source.run(spoil(), 30)
        new = fresh_core()
        n = checkpointer(source).restore(new)
        keys = new.snapshot()["keys"]
        lost = sum(
            1 for d in DEVICES if int(partition_rows(np.array([f"{d}/x"]), PARTITIONS)[0]) == 3
        )
        assert lost > 0
        assert n == len(DEVICES) * 2 - 2 * lost == len(keys)
    finally:
        source.close()


def test_partitions_of_another_model_version_are_carried_over(
    small_payload_server: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A new artifact (another version, a longer window) takes every partition's state: one
    line says so, nothing starts cold (docs/model-lifecycle.md)."""
    import dataclasses
    import logging

    source = connect(small_payload_server, Shard(0, 1))
    try:
        assert checkpointer(source).save(fed_core())
        art = dataclasses.replace(make_artifact(window_len=6), version="v2")
        new = DetectionCore(art, LastValueForecaster(), DetectionConfig())
        with caplog.at_level(logging.INFO, logger="iotad.checkpoint"):
            n = checkpointer(source).restore(new)
        assert n == len(DEVICES) * 2 == new.active_series
        lines = [r.getMessage() for r in caplog.records if "carried over" in r.getMessage()]
        assert len(lines) == 1 and "from model test-model to v2" in lines[0]
    finally:
        source.close()
