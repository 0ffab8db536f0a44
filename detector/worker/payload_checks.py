"""What every payload format shares: the settings of the input contract, the rejection
reasons, and the checks of a reading's time, value and names.

`detector.worker.payloads` (JSON) and `detector.worker.metric_payloads` (Telegraf JSON, InfluxDB line
protocol) both go through these, so a reading is judged the same whatever form it came in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from detector.engine.readings import NOT_A_MEASUREMENT, valid_name
from detector.worker.topics import valid_filter

# Rejection reasons of the decoder (the core adds out_of_order, duplicate, too_many_series).
OVERSIZE = "oversize"
EMPTY_PAYLOAD = "empty_payload"
MALFORMED_JSON = "malformed_json"
MALFORMED_LINE = "malformed_line"
TOO_DEEP = "too_deep"
NOT_AN_OBJECT = "not_an_object"
BAD_TOPIC = "bad_topic"
BAD_NAME = "bad_name"
MISSING_FIELD = "missing_field"
NOT_A_NUMBER = "not_a_number"
NON_FINITE = "non_finite"
BAD_TS = "bad_ts"
FUTURE_TS = "future_ts"
TOO_MANY_READINGS = "too_many_readings"
DECODER_ERROR = "decoder_error"
# Sparkplug B (`detector.worker.sparkplug`)
MALFORMED_PROTOBUF = "malformed_protobuf"
UNKNOWN_ALIAS = "unknown_alias"
ALIAS_TABLE_FULL = "alias_table_full"

DECODER_REASONS = (
    OVERSIZE,
    EMPTY_PAYLOAD,
    MALFORMED_JSON,
    MALFORMED_LINE,
    TOO_DEEP,
    NOT_AN_OBJECT,
    BAD_TOPIC,
    BAD_NAME,
    MISSING_FIELD,
    NOT_A_NUMBER,
    NON_FINITE,
    BAD_TS,
    FUTURE_TS,
    TOO_MANY_READINGS,
    DECODER_ERROR,
    MALFORMED_PROTOBUF,
    UNKNOWN_ALIAS,
    ALIAS_TABLE_FULL,
    NOT_A_MEASUREMENT,
)

PayloadFormat = Literal["json", "telegraf", "influx", "sparkplug"]
FORMATS: tuple[str, ...] = ("json", "telegraf", "influx", "sparkplug")
TimeUnit = Literal["s", "ms", "us", "ns"]
UNITS_PER_S: dict[str, float] = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
# Keys of a JSON reading object that name something else than its time or value.
_RESERVED_KEYS = frozenset({"device", "metric", "values"})


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """What one message may carry, and how its payload is read."""

    max_bytes: int = 65_536
    """Payloads longer than this are rejected (``oversize``) before parsing."""
    max_readings: int = 1000
    """Readings one message may carry (array elements plus ``values`` entries, Telegraf or
    line-protocol fields, Sparkplug metrics)."""
    max_future_s: float = 300.0
    """A ts more than this ahead of the arrival time is rejected (``future_ts``)."""
    min_ts: float = 946_684_800.0
    """A ts before this (epoch seconds; default 2000-01-01) is rejected (``bad_ts``): a device
    whose clock was never set reports 1970, which would be scored decades in the past."""
    time_keys: tuple[str, ...] = ("ts", "timestamp", "time")
    """JSON: the keys a reading's time may come under (an object with two of them is
    ``bad_ts``; one without any takes the arrival time)."""
    value_keys: tuple[str, ...] = ("value",)
    """JSON: the keys a single reading's value may come under (one per object)."""
    formats: dict[str, PayloadFormat] = field(default_factory=dict)
    """Payload format by MQTT topic filter, JSON (``{"telegraf/#": "telegraf", "influx/#":
    "influx", "spBv1.0/#": "sparkplug"}``): the first filter matching a topic decides; other
    topics are ``json``."""
    device_tags: tuple[str, ...] = ("device", "host")
    """Telegraf and line protocol: the tags naming the device, first present wins (else the
    topic's ``{device}``)."""
    measurement_prefix: bool = True
    """Telegraf and line protocol: a field's metric is ``{measurement}_{field}`` (false:
    ``{field}``)."""
    telegraf_ts_unit: Literal["auto", "s", "ms", "us", "ns"] = "auto"
    """Telegraf JSON: unit of an integer ``timestamp`` (Telegraf's ``json_timestamp_units``);
    auto: by magnitude (below 1e11 s, 1e14 ms, 1e17 us, else ns)."""
    influx_precision: TimeUnit = "ns"
    """Line protocol: unit of the timestamp (InfluxDB's ``precision``)."""
    sparkplug_booleans: Literal["skip", "number"] = "skip"
    """Sparkplug B: Boolean metrics are skipped (``not_a_measurement``: a state, whose every
    change would look like a jump) or read as 0 and 1 (``number``)."""
    sparkplug_max_aliases: int = 10_000
    """Sparkplug B: names and aliases (and devices) remembered per edge node; BIRTH metrics
    beyond are rejected (``alias_table_full``)."""
    sparkplug_rebirth: bool = False
    """Sparkplug B: on DATA with unknown aliases, ask the edge node to publish its BIRTH again
    (NCMD ``Node Control/Rebirth`` on ``spBv1.0/{group}/NCMD/{edge node}``, at most every 30 s
    per node). Off: the worker publishes nothing to the plant. The broker must let the worker
    publish there."""
    sparkplug_max_nodes: int = 1_000
    """Sparkplug B: edge nodes remembered; past it the one born longest ago is forgotten
    (its DATA is ``unknown_alias`` until its next BIRTH)."""

    def __post_init__(self) -> None:
        for what, keys in (
            ("time_keys", self.time_keys),
            ("value_keys", self.value_keys),
            ("device_tags", self.device_tags),
        ):
            if not keys or any(not isinstance(k, str) or not k for k in keys):
                raise ValueError(f"{what} must be one or more non-empty names")
            if len(set(keys)) != len(keys):
                raise ValueError(f"{what} names a key twice")
        clash = (set(self.time_keys) & set(self.value_keys)) | (
            (set(self.time_keys) | set(self.value_keys)) & _RESERVED_KEYS
        )
        if clash:
            raise ValueError(f"keys {sorted(clash)} cannot name both a time and a value")
        for topic_filter, fmt in self.formats.items():
            if not valid_filter(topic_filter):
                raise ValueError(f"formats: {topic_filter!r} is not a valid MQTT topic filter")
            if fmt not in FORMATS:
                raise ValueError(f"formats: {fmt!r} is none of {', '.join(FORMATS)}")
        if self.telegraf_ts_unit != "auto" and self.telegraf_ts_unit not in UNITS_PER_S:
            raise ValueError(f"telegraf_ts_unit {self.telegraf_ts_unit!r} is no time unit")
        if self.sparkplug_booleans not in ("skip", "number"):
            raise ValueError(f"sparkplug_booleans {self.sparkplug_booleans!r}: skip or number")
        if self.influx_precision not in UNITS_PER_S:
            raise ValueError(f"influx_precision {self.influx_precision!r} is no time unit")


