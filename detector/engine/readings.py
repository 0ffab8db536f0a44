"""The values that flow through the detector: readings in, rejections aside."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

# Device and metric names end up in topic names, metric labels and file names, so they are
# restricted to a safe alphabet before anything else sees them.
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def valid_name(name: str) -> bool:
    """True when `name` is safe as a device or metric name (1-64 of [A-Za-z0-9_.-])."""
    return bool(NAME_RE.match(name)) and name not in {".", ".."}


def series_key(device: str, metric: str) -> str:
    """The artifact's and checkpoints' key for a series: ``device/metric``."""
    return f"{device}/{metric}"


class Reading(NamedTuple):
    """One sensor value. `ts` is epoch seconds (float).

    Immutable and hashable. A NamedTuple rather than a frozen dataclass: one is built per
    reading on the network thread, and a frozen dataclass cost 1.4-2.6 us to construct
    against ~0.3 us for this (it also compares equal to a plain tuple of its fields).
    """

    device: str
    metric: str
    ts: float
    value: float

    @property
    def key(self) -> str:
        return f"{self.device}/{self.metric}"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Input that was not accepted, and why. `reason` is a short snake_case label."""

    reason: str
    detail: str
    topic: str = ""
    payload: bytes = b""


# Messages the MQTT adapter hands over undecoded, and why (see `detector.worker.mqtt_client`).
RETAINED = "retained"
"""Delivered because a retained message existed when the worker subscribed (MQTT 3.1.1; v5
subscriptions ask the broker not to send them): a replay of an old reading, not a new one."""
OWN_OUTPUT = "own_output"
"""On a topic the worker itself publishes to (alerts, scores, dead letters, status)."""
NOT_SUBSCRIBED = "not_subscribed"
"""Matching none of the configured filters: a subscription an earlier run left in the
persistent session."""
NOT_A_MEASUREMENT = "not_a_measurement"
"""A value that is no measurement (a Sparkplug string, dataset, ...), skipped."""
NOT_DEAD_LETTERED = frozenset({RETAINED, OWN_OUTPUT, NOT_A_MEASUREMENT})
"""Counted and logged, never dead-lettered: a dead letter of the worker's own output is how
it once looped, one per retained topic at every restart is noise, not news, and so would be
one per string tag of every message of a Sparkplug gateway."""

# Why a decoded reading is dropped before it is scored (the decoder's own reasons are
# `detector.worker.payload_checks.DECODER_REASONS`).
OUT_OF_ORDER = "out_of_order"
"""Not after its series' order bound (`detector.engine.core`)."""
DUPLICATE = "duplicate"
"""A reading with the same time and value is in its series' window: a redelivery."""
OUT_OF_RANGE = "out_of_range"
"""A value beyond ``detector.engine.core.MAX_ABS_VALUE`` (or a non-finite one)."""
TOO_MANY_SERIES = "too_many_series"
"""A new series while ``max_series`` are active."""
CORE_ERROR = "core_error"
"""The detection core failed on the batch (`detector.worker.loop`): dropped, never retried."""
WRONG_PARTITION = "wrong_partition"
"""NATS only: a reading whose device hashes to another partition (`detector.worker.nats_source`)."""
DROP_REASONS = (OUT_OF_ORDER, DUPLICATE, OUT_OF_RANGE, TOO_MANY_SERIES, CORE_ERROR, WRONG_PARTITION)
"""Every reason a reading is dropped after decoding."""
