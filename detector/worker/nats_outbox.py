"""What the detection thread sends through NATS: acks and publishes, boxed, and sent by one
task on the NATS source's event loop.

The detection thread never awaits: it appends to a box and, when the sender is not already
awake, wakes it with one thread-safe call (one per burst: a call per message cost more than
the publish itself). The sender publishes everything boxed, then the acks.

QoS 1 publishes (alerts, dead letters) go through JetStream: the output stream captures their
subjects and answers each with a publish ack on a reply subject of ours. Their `NatsDelivery`
is done once that ack came back, not when the connected node read them (a node that died
with them took them along, measured in the node-death test). The sender does not wait for
the acks: it publishes the whole round, and one timer per round fails what is still
unanswered after ``PUB_ACK_TIMEOUT_S`` (awaiting each ack in turn would hold every publish
behind the one before). A failed publish (no answer, no stream, a stream error, no
connection) is sent again with the same ``Nats-Msg-Id``, so the stream stores it once, until
``retry_s`` has passed; then its delivery is `lost`. The worker keeps it and sends it again
(`NatsDelivery.send_again`: the same ``Nats-Msg-Id``, another ``retry_s`` of tries) until the
stream confirms it, and only then acks the reading that raised it (`detector.worker.resends`).
QoS 0 publishes (scores, status) stay plain publishes: at
most once, confirmed by nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from detector.worker.ingest import AckToken

log = logging.getLogger("iotad.nats")

PUB_ACK_TIMEOUT_S = 2.0
"""A JetStream publish unanswered this long is sent again (a leader election answers in a few
seconds; the answer of the first send, if it comes, confirms it all the same)."""
RETRY_BACKOFF_S = 0.25
MAX_UNCONFIRMED = 10_000
"""Publishes awaiting their ack at most; past it a publish is lost at once (the reading it
came from stays unacked): memory stays bounded while the output stream is gone."""
LOG_EVERY_S = 10.0
MSG_ID_HEADER = "Nats-Msg-Id"
STATUS_HEADER = "Status"
_ACK = b"+ACK"
_PENDING, _CONFIRMED, _LOST = 0, 1, 2


class NatsDelivery:
    """A JetStream publish as an `alerts.Delivery`: done once the stream acknowledged it, or
    once it was given up (`lost`)."""

    __slots__ = ("give_up_at", "msg_id", "outbox", "payload", "state", "subject")

    def __init__(
        self, subject: str, payload: bytes, msg_id: str, give_up_at: float, outbox: Outbox
    ) -> None:
        self.subject = subject
        self.payload = payload
        self.msg_id = msg_id
        self.give_up_at = give_up_at
        self.outbox = outbox
        self.state = _PENDING

    def done(self) -> bool:
        return self.state != _PENDING

    def lost(self) -> bool:
        return self.state == _LOST

    def send_again(self) -> None:
        """Publish a lost one again under the same message id (`Outbox.send_again`)."""
        self.outbox.send_again(self)


class Outbox:
    """Boxes of acks and publishes, filled from any thread, emptied on the loop.

    Args:
        headers: sent with every publish (the worker id, so consumers can tell workers apart).
        retry_s: how long a JetStream publish is retried before its delivery is lost.
    """

    def __init__(self, headers: dict[str, str], retry_s: float = 60.0) -> None:
        self.headers = headers
        self.retry_s = retry_s
        self._publishes: deque[tuple[str, bytes, NatsDelivery | None]] = deque()
        self._acks: deque[AckToken] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: Any = None
        self._wake: asyncio.Event | None = None
        self._wake_sent = False
        self.closed = False
        # Message ids unique to this process: a restarted worker's are new.
        self._ids = itertools.count(1)
        self._id_prefix = f"{headers.get('Iotad-Worker', 'iotad')}-{os.urandom(4).hex()}-"
        self._reply_prefix = ""
        self._awaiting: dict[str, NatsDelivery] = {}  # reply token -> its publish
        self._tokens = itertools.count(1)
        # Counted by one thread each (+= from two threads could lose counts).
        self._js_published = 0  # the detection thread
        self.refused = 0  # the detection thread: lost at once, MAX_UNCONFIRMED reached
        self.confirmed = 0  # the loop, from here on
        self.retried = 0
        self.lost = 0
        self._logged_at: dict[int, float] = {}

    async def start(self, loop: asyncio.AbstractEventLoop, nc: Any) -> asyncio.Task[None]:
        """Subscribe to the publish acks and start the sender on `loop` (call it there) for
        connection `nc`."""
        self._loop, self._nc = loop, nc
        self._wake = asyncio.Event()
        self._reply_prefix = nc.new_inbox() + "."
        await nc.subscribe(self._reply_prefix + "*", cb=self._on_pub_ack)
        return asyncio.ensure_future(self._sender())

    # -- any thread ----------------------------------------------------------------------------

    def ack_many(self, tokens: Sequence[AckToken]) -> int:
        self._acks.extend(tokens)
        self._kick()
        return len(tokens)

    def publish(self, subject: str, payload: bytes, qos: int) -> NatsDelivery | None:
        """Box a publish; QoS 1 goes through JetStream and gets a delivery to watch. None
        once closed."""
        if self.closed:
            return None
        delivery = None
        if qos:
            delivery = NatsDelivery(
                subject,
                payload,
                self._id_prefix + str(next(self._ids)),
                time.monotonic() + self.retry_s,
                self,
            )
            if self.unconfirmed >= MAX_UNCONFIRMED:
                delivery.state = _LOST  # never sent
                self.refused += 1
                return delivery
            self._js_published += 1
        self._publishes.append((subject, payload, delivery))
        self._kick()
        return delivery

    def send_again(self, delivery: NatsDelivery) -> None:
        """Box a lost publish again, with the same ``Nats-Msg-Id`` (the stream stores it once
        within its duplicate window) and another ``retry_s`` of tries: it is pending again.
        It stays lost when the outbox is closed or full (the caller tries again later)."""
        if delivery.state != _LOST or self.closed or self.unconfirmed >= MAX_UNCONFIRMED:
            return
        delivery.give_up_at = time.monotonic() + self.retry_s
        # Pending before it is boxed: the loop only sends pending publishes.
        delivery.state = _PENDING
        self._js_published += 1
        self._publishes.append((delivery.subject, delivery.payload, delivery))
        self._kick()

    @property
    def unconfirmed(self) -> int:
        """JetStream publishes neither confirmed nor lost yet."""
        return self._js_published - self.confirmed - self.lost

    @property
    def busy(self) -> bool:
        """Whether acks or publishes wait to be sent (not: to be acknowledged)."""
        return bool(self._acks or self._publishes)

    def _kick(self) -> None:
        if not self._wake_sent and self._wake is not None and self._loop is not None:
            self._wake_sent = True
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- the loop ------------------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> None:
        """Wait (on the loop) until everything boxed is sent and every JetStream publish
        acknowledged or given up, at most `timeout_s`."""
        self.closed = True
        if self._wake is not None:
            self._wake.set()
        deadline = time.monotonic() + timeout_s
        while (self.busy or self.unconfirmed) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            await self._nc.flush(2)

    async def _sender(self) -> None:
        assert self._wake is not None and self._loop is not None
        nc = self._nc
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._wake_sent = False
            sent: list[str] = []
            try:
                publishes = self._publishes
                while publishes:
                    subject, payload, delivery = publishes.popleft()
                    if delivery is None:
                        try:
                            await nc.publish(subject, payload, headers=self.headers)
                        except Exception as exc:  # too big, or the buffer is full while away
                            log.warning("publish to %s failed: %r", subject[:100], exc)
                        continue
                    token = await self._send_js(nc, delivery)
                    if token is not None:
                        sent.append(token)
                if self._acks:
                    await self._send_acks(nc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection closed under us: nothing to do
                log.debug("sender: %r", exc)
            finally:
                if sent:  # one timer for the round's acks
                    self._loop.call_later(PUB_ACK_TIMEOUT_S, self._expire, sent)

    async def _send_js(self, nc: Any, delivery: NatsDelivery) -> str | None:
        """Publish with a reply subject the stream answers on; the token, or None when the
        client refused it (then it is retried)."""
        if delivery.state != _PENDING:
            return None
        token = str(next(self._tokens))
        self._awaiting[token] = delivery
        try:
            await nc.publish(
                delivery.subject,
                delivery.payload,
                reply=self._reply_prefix + token,
                headers={**self.headers, MSG_ID_HEADER: delivery.msg_id},
            )
        except Exception as exc:  # too big, or the buffer is full while away
            del self._awaiting[token]
            self._failed(delivery, repr(exc))
            return None
        return token

    async def _on_pub_ack(self, msg: Any) -> None:
        delivery = self._awaiting.pop(msg.subject[len(self._reply_prefix) :], None)
        if delivery is None or delivery.state != _PENDING:
            return  # answered after its timer: already sent again
        headers = msg.headers
        if headers and STATUS_HEADER in headers:  # 503: no stream captures the subject
            self._failed(delivery, f"status {headers[STATUS_HEADER]} (no stream?)")
        elif b'"error"' in msg.data:
            self._failed(delivery, msg.data[:200].decode("utf-8", errors="replace"))
        else:
            delivery.state = _CONFIRMED
            self.confirmed += 1

    def _expire(self, tokens: list[str]) -> None:
        for token in tokens:
            delivery = self._awaiting.pop(token, None)
            if delivery is not None:
                self._failed(delivery, f"no publish ack within {PUB_ACK_TIMEOUT_S:g} s")

    def _failed(self, delivery: NatsDelivery, why: str) -> None:
        if delivery.state != _PENDING:
            return
        if time.monotonic() >= delivery.give_up_at or self.closed:
            self._lose(delivery, why)
            return
        self.retried += 1
        self._log(logging.INFO, "publish to %s unconfirmed (%s); sending it again", delivery, why)
        assert self._loop is not None
        self._loop.call_later(RETRY_BACKOFF_S, self._retry, delivery)

    def _retry(self, delivery: NatsDelivery) -> None:
        if delivery.state == _PENDING:
            self._publishes.append((delivery.subject, delivery.payload, delivery))
            if self._wake is not None:
                self._wake.set()

    def _lose(self, delivery: NatsDelivery, why: str) -> None:
        delivery.state = _LOST
        self.lost += 1
        self._log(logging.WARNING, "publish to %s given up (%s)", delivery, why)

    def _log(self, level: int, msg: str, delivery: NatsDelivery, why: str) -> None:
        """At most one line per ``LOG_EVERY_S``: a missing stream fails every publish."""
        now = time.monotonic()
        if now - self._logged_at.get(level, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged_at[level] = now
            log.log(level, msg, delivery.subject[:100], why)

    async def _send_acks(self, nc: Any) -> None:
        """Every boxed ack as one write. nats-py's publish per ack cost 2.8 us of the loop
        thread (subject checks, a command and a flush check each), measured; the same
        ``PUB <reply> 4\r\n+ACK\r\n`` lines joined cost 0.2 us each. The joined form uses
        nats-py's command queue; a nats-py without it gets one publish per ack."""
        acks = self._acks
        send = getattr(nc, "_send_command", None)
        flush = getattr(nc, "_flush_pending", None)
        if send is None or flush is None:
            while acks:
                await nc.publish(acks.popleft(), _ACK)
            return
        lines = []
        while acks:
            lines.append(b"PUB %s 4\r\n+ACK\r\n" % acks.popleft().encode())
        await send(b"".join(lines))
        await flush()
