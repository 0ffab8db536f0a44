"""Decoding MQTT messages into readings: the input contract of `iotad run`.

Runs on paho's network thread for every message, so it is written for speed (msgspec, a
topic cache, no pydantic) and it never raises: every problem becomes a `Rejection` with a
snake_case reason. Accepted forms (the README's "Input contract" has examples):

- topic ``sensors/{device}/{metric}``, payload a bare number (``23.4``): ts = arrival time;
- same topic, JSON ``{"ts": ..., "value": 23.4}`` (the time may also be called ``timestamp``
  or ``time``: one of the three, never two);
- topic ``sensors/{device}``, JSON ``{"ts": ..., "values": {"temperature": 23.4, ...}}``;
- a JSON array of such objects, each with optional ``device`` / ``metric`` fields.

``ts`` is epoch seconds, epoch milliseconds (> 1e11) or an ISO 8601 string (naive = UTC),
not before `PayloadLimits.min_ts` (a device whose clock was never set says 1970); an object
without a time takes the arrival time.

Counting rule: a message that yields no reading at all is exactly one rejection; otherwise
every reading it carries (one per array element, one per ``values`` entry) is either
accepted or rejected, so ``accepted + rejected == readings published``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from detector.readings import Reading, Rejection, valid_name
from detector.topics import DEFAULT_PATTERNS, TopicPattern

# Rejection reasons of the decoder (the core adds out_of_order, duplicate, too_many_series).
OVERSIZE = "oversize"
EMPTY_PAYLOAD = "empty_payload"
MALFORMED_JSON = "malformed_json"
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

DECODER_REASONS = (
    OVERSIZE,
    EMPTY_PAYLOAD,
    MALFORMED_JSON,
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
)

# Above this a numeric ts is epoch milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 1e11
_NON_FINITE_WORDS = frozenset(
    {"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"}
)
_NUMBER_START = frozenset(b"-0123456789")
# NaN / Infinity as a bare token (not inside a string or a longer word such as "info").
_NON_FINITE_TOKEN = re.compile(rb"(?i)(?:^|[\s:,\[])[-+]?(?:nan|inf(?:inity)?)\s*(?:$|[,}\]])")
_MAX_TS_TEXT = 64
# The keys a reading's time may come under: several integrations name it otherwise, and a
# time under a key we ignored would silently become the arrival time (replayed data scored
# at the wrong time).
TS_KEYS = ("ts", "timestamp", "time")
_TOPIC_CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """Bounds on what one message may carry."""

    max_bytes: int = 65_536
    """Payloads longer than this are rejected (``oversize``) before parsing."""
    max_readings: int = 1000
    """Readings one message may carry (array elements plus ``values`` entries)."""
    max_future_s: float = 300.0
    """A ts more than this ahead of the arrival time is rejected (``future_ts``)."""
    min_ts: float = 946_684_800.0
    """A ts before this (epoch seconds; default 2000-01-01) is rejected (``bad_ts``): a device
    whose clock was never set reports 1970, which would be scored decades in the past."""


class Decoded:
    """What one message yielded: accepted readings and rejections (each one reading)."""

    __slots__ = ("readings", "rejections")

    def __init__(self) -> None:
        # A plain class: a dataclass with default factories costs twice as much per message.
        self.readings: list[Reading] = []
        self.rejections: list[Rejection] = []

    @property
    def n_readings(self) -> int:
        return len(self.readings) + len(self.rejections)


class _Reject(Exception):
    """Internal: one reading (or the whole message) is rejected for `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class PayloadDecoder:
    """Turns ``(topic, payload)`` into readings and rejections; never raises.

    Not thread-safe: one decoder per network thread (it caches parsed topics and keeps the
    arrival clock strictly increasing so that bare numbers never collide in time).
    """

    def __init__(
        self,
        patterns: Sequence[str] = DEFAULT_PATTERNS,
        limits: PayloadLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.patterns = [TopicPattern(p) for p in patterns]
        self.limits = limits or PayloadLimits()
        self._clock = clock
        self._json = msgspec.json.Decoder()
        # topic -> (device, metric), or (reason, detail) of its rejection marked by a None first
        self._topics: dict[str, tuple[str | None, str | None] | tuple[None, str, str]] = {}
        self._last_arrival = -math.inf

    def decode(self, topic: bytes | str, payload: bytes, arrival: float | None = None) -> Decoded:
        """Decode one message. `arrival` (epoch s) defaults to the decoder's clock."""
        out = Decoded()
        topic_text = ""
        try:
            if arrival is None:
                arrival = self._clock()
            # Strictly increasing arrival times: two bare numbers of one series arriving within
            # the clock's resolution must not look like duplicates to the core.
            if arrival <= self._last_arrival:
                arrival = self._last_arrival + 1e-6
            self._last_arrival = arrival
            topic_text = topic.decode("utf-8") if isinstance(topic, bytes) else topic
            self._decode(topic_text, payload, arrival, out)
        except _Reject as rej:
            out.readings.clear()
            out.rejections[:] = [Rejection(rej.reason, rej.detail, topic_text, payload)]
        except UnicodeDecodeError:
            out.readings.clear()
            out.rejections[:] = [Rejection(BAD_TOPIC, "topic is not UTF-8", "", payload)]
        except Exception as exc:  # the network thread must survive any input
            out.readings.clear()
            out.rejections[:] = [
                Rejection(DECODER_ERROR, f"{type(exc).__name__}: {exc}"[:200], topic_text, payload)
            ]
        return out

    # -- topic ---------------------------------------------------------------------------

    def _topic(self, topic: str) -> tuple[str | None, str | None]:
        cached = self._topics.get(topic)
        if cached is None:
            cached = self._parse_topic(topic)
            if len(self._topics) >= _TOPIC_CACHE_MAX:
                self._topics.clear()  # bounded: a flood of distinct topics cannot grow it
            self._topics[topic] = cached
        if len(cached) == 3:
            # A fresh exception each time: re-raising one cached instance grows its traceback.
            raise _Reject(cached[1], cached[2])
        return cached  # type: ignore[return-value]

    def _parse_topic(self, topic: str) -> tuple[str | None, str | None] | tuple[None, str, str]:
        parts = topic.split("/")
        for pattern in self.patterns:
            found = pattern.match(parts)
            if found is None:
                continue
            for kind, name in zip(("device", "metric"), found, strict=True):
                if name is not None and not valid_name(name):
                    return (None, BAD_NAME, f"{kind} {_short(name)!r} in topic is not a valid name")
            return found
        shown = " or ".join(p.pattern for p in self.patterns)
        return (None, BAD_TOPIC, f"topic matches none of {shown}")

    # -- payload -------------------------------------------------------------------------

    def _decode(self, topic: str, payload: bytes, arrival: float, out: Decoded) -> None:
        size = len(payload)
        if size > self.limits.max_bytes:
            raise _Reject(OVERSIZE, f"payload of {size} bytes exceeds {self.limits.max_bytes}")
        device, metric = self._topic(topic)
        if size == 0:
            raise _Reject(EMPTY_PAYLOAD, "empty payload")
        first = payload.lstrip()[:1]
        if first and first[0] in _NUMBER_START:
            value = self._bare_number(payload)
            if device is None or metric is None:
                raise _Reject(
                    MISSING_FIELD, "a bare number needs a topic naming both device and metric"
                )
            out.readings.append(Reading(device, metric, arrival, value))
            return
        try:
            doc = self._json.decode(payload)
        except msgspec.ValidationError:  # e.g. 1e400: "Number out of range"
            doc = _lenient_json(payload)
        except msgspec.DecodeError as exc:
            if not _looks_non_finite(payload):
                raise _Reject(MALFORMED_JSON, _short(str(exc))) from None
            doc = _lenient_json(payload)
        except RecursionError:
            raise _Reject(TOO_DEEP, "JSON nesting is too deep") from None
        if isinstance(doc, dict):
            self._object(doc, device, metric, arrival, topic, payload, out, "")
        elif isinstance(doc, list):
            self._array(doc, device, metric, arrival, topic, out)
        elif (isinstance(doc, str) and doc.strip().lower() in _NON_FINITE_WORDS) or (
            isinstance(doc, float) and not math.isfinite(doc)
        ):
            raise _Reject(NON_FINITE, "value is not finite")
        else:
            raise _Reject(NOT_A_NUMBER, f"payload is a JSON {_json_type(doc)}, not a number")

    def _bare_number(self, payload: bytes) -> float:
        try:
            doc = self._json.decode(payload)
        except msgspec.ValidationError:
            raise _Reject(NON_FINITE, "value is out of the float range") from None
        except msgspec.DecodeError:
            if _looks_non_finite(payload):
                raise _Reject(NON_FINITE, "value is not finite") from None
            raise _Reject(
                NOT_A_NUMBER, f"payload {_short_bytes(payload)!r} is not a number"
            ) from None
        if isinstance(doc, bool) or not isinstance(doc, (int, float)):
            raise _Reject(NOT_A_NUMBER, f"payload {_short_bytes(payload)!r} is not a number")
        return _finite(doc, "value")

    def _array(
        self,
        doc: list[Any],
        device: str | None,
        metric: str | None,
        arrival: float,
        topic: str,
        out: Decoded,
    ) -> None:
        if not doc:
            raise _Reject(MISSING_FIELD, "empty array carries no reading")
        if len(doc) > self.limits.max_readings:
            raise _Reject(
                TOO_MANY_READINGS, f"array of {len(doc)} exceeds {self.limits.max_readings}"
            )
        for i, element in enumerate(doc):
            where = f"[{i}]"
            if len(out.readings) + len(out.rejections) > self.limits.max_readings:
                break  # `values` maps made it too many; rejected below
            if not isinstance(element, dict):
                reason = TOO_DEEP if isinstance(element, list) else NOT_AN_OBJECT
                out.rejections.append(
                    Rejection(
                        reason,
                        f"{where}: {_json_type(element)} is not a reading object",
                        topic,
                        _encode(element),
                    )
                )
                continue
            self._object(element, device, metric, arrival, topic, None, out, where)
        if len(out.readings) + len(out.rejections) > self.limits.max_readings:
            raise _Reject(
                TOO_MANY_READINGS,
                f"{len(out.readings) + len(out.rejections)} readings exceed "
                f"{self.limits.max_readings}",
            )

    def _object(
        self,
        obj: dict[str, Any],
        device: str | None,
        metric: str | None,
        arrival: float,
        topic: str,
        payload: bytes | None,
        out: Decoded,
        where: str,
    ) -> None:
        """Readings of one object; per-reading problems become rejections in `out`.

        `payload` is the raw message for a top-level object; for an array element it is None
        and the element itself is re-encoded into the rejection, so a dead letter shows the
        part that was wrong rather than the whole batch.
        """
        if device is not None and metric is not None and len(obj) == 2:
            # Fast path for the common form, {"ts": <float>, "value": <float>} on a
            # device/metric topic: the same checks as below, inlined (anything else, e.g. an
            # int or millisecond ts, a future ts, takes the general path).
            ts, value = obj.get("ts"), obj.get("value")
            if (
                type(ts) is float
                and type(value) is float
                and self.limits.min_ts <= ts <= _MS_THRESHOLD
                and ts <= arrival + self.limits.max_future_s
                and math.isfinite(value)
            ):
                out.readings.append(Reading(device, metric, ts, value))
                return
        prefix = f"{where}: " if where else ""
        values = obj.get("values")
        n = len(values) if isinstance(values, dict) and values else 1
        try:
            device = _name(obj, "device", device)
            if device is None:
                raise _Reject(MISSING_FIELD, "no device in topic or payload")
            ts = self._object_ts(obj, arrival)
            if values is not None:
                if "value" in obj:
                    raise _Reject(MISSING_FIELD, "object has both 'value' and 'values'")
                if not isinstance(values, dict):
                    raise _Reject(NOT_AN_OBJECT, "'values' must map metric names to numbers")
                if not values:
                    raise _Reject(MISSING_FIELD, "'values' is empty")
            elif "value" in obj:
                metric = _name(obj, "metric", metric)
                if metric is None:
                    raise _Reject(MISSING_FIELD, "no metric in topic or payload")
                out.readings.append(Reading(device, metric, ts, _finite(obj["value"], "value")))
                return
            else:
                raise _Reject(MISSING_FIELD, "object has neither 'value' nor 'values'")
        except _Reject as rej:
            body = payload if payload is not None else _encode(obj)
            rejection = Rejection(rej.reason, prefix + rej.detail, topic, body)
            out.rejections.extend([rejection] * n)
            return
        if len(values) > self.limits.max_readings:
            raise _Reject(
                TOO_MANY_READINGS, f"{len(values)} values exceed {self.limits.max_readings}"
            )
        for name, raw in values.items():
            try:
                if not valid_name(name):
                    raise _Reject(BAD_NAME, f"metric {_short(name)!r} is not a valid name")
                out.readings.append(Reading(device, name, ts, _finite(raw, f"values.{name}")))
            except _Reject as rej:
                body = payload if payload is not None else _encode(obj)
                out.rejections.append(Rejection(rej.reason, prefix + rej.detail, topic, body))

    def _object_ts(self, obj: dict[str, Any], arrival: float) -> float:
        """The object's time under one of `TS_KEYS`, or the arrival time when it has none."""
        present = [key for key in TS_KEYS if key in obj]
        if not present:
            return arrival
        if len(present) > 1:
            raise _Reject(BAD_TS, f"object has more than one time ({', '.join(present)})")
        return self._ts(obj[present[0]], arrival)

    def _ts(self, raw: Any, arrival: float) -> float:
        if isinstance(raw, bool):
            raise _Reject(BAD_TS, "ts is a boolean")
        if isinstance(raw, (int, float)):
            try:
                ts = float(raw)
            except OverflowError:
                raise _Reject(BAD_TS, "ts is out of range") from None
            if not math.isfinite(ts) or ts < 0:
                raise _Reject(BAD_TS, f"ts {ts:.6g} is not a non-negative epoch time")
            if ts > _MS_THRESHOLD:
                ts /= 1000.0
        elif isinstance(raw, str):
            ts = _iso_ts(raw)
        else:
            raise _Reject(BAD_TS, f"ts is a JSON {_json_type(raw)}")
        if ts > arrival + self.limits.max_future_s:
            # %g: a ts of 1e300 must not become a 300-digit detail.
            raise _Reject(
                FUTURE_TS,
                f"ts is {ts - arrival:.6g} s ahead of arrival "
                f"(limit {self.limits.max_future_s:g} s)",
            )
        if ts < self.limits.min_ts:
            raise _Reject(
                BAD_TS, f"ts {ts:.6g} is before {self.limits.min_ts:.6g} (clock never set?)"
            )
        return ts


def _iso_ts(text: str) -> float:
    if len(text) > _MAX_TS_TEXT:
        raise _Reject(BAD_TS, "ts string is too long for an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _Reject(BAD_TS, f"ts {_short(text)!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # naive = UTC, per the contract
    try:
        ts = parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        raise _Reject(BAD_TS, f"ts {_short(text)!r} is out of range") from None
    if ts < 0:
        raise _Reject(BAD_TS, f"ts {_short(text)!r} is before 1970")
    return ts


def _name(obj: dict[str, Any], kind: str, default: str | None) -> str | None:
    """The object's `kind` field ("device"/"metric") if present, else the topic's."""
    if kind not in obj:
        return default
    name = obj[kind]
    if not isinstance(name, str):
        raise _Reject(BAD_NAME, f"{kind} is a JSON {_json_type(name)}, not a string")
    if not valid_name(name):
        raise _Reject(BAD_NAME, f"{kind} {_short(name)!r} is not a valid name")
    return name


def _finite(raw: Any, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        if isinstance(raw, str) and raw.strip().lower() in _NON_FINITE_WORDS:
            raise _Reject(NON_FINITE, f"{what} is not finite")
        raise _Reject(NOT_A_NUMBER, f"{what} is a JSON {_json_type(raw)}, not a number")
    try:
        value = float(raw)
    except OverflowError:
        raise _Reject(NON_FINITE, f"{what} is out of the float range") from None
    if not math.isfinite(value):
        raise _Reject(NON_FINITE, f"{what} is not finite")
    return value


def _looks_non_finite(payload: bytes) -> bool:
    """NaN/Infinity written where JSON does not allow them (bare or as a field value)."""
    return _NON_FINITE_TOKEN.search(payload) is not None


def _json_type(value: Any) -> str:
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


def _encode(value: Any) -> bytes:
    try:
        return msgspec.json.encode(value)
    except Exception:  # cannot happen for decoded JSON, but never raise here
        return b""


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _short_bytes(data: bytes, limit: int = 40) -> str:
    return _short(data[: limit + 1].decode("utf-8", errors="replace").strip(), limit)


def _lenient_json(payload: bytes) -> Any:
    """Decode JSON that msgspec refused only for NaN, Infinity or a number out of range.

    The standard library reads those as non-finite floats, so in a batch only the readings
    that carry them are rejected (as ``non_finite``) and every other reading still counts.
    Rare, so the slower decoder costs nothing on the hot path.
    """
    try:
        return json.loads(payload)
    except RecursionError:
        raise _Reject(TOO_DEEP, "JSON nesting is too deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        if _looks_non_finite(payload):
            raise _Reject(NON_FINITE, "value is not finite") from None
        raise _Reject(MALFORMED_JSON, _short(str(exc))) from None
