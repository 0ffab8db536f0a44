"""Alerts and dead letters the output stream gave up on, sent again until it confirms them.

A NATS delivery is `lost` when the output stream did not acknowledge it within
``IOTAD_NATS__OUTPUT_RETRY_S`` (`detector.worker.nats_outbox`). Leaving the message that raised it
unacked is not enough: when the source delivers it again, the core has that reading already
and drops it as a duplicate, so the alert would never be raised again. Instead the worker
keeps the lost deliveries with the messages that raised them (`Resends.keep`), sends them
again under the same message id every ``RESEND_EVERY_S`` while they are lost
(`Resends.poll`), and acks those messages only once every one is confirmed.

The source still delivers such a message again (ack wait, or a rewind after a reconnection).
That copy is not processed again: `claim` matches it by its content (`message_key`) to the
messages that wait, and it waits with them. MQTT deliveries are never lost, so nothing here
runs in MQTT mode.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from detector.worker.alerts import Delivery
from detector.worker.ingest import Inbound

MAX_RESEND_OUTPUTS = 10_000
"""Lost outputs kept to be sent again at most (each holds its payload: an alert is about
500 bytes, a dead letter up to its payload cut and some). Past it one is dropped, counted:
its message comes again and is a duplicate then. Rarely reached: the messages that wait stay
unacked, so a partition's consumer stops delivering at ``max_ack_pending``."""
RESEND_EVERY_S = 1.0
"""A lost output is sent again at once, then at most this often while it stays lost (one
refused at once, the outbox full, is not sent again in a tight loop)."""


def message_key(item: Inbound) -> Hashable:
    """What tells one message from another when the source sends it again: its topic and
    what it decoded to (the readings, the rejected payloads, the devices it ended). The
    source's token changes between deliveries, so it cannot be the key."""
    return (
        item.topic,
        tuple(item.readings),
        tuple((r.reason, r.topic, r.payload) for r in item.rejections),
        tuple(item.ended or ()),
    )


def claim(items: list[Inbound], waiting: Iterable[list[Inbound]]) -> list[Inbound]:
    """Move each of `items` that is a copy of a message in one of the `waiting` lists into
    that list; returns the others, in order.

    A copy the source says it sent again replaces an earlier such copy of the same message
    in the list (the token of either acks that message; keeping the latest bounds a list that
    waits through many redeliveries).
    """
    owner_of: dict[Hashable, list[Inbound]] = {}
    for owner in waiting:
        for item in owner:
            owner_of.setdefault(message_key(item), owner)
    if not owner_of:
        return items
    rest: list[Inbound] = []
    for item in items:
        key = message_key(item)
        found = owner_of.get(key)
        if found is None:
            rest.append(item)
            continue
        found[:] = [i for i in found if not (i.redelivered and message_key(i) == key)]
        found.append(item)
    return rest


class Resend:
    """Messages whose outputs were lost, and those outputs."""

    __slots__ = ("deliveries", "items", "next_try")

    def __init__(self, items: list[Inbound], deliveries: list[Delivery], next_try: float) -> None:
        self.items = items
        self.deliveries = deliveries
        self.next_try = next_try


class Resends:
    """The lost outputs the worker sends again, with the messages that wait for them.

    Args:
        max_outputs: lost outputs kept at most (`keep` refuses more).
        every_s: how often a lost output is sent again at most.
    """

    def __init__(
        self, max_outputs: int = MAX_RESEND_OUTPUTS, every_s: float = RESEND_EVERY_S
    ) -> None:
        self.max_outputs = max_outputs
        self.every_s = every_s
        self.entries: list[Resend] = []
        self.outputs = 0
        """Lost outputs kept (each counted until its entry is confirmed whole)."""

    def __bool__(self) -> bool:
        return bool(self.entries)

    def keep(self, items: list[Inbound], deliveries: Iterable[Delivery], now: float) -> bool:
        """Keep the lost ones of `deliveries`, to be sent again, with the messages that
        raised them (acked by `poll` once those are confirmed); False when there is no room
        for them (nothing is kept)."""
        lost = [d for d in deliveries if d.lost()]
        if self.outputs + len(lost) > self.max_outputs:
            return False
        self.entries.append(Resend(items, lost, now))
        self.outputs += len(lost)
        return True

    def poll(self, now: float) -> tuple[list[Inbound], int]:
        """Send again the outputs that are lost and due; returns the messages whose outputs
        are all confirmed now (to ack), and how many outputs were sent again."""
        confirmed: list[Inbound] = []
        sent = 0
        kept: list[Resend] = []
        for entry in self.entries:
            if all(d.done() and not d.lost() for d in entry.deliveries):
                confirmed.extend(entry.items)
                self.outputs -= len(entry.deliveries)
                continue
            kept.append(entry)
            if now < entry.next_try:
                continue
            lost = [d for d in entry.deliveries if d.lost()]
            if lost:
                for d in lost:
                    d.send_again()
                sent += len(lost)
                entry.next_try = now + self.every_s
        self.entries = kept
        return confirmed, sent

    def waiting(self) -> list[list[Inbound]]:
        """The lists of messages that wait (for `claim`)."""
        return [entry.items for entry in self.entries]
