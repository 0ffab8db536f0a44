"""Checkpoints per partition in a JetStream key-value bucket: state that moves with its
partition when the number of workers changes.

The core's snapshot (`DetectionCore.snapshot`, one row per series) is split by the partition
of each series' device (`detector.worker.partitions.partition_of`, the server's own hash) and each
owned partition's rows are written under key ``p<NN>`` as the bytes of an ``.npz`` file
(`detector.worker.checkpoint.state_bytes`: plain arrays, never pickled). A worker that starts reads
the keys of the partitions it owns now, whatever N was when they were written, so stop,
change N and start moves every series' state to its new worker.

A partition whose state is larger than the server's max payload (1 MB by default; ~2,000
series at window 32) is written in chunks: keys ``p<NN>.<generation>.<i>`` first, then
``p<NN>`` as a small JSON manifest naming them, then the previous generation's chunks are
deleted. A crash in between leaves the previous manifest and its chunks intact.

Everything bad in the bucket (unreadable, another model or window, rows of another
partition, non-finite state) costs that partition a cold start and one warning line, never
the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from detector.engine.model_carry import CarryReport, carry_over
from detector.worker.checkpoint import (
    CheckpointError,
    check_state,
    finite_rows,
    select_rows,
    state_bytes,
    state_from_bytes,
)
from detector.worker.metrics import CheckpointMetrics
from detector.worker.partitions import partition_name, partition_of

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from detector.engine.core import DetectionCore
    from detector.worker.nats_source import NatsSource

log = logging.getLogger("iotad.checkpoint")

_SCALARS = ("format", "model_version", "window_len", "short_window")
PAYLOAD_HEADROOM = 4096
"""Bytes of a KV message besides its value (subject, headers)."""
SAVE_TIMEOUT_S = 30.0


class Manifest(msgspec.Struct, frozen=True):
    """``p<NN>`` of a partition written in chunks."""

    generation: str
    chunks: int
    size: int
    sha256: str


def key_of(p: int) -> str:
    return f"p{partition_name(p)}"


def partition_rows(keys: np.ndarray, partitions: int) -> np.ndarray:
    """The partition of each ``device/metric`` key."""
    memo: dict[str, int] = {}
    out = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys.tolist()):
        device = str(key).partition("/")[0]
        p = memo.get(device)
        if p is None:
            p = memo[device] = partition_of(device, partitions)
        out[i] = p
    return out


def split_state(
    state: dict[str, np.ndarray], partitions: int, owned: list[int]
) -> dict[int, dict[str, np.ndarray]]:
    """The snapshot's rows of each owned partition (an empty state for one with none)."""
    where = partition_rows(state["keys"], partitions)
    return {p: select_rows(state, where == p) for p in owned}


