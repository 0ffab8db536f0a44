"""The start-up checks of the NATS source: the streams and the server's partition mapping.

- The stream exists and captures ``part.*.sensors.>``. It is created when missing, with work
  queue retention: an acked reading is deleted, and a slow worker leaves the rest on disk.
- The output stream exists and captures the alert and dead-letter subjects; the worker
  publishes them through it and acks a reading once it acknowledged them. Created when
  missing, with limits retention (age and bytes from the settings, the oldest go first).
- The server's subject mapping puts each device on the partition `partition_of` computes
  with IOTAD_NATS__PARTITIONS: probe readings published on ``sensors.<probe>.iotad-probe``
  must come back on ``part.<p>.sensors...`` with the expected p (8 probe devices: another P
  passes by chance with a probability of about (1/P')^8). The probes land in the stream and
  are acked, never decoded, by whichever worker owns their partition (header
  ``Iotad-Probe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from detector.config.nats_settings import NatsSettings
from detector.worker import connect_errors
from detector.worker.partitions import partition_of

log = logging.getLogger("iotad.nats")

INPUT_FILTER = "part.*.sensors.>"
PROBE_HEADER = "Iotad-Probe"
PROBE_DEVICES = 8
PROBE_TIMEOUT_S = 5.0


class SourceError(Exception):
    """The source cannot be used; the message is one line, without secrets."""


async def ensure_stream(js: Any, s: NatsSettings) -> bool:
    """Create the stream when missing; refuse one that does not capture the partitions.
    Returns whether it is a work queue (acked messages deleted)."""
    from nats.js import api
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(s.stream)
    except NotFoundError:
        await js.add_stream(
            api.StreamConfig(
                name=s.stream,
                subjects=[INPUT_FILTER],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                num_replicas=s.replicas,
            )
        )
        log.info("created stream %s on %s (replicas %d)", s.stream, INPUT_FILTER, s.replicas)
        return True
    subjects = list(info.config.subjects or [])
    if INPUT_FILTER not in subjects:
        raise SourceError(
            f"stream {s.stream} captures {', '.join(subjects) or 'nothing'}, not "
            f"{INPUT_FILTER}: the partitions would not reach it"
        )
    return info.config.retention == api.RetentionPolicy.WORK_QUEUE


OUTPUT_DUPLICATE_WINDOW_S = 120.0
"""A retried alert (same ``Nats-Msg-Id``) is stored once within this window: longer than the
worker retries by default (`NatsSettings.output_retry_s`)."""


async def ensure_output_stream(js: Any, s: NatsSettings, subjects: list[str]) -> None:
    """Create the output stream when missing; refuse one that does not capture `subjects`."""
    from nats.js import api
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(s.output_stream)
    except NotFoundError:
        await js.add_stream(
            api.StreamConfig(
                name=s.output_stream,
                subjects=subjects,
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                storage=api.StorageType.FILE,
                num_replicas=s.replicas,
                max_age=s.output_max_age_s,
                max_bytes=s.output_max_bytes,
                duplicate_window=max(OUTPUT_DUPLICATE_WINDOW_S, s.output_retry_s + 10),
            )
        )
        log.info("created stream %s on %s (replicas %d)", s.output_stream, subjects, s.replicas)
        return
    have = list(info.config.subjects or [])
    missing = [subject for subject in subjects if subject not in have]
    if missing:
        raise SourceError(
            f"stream {s.output_stream} captures {', '.join(have) or 'nothing'}, not "
            f"{', '.join(missing)}: alerts would not be kept (add the subjects, or delete it "
            "and let the worker create it)"
        )


async def check_mapping(nc: Any, p_count: int, worker_id: str) -> None:
    """Publish probe readings and check the partition the server maps each to."""
    # One subject token each: a worker id may hold dots, a device token may not.
    token = worker_id.replace(".", "-")
    probes = [f"iotad-probe-{token}-{i}" for i in range(PROBE_DEVICES)]
    seen: dict[str, int] = {}
    done = asyncio.Event()

    async def on_probe(msg: Any) -> None:
        parts = msg.subject.split(".")
        if len(parts) >= 4 and parts[1].isdigit():
            seen[parts[3]] = int(parts[1])
        if len(seen) >= len(probes):
            done.set()

    sub = await nc.subscribe("part.*.sensors.*.iotad-probe", cb=on_probe)
    try:
        await nc.flush()
        for device in probes:
            await nc.publish(f"sensors.{device}.iotad-probe", b"", headers={PROBE_HEADER: "1"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), PROBE_TIMEOUT_S)
    finally:
        await sub.unsubscribe()
    if not seen:
        raise SourceError(
            "the server maps no sensors.<device>.<metric> subject to part.<p>....: add the "
            f'mapping "sensors.*.*": "part.{{{{partition({p_count},1)}}}}.sensors.'
            '{{wildcard(1)}}.{{wildcard(2)}}" to its account (see docs/scale-out.md)'
        )
    wrong = {d: p for d, p in seen.items() if p != partition_of(d, p_count)}
    if wrong:
        device, p = next(iter(wrong.items()))
        raise SourceError(
            f"the server put probe device {device} on partition {p}, not "
            f"{partition_of(device, p_count)}: its partition(P,1) mapping does not use "
            f"P = IOTAD_NATS__PARTITIONS = {p_count}"
        )


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of a connection problem with NATS."""
    return connect_errors.describe_error(exc, server="NATS")
