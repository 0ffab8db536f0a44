"""Real nats-server processes for tests and benchmarks: one server or a 3-node cluster, with
JetStream, the MQTT listener and the partition mapping, on free loopback ports in temp
directories (never the services on 4222/1883). Plus a NATS subscriber that gathers messages
with their headers.

The mapping is the one docs/scale-out.md gives, with P = `PARTITIONS`:
``sensors.*.*`` -> ``part.{{partition(P,1)}}.sensors.{{wildcard(1)}}.{{wildcard(2)}}``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.ports import free_port, wait_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
PARTITIONS = 8


def mapping_conf(partitions: int) -> str:
    return (
        "mappings = {\n"
        f'  "sensors.*.*": "part.{{{{partition({partitions},1)}}}}.sensors.'
        '{{wildcard(1)}}.{{wildcard(2)}}"\n'
        f'  "sensors.*": "part.{{{{partition({partitions},1)}}}}.sensors.{{{{wildcard(1)}}}}"\n'
        "}\n"
    )


class NatsNode:
    """One nats-server: client port, MQTT port, optional cluster routes."""

    def __init__(self, workdir: Path, name: str, partitions: int, extra_conf: str = "") -> None:
        self.workdir = workdir
        self.name = name
        self.partitions = partitions
        self.host = "127.0.0.1"
        self.port = free_port()
        self.mqtt_port = free_port()
        self.cluster_port = free_port()
        self.extra_conf = extra_conf
        self.routes: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def config(self) -> str:
        store = self.workdir / f"js-{self.name}"
        conf = [
            f"server_name: {self.name}",
            f"listen: {self.host}:{self.port}",
            f'jetstream {{ store_dir: "{store}" }}',
            f"mqtt {{ listen: {self.host}:{self.mqtt_port} }}",
            mapping_conf(self.partitions),
            self.extra_conf,
        ]
        if self.routes:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            conf.append(
                f"cluster {{ name: iotad-test, listen: 127.0.0.1:{self.cluster_port}, "
                f"routes: [{routes}] }}"
            )
        return "\n".join(conf) + "\n"

    def start(self) -> NatsNode:
        path = self.workdir / f"{self.name}.conf"
        path.write_text(self.config())
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 (child owns it)
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(path)], stdout=log, stderr=log)
        wait_port(self.port, 20.0)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.workdir / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class NatsCluster:
    """`size` nodes (1: a single server, no routes) sharing the mapping of `partitions`."""

    def __init__(self, workdir: Path, size: int = 3, partitions: int = PARTITIONS) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = [NatsNode(workdir, f"n{i}", partitions) for i in range(size)]
        if size > 1:
            for node in self.nodes:
                node.routes = [n.cluster_port for n in self.nodes]
        self.partitions = partitions
        # The MQTT-facing attributes WorkerProcess reads (unused by a NATS worker).
        self.host = "127.0.0.1"
        self.port = self.nodes[0].mqtt_port

    @property
    def urls(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def start(self, timeout_s: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            node.start()
        # Ready once JetStream answers (a cluster first elects its meta leader).
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                run(_account_info(self.nodes[0].url))
                return self
            except Exception:
                if time.monotonic() > deadline:
                    log = self.nodes[0].log()[-3000:]
                    raise RuntimeError("JetStream not ready:\n" + log) from None
                time.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def _account_info(url: str) -> None:
    import nats

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@dataclass(frozen=True)
class NatsMessage:
    subject: str
    data: bytes
    headers: dict[str, str]
    received_s: float = 0.0
    """`time.monotonic()` when the collector got it."""


class NatsCollector:
    """Subscribes to `subjects` on its own loop thread and keeps every message."""

    def __init__(self, url: str, subjects: Sequence[str]) -> None:
        self.messages: list[NatsMessage] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._nc: Any = None
        asyncio.run_coroutine_threadsafe(self._start(url, subjects), self._loop).result(20)

    async def _start(self, url: str, subjects: Sequence[str]) -> None:
        import nats

        self._nc = await nats.connect(url.split(","), max_reconnect_attempts=-1)

        async def on_msg(msg: Any) -> None:
            m = NatsMessage(msg.subject, msg.data, dict(msg.headers or {}), time.monotonic())
            with self._lock:
                self.messages.append(m)

        for subject in subjects:
            await self._nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000)
        await self._nc.flush()

    def snapshot(self, prefix: str = "") -> list[NatsMessage]:
        with self._lock:
            return [m for m in self.messages if m.subject.startswith(prefix)]

    def wait_for(
        self, predicate: Callable[[list[NatsMessage]], bool], timeout_s: float = 60.0
    ) -> list[NatsMessage]:
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.snapshot()
            if predicate(got):
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met with {len(got)} messages")
            time.sleep(0.05)

    def close(self) -> None:
        async def stop() -> None:
            await self._nc.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