def merge_states(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One snapshot of the rows of several (same model, same config: checked by the core).

    Rows of 2-D arrays may differ in width between partitions (a seasonal ring sized by the
    longest season of the partition's series): narrower ones are padded with zeros, which
    `DetectionCore.restore` reads as an empty ring tail.
    """
    merged: dict[str, np.ndarray] = {}
    # An array some partitions lack (written before it existed) is left out for all: the
    # core restores without it (optional state), rather than every partition starting cold.
    names = [n for n in states[0] if all(n in s for s in states[1:])]
    for name in names:
        if name in _SCALARS:
            merged[name] = states[0][name]
            continue
        arrays = [s[name] for s in states]
        if arrays[0].ndim == 2:
            width = max(a.shape[1] for a in arrays)
            arrays = [
                np.pad(a, ((0, 0), (0, width - a.shape[1]))) if a.shape[1] < width else a
                for a in arrays
            ]
        merged[name] = np.concatenate(arrays)
    return merged


class PartitionCheckpointer:
    """Saves and restores the state of the owned partitions in the KV bucket, every
    `interval_s` (the `detector.worker.loop.Checkpoints` the worker calls between batches).

    Args:
        source: the connected NATS source (its loop runs the KV calls).
        bucket: the key-value bucket (created when missing, with `replicas`).
        partitions: P.
        owned: this worker's partitions.
        interval_s: seconds between checkpoints.
        registry: where the checkpoint metrics go (`detector.worker.metrics.CheckpointMetrics`).
    """

    def __init__(
        self,
        source: NatsSource,
        *,
        bucket: str,
        replicas: int,
        partitions: int,
        owned: list[int],
        interval_s: float,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.bucket = bucket
        self.replicas = replicas
        self.partitions = partitions
        self.owned = list(owned)
        self.interval_s = interval_s
        self.clock = clock
        self.next_due = clock() + interval_s
        self.metrics = CheckpointMetrics(registry)
        self._kv: Any = None
        self._generations: dict[int, str] = {}  # chunked partitions: the generation written
        self.saves = 0

    @property
    def path(self) -> str:
        """Where the checkpoints go, for log lines (the file checkpointer's is a path)."""
        return f"NATS bucket {self.bucket}"

    # -- the worker's side -------------------------------------------------------------------

    def due(self) -> bool:
        return self.clock() >= self.next_due

    def save(self, core: DetectionCore) -> bool:
        """Snapshot `core` and write every owned partition; False (one warning) on failure."""
        started = time.perf_counter()
        self.next_due = self.clock() + self.interval_s
        try:
            state = core.snapshot()
            parts = split_state(state, self.partitions, self.owned)
            blobs = {p: state_bytes(s) for p, s in parts.items()}
            self.source.run(self._write(blobs), SAVE_TIMEOUT_S)
        except Exception as exc:  # NATS away, bucket gone: detection goes on
            self.metrics.failures.labels("save").inc()
            log.warning("checkpoint to %s failed: %s", self.path, _first_line(exc))
            return False
        self.metrics.seconds.observe(time.perf_counter() - started)
        self.metrics.series.set(len(state["keys"]))
        self.saves += 1
        return True

    def restore(self, core: DetectionCore) -> int:
        """Load the owned partitions' checkpoints into `core` (fresh); returns series
        restored. Each bad partition is one warning and a cold start of that partition."""
        try:
            found = self.source.run(self._read_all(), SAVE_TIMEOUT_S)
        except Exception as exc:
            self.metrics.failures.labels("restore").inc()
            log.warning("checkpoints in %s not read, starting cold: %s", self.path, exc)
            return 0
        states = []
        carried: list[CarryReport] = []
        for p, data in sorted(found.items()):
            try:
                state = state_from_bytes(data)
                check_state(state, core.window_len, core.artifact.version)
                if str(state["model_version"]) != core.artifact.version:
                    # Per partition, before merging: partitions saved around a model swap
                    # may hold different versions (and window lengths).
                    state, carry = carry_over(state, core.artifact, core.carry_errors)
                    carried.append(carry)
                keep = finite_rows(state) & (partition_rows(state["keys"], self.partitions) == p)
                if not keep.all():
                    log.warning(
                        "checkpoint %s: %d series left out (non-finite, or of another "
                        "partition); they warm up again",
                        key_of(p),
                        int(np.count_nonzero(~keep)),
                    )
                    state = select_rows(state, keep)
                if len(state["keys"]):
                    states.append(state)
            except Exception as exc:
                self.metrics.failures.labels("restore").inc()
                log.warning("checkpoint %s ignored, partition starts cold: %s", key_of(p), exc)
        if not states:
            log.info("no checkpoint for partitions %s: starting cold", self._owned_text())
            return 0
        try:
            n = core.restore(merge_states(states))
        except Exception as exc:  # another model, another window: all of them are stale
            _forget_all(core)
            self.metrics.failures.labels("restore").inc()
            log.warning("checkpoints in %s ignored, starting cold: %s", self.path, exc)
            return 0
        self.metrics.restored.set(n)
        log.info("restored %d series of %d partitions from %s", n, len(states), self.path)
        if carried:
            log.info(
                "checkpoints of %d partitions carried over from model %s to %s (%d series; "
                "docs/model-lifecycle.md)",
                len(carried),
                ", ".join(sorted({c.from_version for c in carried})),
                core.artifact.version,
                sum(c.series for c in carried),
            )
        return n

    def _owned_text(self) -> str:
        names = [partition_name(p) for p in self.owned]
        return ",".join(names[:16]) + (" ..." if len(names) > 16 else "")

    # -- the loop's side ---------------------------------------------------------------------

    async def _bucket(self) -> Any:
        if self._kv is not None:
            return self._kv
        from nats.js import api
        from nats.js.errors import BucketNotFoundError, NotFoundError

        js = self.source.js
        try:
            self._kv = await js.key_value(self.bucket)
        except (BucketNotFoundError, NotFoundError):
            self._kv = await js.create_key_value(
                api.KeyValueConfig(
                    bucket=self.bucket,
                    history=1,
                    storage=api.StorageType.FILE,
                    replicas=self.replicas,
                )
            )
            log.info("created checkpoint bucket %s (replicas %d)", self.bucket, self.replicas)
        return self._kv

    async def _read_all(self) -> dict[int, bytes]:
        kv = await self._bucket()
        results = await asyncio.gather(*(self._read(kv, p) for p in self.owned))
        return {p: data for p, data in zip(self.owned, results, strict=True) if data}

    async def _read(self, kv: Any, p: int) -> bytes | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await kv.get(key_of(p))
        except KeyNotFoundError:
            return None
        data = entry.value or b""
        if not data.startswith(b"{"):
            return data  # an .npz (a zip file: starts with PK)
        manifest = msgspec.json.decode(data, type=Manifest)
        chunks = [
            (await kv.get(f"{key_of(p)}.{manifest.generation}.{i}")).value or b""
            for i in range(manifest.chunks)
        ]
        blob = b"".join(chunks)
        if len(blob) != manifest.size or hashlib.sha256(blob).hexdigest() != manifest.sha256:
            raise CheckpointError(f"chunks of {key_of(p)} do not match their manifest")
        self._generations[p] = manifest.generation
        return blob

    async def _write(self, blobs: dict[int, bytes]) -> None:
        kv = await self._bucket()
        limit = max(1024, self.source.max_payload - PAYLOAD_HEADROOM)
        await asyncio.gather(*(self._write_one(kv, p, blob, limit) for p, blob in blobs.items()))

    async def _write_one(self, kv: Any, p: int, blob: bytes, limit: int) -> None:
        key = key_of(p)
        old = self._generations.pop(p, None)
        if len(blob) <= limit:
            await kv.put(key, blob)
        else:
            generation = uuid.uuid4().hex[:12]
            pieces = [blob[i : i + limit] for i in range(0, len(blob), limit)]
            for i, piece in enumerate(pieces):
                await kv.put(f"{key}.{generation}.{i}", piece)
            manifest = Manifest(
                generation, len(pieces), len(blob), hashlib.sha256(blob).hexdigest()
            )
            await kv.put(key, msgspec.json.encode(manifest))
            self._generations[p] = generation
        if old is not None:
            await self._drop_chunks(kv, key, old)

    async def _drop_chunks(self, kv: Any, key: str, generation: str) -> None:
        from nats.js.errors import KeyNotFoundError

        i = 0
        while True:
            name = f"{key}.{generation}.{i}"
            try:
                await kv.get(name)
            except KeyNotFoundError:
                return
            await kv.purge(name)
            i += 1


def _forget_all(core: DetectionCore) -> None:
    """Undo a partial restore: release every series (all their state, every part's)."""
    keys = core.store.keys()  # a copy: releasing changes the store
    for key in keys:
        core.release(key)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