class Reject(Exception):
    """One reading (or the whole message) is rejected for `reason`; `labels`: the topic's
    labels, for a topic that is rejected as a whole (a bad name in it)."""

    def __init__(self, reason: str, detail: str, labels: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.labels = labels


def check_ts(ts: float, arrival: float, limits: PayloadLimits) -> float:
    """`ts` (epoch s) if within `limits` of `arrival`, else `Reject` (bad_ts, future_ts)."""
    if not math.isfinite(ts) or ts < 0:
        raise Reject(BAD_TS, f"ts {ts:.6g} is not a non-negative epoch time")
    if ts > arrival + limits.max_future_s:
        # %g: a ts of 1e300 must not become a 300-digit detail.
        raise Reject(
            FUTURE_TS,
            f"ts is {ts - arrival:.6g} s ahead of arrival (limit {limits.max_future_s:g} s)",
        )
    if ts < limits.min_ts:
        raise Reject(BAD_TS, f"ts {ts:.6g} is before {limits.min_ts:.6g} (clock never set?)")
    return ts


def epoch_number(raw: Any, per_s: float | None) -> float:
    """Epoch seconds of a JSON number in a unit of which `per_s` make a second, or, when None, in
    the unit its magnitude says: below 1e11 s, 1e14 ms, 1e17 us, else ns (each range holds
    the years 2001 to 5138 and no other unit's present)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise Reject(BAD_TS, f"ts is a JSON {json_type(raw)}, not a number")
    try:
        ts = float(raw)
    except OverflowError:
        raise Reject(BAD_TS, "ts is out of range") from None
    if not math.isfinite(ts) or ts < 0:
        raise Reject(BAD_TS, f"ts {ts:.6g} is not a non-negative epoch time")
    if per_s is not None:
        return ts / per_s  # a division: 1e18 ns * 1e-9 is 1e9 + 1e-7
    if ts < 1e11:
        return ts
    if ts < 1e14:
        return ts / 1e3
    if ts < 1e17:
        return ts / 1e6
    return ts / 1e9


MAX_TS_TEXT = 64


def iso_ts(text: str) -> float:
    """Epoch seconds of an ISO 8601 time (naive = UTC), or `Reject` (bad_ts)."""
    if len(text) > MAX_TS_TEXT:
        raise Reject(BAD_TS, "ts string is too long for an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Reject(BAD_TS, f"ts {short(text)!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # naive = UTC, per the contract
    try:
        ts = parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        raise Reject(BAD_TS, f"ts {short(text)!r} is out of range") from None
    if ts < 0:
        raise Reject(BAD_TS, f"ts {short(text)!r} is before 1970")
    return ts


NON_FINITE_WORDS = frozenset(
    {"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"}
)


def finite(raw: Any, what: str) -> float:
    """`raw` as a finite float, or `Reject` (not_a_number, non_finite)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        if isinstance(raw, str) and raw.strip().lower() in NON_FINITE_WORDS:
            raise Reject(NON_FINITE, f"{what} is not finite")
        raise Reject(NOT_A_NUMBER, f"{what} is a {json_type(raw)}, not a number")
    try:
        value = float(raw)
    except OverflowError:
        raise Reject(NON_FINITE, f"{what} is out of the float range") from None
    if not math.isfinite(value):
        raise Reject(NON_FINITE, f"{what} is not finite")
    return value


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def sanitise_name(name: str, what: str) -> str:
    """`name` with every run of characters outside our name rules made one ``_``
    (``"Temperature (°C)"`` -> ``Temperature_C_``); `Reject` (bad_name) when the result is
    still no valid name (empty, ``.``, longer than 64)."""
    if valid_name(name):
        return name
    safe = _UNSAFE.sub("_", name)
    if not valid_name(safe):
        raise Reject(BAD_NAME, f"{what} {short(name)!r} makes no valid name")
    return safe


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def encode(value: Any) -> bytes:
    """JSON of a decoded value (a batch element shown in its own dead letter)."""
    try:
        return msgspec.json.encode(value)
    except Exception:  # cannot happen for decoded JSON, but never raise here
        return b""


def short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def short_bytes(data: bytes, limit: int = 40) -> str:
    return short(data[: limit + 1].decode("utf-8", errors="replace").strip(), limit)
