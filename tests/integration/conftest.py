"""Fixtures of the NATS integration tests: fresh servers per test (JetStream state, streams
and buckets never leak from one test to the next)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.nats_servers import NATS_SERVER, NatsCluster


def _need_nats() -> None:
    if not Path(NATS_SERVER).exists():
        pytest.skip("nats-server is not installed (scripts/system-deps.sh installs it)")
    pytest.importorskip("nats", reason="nats-py is not installed")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsCluster]:
    """One nats-server with JetStream, the MQTT listener and the partition mapping."""
    _need_nats()
    cluster = NatsCluster(tmp_path / "nats", size=1).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three routed nats-servers with JetStream, MQTT listeners and the partition mapping."""
    _need_nats()
    cluster = NatsCluster(tmp_path / "nats", size=3).start()
    yield cluster
    cluster.stop()
