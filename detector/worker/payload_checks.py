"""What every payload format shares: the rejection reasons and the checks of a reading's
time, value and names (the input contract's settings: `detector.config.payload_limits`).

`detector.worker.payloads` (JSON) and `detector.worker.metric_payloads` (Telegraf JSON,
InfluxDB line protocol) both go through these, so a reading is judged the same whatever form
it came in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from detector.config.payload_limits import (
    PayloadLimits,
)
from detector.engine.readings import NOT_A_MEASUREMENT, valid_name

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
