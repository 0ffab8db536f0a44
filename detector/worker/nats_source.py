"""The NATS JetStream source: the owned partitions in, acks and outputs out.

Only this module and `detector.worker.nats_checkpoint` know nats-py. nats-py is asyncio: its event
loop runs in a thread of its own (the "network thread" of `detector.worker.loop`), which fetches
from one durable pull consumer per owned partition, decodes through the `Intake` and hands
the messages to the detection thread with their JetStream reply subject as ack token. The
detection thread never awaits anything: acks and publishes are put in boxes that a sender
task on the loop empties (one wake-up per burst, not per message: a thread-safe call per
message cost more than the publish).

Alerts and dead letters are JetStream publishes to the output stream, each done once the
stream acknowledged it (`detector.worker.nats_outbox`); scores and status are plain publishes.

At start the source checks the streams and the server's partition mapping
(`detector.worker.nats_stream`) and refuses to run when they do not fit its settings.

Redelivery: a message fetched but not acked (a killed worker, a batch still in the queue at
shutdown) comes back after ``ack_wait_s``, to whichever worker then owns its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import msgspec

from detector.config.nats_settings import NatsSettings
from detector.engine.readings import WRONG_PARTITION, Reading, Rejection
from detector.worker.ingest import AckToken, Intake
from detector.worker.metrics import NatsMetrics
from detector.worker.nats_outbox import PUB_ACK_TIMEOUT_S, NatsDelivery, Outbox
from detector.worker.nats_stream import (
    PROBE_HEADER,
    SourceError,
    check_mapping,
    describe_error,
    ensure_output_stream,
    ensure_stream,
)
from detector.worker.partitions import Shard, partition_name, partition_of

log = logging.getLogger("iotad.nats")

T = TypeVar("T")

WORKER_HEADER = "Iotad-Worker"
PULL_EXPIRES_S = 5.0
PULL_EXPIRES_SHORT_S = 1.0
"""Expiry of a partition's pull requests after a reconnect, and after a request nobody
answered, until one is answered: a request sent while the consumer has no leader (its node
died) is answered by nobody, and with 5 s requests a partition waited 6 s past the election
for its next one (measured: a 13.4 s pause where the leader took 8 s to come)."""
PULL_GRACE_S = 0.5
STATUS_HEADER = "Status"
PENDING_REFRESH_S = 5.0
QUIESCE_S = 10.0
REWIND_TIMEOUT_S = 30.0
REWIND_REQUEST_TIMEOUT_S = 1.0
"""Each JetStream API request of a rewind: a consumer whose leader died answers nothing
until the survivors elect a new one. With nats-py's 5 s a rewind found the new leader up to
6 s late (5 s timeout + 1 s pause: measured 11.5 s of pause where the election took 7.7 s);
short requests retried at once find it within about a second."""
REWIND_RETRY_S = 0.2
SETUP_TIMEOUT_S = 120.0
STATUS_EVERY_S = 30.0


def subject_of(topic: str) -> str:
    """An MQTT-style output topic as a NATS subject (``alerts/d/m`` -> ``alerts.d.m``): what
    MQTT clients of NATS's MQTT listener then see as the same topic."""
    return topic.replace("/", ".")


def topic_of(subject: str) -> bytes:
    """The ``sensors/...`` topic of a partitioned subject (``part.7.sensors.d.m``)."""
    return subject.split(".", 2)[-1].replace(".", "/").encode()


class _PullState:
    """The open pull request of one partition: how many asked for, how many came."""

    __slots__ = ("done", "received", "refused", "requested")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.requested = 0
        self.received = 0
        self.refused = False

    def start(self, batch: int) -> None:
        self.done.clear()
        self.requested = batch
        self.received = 0
        self.refused = False


class NatsSource:
    """JetStream partitions of one shard in, acks and publishes out.

    Args:
        settings: servers, credentials, TLS, stream and consumer names.
        shard: which partitions this worker owns.
        intake: where decoded messages go (its queue bounds how much is fetched).
        worker_id: connection name and the ``Iotad-Worker`` header of every output.
        metrics: the source's metrics.
        status_subject: where ``{"state": "online"|"offline", ...}`` is published (at start,
            every 30 s, at close; NATS keeps no retained message, so it repeats).
        status_extra: more fields of the status (model version, pid, ...).
        output_subjects: the subjects of the QoS 1 outputs (alerts, dead letters), which the
            output stream must capture (`detector.worker.nats_stream.ensure_output_stream`).
    """

    def __init__(
        self,
        settings: NatsSettings,
        shard: Shard,
        intake: Intake,
        *,
        worker_id: str,
        metrics: NatsMetrics,
        status_subject: str,
        status_extra: dict[str, Any] | None = None,
        output_subjects: Sequence[str] = ("alerts.>", "iotad.deadletter"),
    ) -> None:
        self.settings = settings
        self.output_subjects = list(output_subjects)
        self.shard = shard
        self.partitions = shard.owned(settings.partitions)
        self.intake = intake
        self.worker_id = worker_id
        self.metrics = metrics
        self.status_subject = subject_of(status_subject)
        self._status_extra = dict(status_extra or {})
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="iotad-nats", daemon=True)
        self._nc: Any = None
        self.js: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # Partitions not pulled: all while disconnected, each until `_after_reconnect`
        # rewound it.
        self._paused: set[int] = set()
        self._epoch = 0  # connections lost so far
        self._pulls: dict[int, _PullState] = {}
        self.rewinds = 0
        self._last_error: str | None = None
        self._refused = False  # the last error came from the server, not the socket
        self._work_queue = True
        self.outbox = Outbox({WORKER_HEADER: worker_id}, retry_s=settings.output_retry_s)
        self.probes_acked = 0

    # -- lifecycle (caller's thread) -------------------------------------------------------

    def update_status(self, **fields: Any) -> None:
        """Fields of the online status to say from the next status published on (e.g. the
        model version after a reload)."""
        self._status_extra.update(fields)

    @property
    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    @property
    def url(self) -> str:
        return ",".join(self.settings.urls)

    @property
    def confirm_timeout_s(self) -> float:
        """Longer than an output publish can stay unconfirmed: it is confirmed or lost by
        then (`detector.worker.nats_outbox`), so the worker never acks a reading whose alert may
        still be lost."""
        return self.settings.output_retry_s + PUB_ACK_TIMEOUT_S + 5.0

    @property
    def max_payload(self) -> int:
        """The server's largest message (1 MB unless configured otherwise)."""
        return int(self._nc.max_payload) if self._nc is not None else 1024 * 1024

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run `coro` on the source's loop from another thread and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout_s)

    def start(self, stop: threading.Event | None = None) -> None:
        """Connect, check the stream and the mapping, bind the consumers, start fetching.

        nats-py retries the servers by itself; after ``connect_timeout_s`` without success
        this raises `SourceError` naming the last problem (refused, authorization, TLS).
        Returns early, unconnected, when `stop` is set meanwhile.
        """
        self._thread.start()
        stop = stop or threading.Event()
        future = asyncio.run_coroutine_threadsafe(self._connect(), self._loop)
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while not future.done():
            if stop.is_set() or time.monotonic() > deadline:
                future.cancel()
                if stop.is_set():
                    return
                problem = self._last_error or "no server answered"
                raise SourceError(
                    f"cannot connect to {self.url}: {problem} "
                    f"(gave up after {self.settings.connect_timeout_s:g} s)"
                )
            stop.wait(0.1)
        try:
            future.result()
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"cannot connect to {self.url}: {describe_error(exc)}") from None
        try:
            self.run(self._setup(), timeout_s=SETUP_TIMEOUT_S)
        except SourceError:
            raise
        except Exception as exc:  # JetStream off, no permission, cluster without quorum...
            raise SourceError(f"cannot set up the partitions: {describe_error(exc)}") from None

    def close(self, timeout_s: float = 5.0) -> None:
        """Send the acks and publishes still boxed, publish offline, close the connection."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.run(self._close(), timeout_s=timeout_s + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    # -- detection thread ------------------------------------------------------------------

    def ack_many(self, tokens: Sequence[AckToken]) -> int:
        """Acknowledge processed messages (their reply subjects); sent by the loop."""
        return self.outbox.ack_many(tokens)

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> NatsDelivery | None:
        """Publish on the subject of `topic` (`subject_of`). QoS 1 goes through the output
        stream and gets a `NatsDelivery`, done once the stream acknowledged it (or gave up:
        `lost`); QoS 0 is a plain publish. None when the source is closing. `retain` has no
        NATS equivalent and is ignored."""
        return self.outbox.publish(subject_of(topic), payload, qos)

    # -- loop --------------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        s = self.settings
        opts: dict[str, Any] = {
            "servers": s.urls,
            "name": self.worker_id,
            "connect_timeout": min(10.0, s.connect_timeout_s),
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        if s.user is not None:
            opts["user"] = s.user
            if s.password is not None:
                opts["password"] = s.password.get_secret_value()
        if s.token is not None:
            opts["token"] = s.token.get_secret_value()
        if s.creds_file is not None:
            opts["user_credentials"] = str(s.creds_file)
        if s.nkey_seed_file is not None:
            opts["nkeys_seed"] = str(s.nkey_seed_file)
        if s.tls:
            try:
                ctx = ssl.create_default_context(
                    cafile=str(s.ca_file) if s.ca_file is not None else None
                )
                if s.cert_file is not None:
                    ctx.load_cert_chain(
                        str(s.cert_file), str(s.key_file) if s.key_file is not None else None
                    )
            except (ssl.SSLError, OSError) as exc:
                raise SourceError(f"TLS setup failed: {describe_error(exc)}") from None
            opts["tls"] = ctx
        return opts

    async def _connect(self) -> None:
        import nats

        # nats-py tries the servers in turn until one answers; `start` bounds the time.
        self._nc = await nats.connect(**self._options())
        self.js = self._nc.jetstream()
        self.metrics.connected.set(1)
        log.info("connected to NATS %s", self._nc.connected_url.netloc)

    async def _setup(self) -> None:
        self._work_queue = await ensure_stream(self.js, self.settings)
        await ensure_output_stream(self.js, self.settings, self.output_subjects)
        await check_mapping(self._nc, self.settings.partitions, self.worker_id)
        self._tasks.append(await self.outbox.start(asyncio.get_running_loop(), self._nc))
        for p in self.partitions:
            durable = await self._consumer(p)
            self._tasks.append(asyncio.ensure_future(self._pull(p, durable)))
        self._tasks.append(asyncio.ensure_future(self._refresh_pending()))
        self._tasks.append(asyncio.ensure_future(self._status_loop()))
        log.info(
            "shard %s: %d of %d partitions (%s)",
            self.shard,
            len(self.partitions),
            self.settings.partitions,
            ",".join(partition_name(p) for p in self.partitions[:16])
            + (" ..." if len(self.partitions) > 16 else ""),
        )

    def _durable(self, p: int) -> str:
        return f"{self.settings.durable_prefix}-p{partition_name(p)}"

    def _consumer_config(self, p: int, start_seq: int | None = None) -> Any:
        from nats.js import api

        s = self.settings
        return api.ConsumerConfig(
            durable_name=self._durable(p),
            filter_subject=f"part.{p}.sensors.>",
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=(
                api.DeliverPolicy.ALL if start_seq is None else api.DeliverPolicy.BY_START_SEQUENCE
            ),
            opt_start_seq=start_seq,
            ack_wait=s.ack_wait_s,
            max_ack_pending=s.max_ack_pending,
            max_deliver=-1,
        )

    async def _consumer(self, p: int) -> str:
        """Create partition `p`'s durable pull consumer unless it exists; returns its name.
        An existing one is used as it is (the owner before a re-shard made it), after a
        `_rewind` when it holds deliveries nobody acked."""
        from nats.js.errors import NotFoundError

        durable = self._durable(p)
        try:
            await self.js.consumer_info(self.settings.stream, durable)
        except NotFoundError:
            await self.js.add_consumer(self.settings.stream, self._consumer_config(p))
            return durable
        await self._rewind(p)
        return durable

    async def _rewind(self, p: int) -> None:
        """Make the server deliver partition `p`'s unacked messages again now, in order.

        Messages delivered and never acked (the owner was killed, or they were lost in
        transit when a node died) are otherwise redelivered after ``ack_wait_s``, behind
        the newer readings delivered meanwhile, and the core then drops them as out of
        order: measured, a worker restarted within ack_wait lost its in-flight readings
        that way. The consumer is recreated from its ack floor instead. Readings acked
        above the floor come again and are dropped as duplicates (counted, dead-lettered):
        nothing is scored twice and nothing is lost. Only the partition's owner does this;
        it holds nothing unacked of that partition at this point (see `_after_reconnect`).
        """
        from nats.js.errors import NotFoundError

        s = self.settings
        durable = self._durable(p)
        start: int | None = None
        deadline = time.monotonic() + REWIND_TIMEOUT_S
        jsm = self._nc.jsm(timeout=REWIND_REQUEST_TIMEOUT_S)
        # Unacked deliveries of the consumer a try deleted: they come again from the new one
        # (with a delivery count of 1), whether or not the answers of that try came back.
        pending = 0
        floor = 0
        while True:
            try:
                try:
                    info = await jsm.consumer_info(s.stream, durable)
                except NotFoundError:  # deleted by an earlier try whose re-creation failed
                    await jsm.add_consumer(s.stream, self._consumer_config(p, start))
                    break
                if not info.num_ack_pending:
                    break  # nothing to send again, or re-created by a try whose answer was lost
                floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
                # A work queue keeps only what is not acked yet (and takes no start seq).
                start = None if self._work_queue else floor + 1
                pending = info.num_ack_pending
                await jsm.delete_consumer(s.stream, durable)
                await jsm.add_consumer(s.stream, self._consumer_config(p, start))
            except Exception as exc:  # a cluster electing leaders after a node died
                if time.monotonic() > deadline:
                    raise
                log.debug("rewind of partition %s: %r; retrying", partition_name(p), exc)
                await asyncio.sleep(REWIND_RETRY_S)
                continue
            break
        if not pending:
            return
        self.rewinds += 1
        # Delivered again by a new consumer: its own count says 1, this one does not.
        self.metrics.redelivered.inc(pending)
        log.info(
            "partition %s: %d delivered, unacked messages sent again (from seq %d)",
            partition_name(p),
            pending,
            floor + 1,
        )

    async def _after_reconnect(self) -> None:
        """Pulls stay paused until what came before the outage is processed and acked; then
        each owned partition with unacked deliveries is rewound (`_rewind`) and resumes,
        all partitions at once (a cluster electing leaders answers some before others)."""
        deadline = time.monotonic() + QUIESCE_S
        queue = self.intake.queue
        while (len(queue) or self.outbox.busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the batch on the detection thread: acked, or a duplicate
        with contextlib.suppress(Exception):
            await self._nc.flush(5)
        await asyncio.gather(*(self._rewind_and_resume(p) for p in self.partitions))

    async def _rewind_and_resume(self, p: int) -> None:
        try:
            await self._rewind(p)
        except Exception as exc:  # still no leader: ack_wait redelivers instead
            log.warning("partition %s not rewound: %r", partition_name(p), exc)
        finally:
            self._paused.discard(p)

    async def _pull(self, p: int, durable: str) -> None:
        """Keep one pull request open on partition `p`'s consumer while the intake has room.

        The messages of a request arrive on an inbox subscription and are handed over one
        by one as they come; the next request goes out once this one is filled, expired
        (status 408) or refused (409). nats-py's fetch of n instead returned only once n
        messages had come or the request expired: at 5,000 readings/s over 12 partitions
        that held readings for most of the expiry (p50 lag 1.3 s measured with 1 s).
        """
        queue = self.intake.queue
        owned = max(1, len(self.partitions))
        pull = _PullState()

        self._pulls[p] = pull

        async def subscribe() -> tuple[Any, str, int]:
            epoch = self._epoch

            async def on_msg(msg: Any) -> None:
                if epoch != self._epoch:
                    # A request of the connection before the outage, still served by the
                    # consumer's leader: the messages it lost in transit are older than
                    # these, which would overtake them. Not acked: `_rewind` sends them
                    # again, in order.
                    return
                headers = msg.headers
                if headers and STATUS_HEADER in headers:
                    if headers[STATUS_HEADER] not in ("404", "408"):
                        # Refused (no consumer, leader moving, no responders): wait a bit.
                        log.debug("partition %d: %s %s", p, headers[STATUS_HEADER], headers)
                        pull.refused = True
                    pull.done.set()  # the request is over: expired, or refused
                    return
                self._hand_over(msg, p)
                pull.received += 1
                if pull.received >= pull.requested:
                    pull.done.set()

            inbox = self._nc.new_inbox()
            return await self._nc.subscribe(inbox, cb=on_msg), inbox, epoch

        sub, inbox, epoch = await subscribe()
        request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.settings.stream}.{durable}"
        short = False  # see PULL_EXPIRES_SHORT_S
        try:
            while not self._stopping:
                # Each partition asks for its share of the room: the rest of the stream
                # stays on the server's disk (backpressure), and the queue never overfills.
                batch = min(self.settings.fetch_batch, (queue.maxsize - len(queue)) // owned)
                if p in self._paused or batch < 1 or not queue.has_room(batch):
                    await asyncio.sleep(0.002)
                    continue
                if epoch != self._epoch:  # reconnected: a new inbox for the new requests
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                    sub, inbox, epoch = await subscribe()
                    short = True
                pull.start(batch)
                expires_s = PULL_EXPIRES_SHORT_S if short else PULL_EXPIRES_S
                request = b'{"batch":%d,"expires":%d}' % (batch, int(expires_s * 1e9))
                try:
                    await self._nc.publish(request_subject, request, reply=inbox)
                    # A request lost to a reconnect is given up after its expiry.
                    await asyncio.wait_for(pull.done.wait(), expires_s + PULL_GRACE_S)
                    short = False
                    if pull.refused:
                        await asyncio.sleep(0.5)
                except TimeoutError:
                    short = True
                    log.debug("pull of partition %d: no answer in %.1f s", p, expires_s)
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # disconnected: nats-py reconnects by itself
                    if not self._stopping:
                        log.debug("pull of partition %d: %r", p, exc)
                        await asyncio.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _hand_over(self, msg: Any, p: int) -> None:
        """One message of partition `p` to the intake (a probe is acked, never decoded)."""
        reply = msg.reply
        headers = msg.headers
        if headers and PROBE_HEADER in headers:
            self.outbox.ack_many([reply])  # a start-up probe of some worker: not input
            self.probes_acked += 1
            return
        redelivered = _delivered_more_than_once(reply)
        if redelivered:
            self.metrics.redelivered.inc()
        subject = msg.subject
        topic = topic_of(subject)
        decoded = self.intake.decoder.decode(topic, msg.data)
        readings, rejections = decoded.readings, decoded.rejections
        # The server placed the message by its topic's device; a payload may name others (a
        # gateway's batch on sensors/gw1). Their series belong to other partitions, maybe
        # other workers: scoring them here would split a series between two workers.
        topic_device = (*subject.split(".", 4), "")[3]  # part.<p>.sensors.<device>...
        if any(r.device != topic_device for r in readings):
            readings, moved = self._own_partition(p, readings, topic, msg.data)
            rejections = rejections + moved
        # Never waits: `_pull` asked for no more than the queue has room for.
        self.intake.decoded(
            topic,
            reply,
            readings,
            rejections,
            wait=False,
            labels=decoded.labels,
            redelivered=redelivered,
        )

    def _own_partition(
        self, p: int, readings: list[Reading], topic: bytes, payload: bytes
    ) -> tuple[list[Reading], list[Rejection]]:
        """The readings of partition `p`, and a ``wrong_partition`` rejection per other."""
        partitions = self.settings.partitions
        keep: list[Reading] = []
        moved: list[Rejection] = []
        for r in readings:
            q = partition_of(r.device, partitions)
            if q == p:
                keep.append(r)
            else:
                moved.append(
                    Rejection(
                        WRONG_PARTITION,
                        f"device {r.device} belongs to partition {q}, the message came on "
                        f"{p}: publish it on sensors/{r.device}/... (or sensors/{r.device})",
                        topic.decode("utf-8", errors="replace"),
                        payload,
                    )
                )
        return keep, moved

    async def _refresh_pending(self) -> None:
        s = self.settings
        while not self._stopping:
            for p in self.partitions:
                name = partition_name(p)
                try:
                    info = await self.js.consumer_info(s.stream, self._durable(p))
                except Exception:
                    continue
                self.metrics.pending.labels(name).set(info.num_pending or 0)
                self.metrics.ack_pending.labels(name).set(info.num_ack_pending or 0)
            await asyncio.sleep(PENDING_REFRESH_S)

    def _status(self, state: str) -> bytes:
        return msgspec.json.encode(
            {
                "state": state,
                "worker": self.worker_id,
                **self._status_extra,
                "shard": str(self.shard),
                "partitions": self.partitions,
                "ts": time.time(),
            }
        )

    async def _status_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(Exception):
                await self._nc.publish(self.status_subject, self._status("online"))
            await asyncio.sleep(STATUS_EVERY_S)

    async def _close(self) -> None:
        self._stopping = True
        # The last batch's acks go out before the sender is cancelled.
        await self.outbox.drain(3.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.publish(self.status_subject, self._status("offline"))
                await self._nc.flush(2)
            with contextlib.suppress(Exception):
                await self._nc.close()
        self.metrics.connected.set(0)

    # -- nats-py callbacks -------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        # A server that refuses us (authorization) then closes the socket: the broken pipe
        # that follows must not hide why.
        if not (isinstance(exc, OSError) and self._refused):
            self._last_error = describe_error(exc)
        self._refused = not isinstance(exc, OSError)
        if not self._stopping:
            log.warning("NATS: %s", describe_error(exc))

    async def _on_disconnected(self) -> None:
        self._paused.update(self.partitions)  # see `_after_reconnect`
        self._epoch += 1  # what arrives for the old requests is dropped (see `_pull`)
        for pull in self._pulls.values():
            pull.done.set()
        self.metrics.connected.set(0)
        if not self._stopping:
            log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        self.metrics.connected.set(1)
        self.metrics.reconnects.inc()
        log.info("reconnected to NATS %s", self._nc.connected_url.netloc)
        if not self._stopping and self.js is not None:
            self._tasks.append(asyncio.ensure_future(self._after_reconnect()))


def _delivered_more_than_once(reply: str) -> bool:
    """From the ack subject ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.
    <pending>`` (with ``<domain>.<account hash>`` after ACK and a token at the end in the
    newer form): cheaper than nats-py's metadata object per message."""
    parts = reply.split(".")
    delivered = parts[4] if len(parts) == 9 else parts[6] if len(parts) >= 11 else "1"
    return delivered != "1"


__all__ = ["NatsSource", "SourceError", "subject_of", "topic_of"]
