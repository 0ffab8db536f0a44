"""Decoding MQTT messages into readings: the input contract of `iotad run`.

Runs on paho's network thread for every message, so it is written for speed (msgspec, a
topic cache, no pydantic) and it never raises: every problem becomes a `Rejection` with a
snake_case reason. Accepted forms (the README's "Input contract" has examples):

- topic ``sensors/{device}/{metric}``, payload a bare number (``23.4``): ts = arrival time;
- same topic, JSON ``{"ts": ..., "value": 23.4}`` (the time may also be called ``timestamp``
  or ``time``: one of the three, never two; a time given but unreadable is ``bad_ts``);
- topic ``sensors/{device}``, JSON ``{"ts": ..., "values": {"temperature": 23.4, ...}}``;
- a JSON array of such objects, each with optional ``device`` / ``metric`` fields;
- on topics `PayloadLimits.formats` maps to them, Telegraf JSON and InfluxDB line protocol
  (`detector.worker.metric_payloads`) and Sparkplug B (`detector.worker.sparkplug`, imported
  only then).

The time and value keys are `PayloadLimits.time_keys` and `value_keys` (defaults above).
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
from typing import TYPE_CHECKING, Any

import msgspec

from detector.config.payload_limits import PayloadLimits
from detector.engine.readings import Reading, Rejection, valid_name
from detector.worker.metric_payloads import MetricDecoder
from detector.worker.payload_checks import (
    BAD_NAME,
    BAD_TOPIC,
    BAD_TS,
    DECODER_ERROR,
    DECODER_REASONS,
    EMPTY_PAYLOAD,
    MALFORMED_JSON,
    MISSING_FIELD,
    NON_FINITE,
    NON_FINITE_WORDS,
    NOT_A_NUMBER,
    NOT_AN_OBJECT,
    OVERSIZE,
    TOO_DEEP,
    TOO_MANY_READINGS,
    Reject,
    check_ts,
    encode,
    finite,
    iso_ts,
    json_type,
    short,
    short_bytes,
)
from detector.worker.topics import DEFAULT_PATTERNS, Labels, TopicPattern, topic_matches

if TYPE_CHECKING:
    from detector.worker.sparkplug import Ended, SparkplugDecoder

__all__ = ["DECODER_REASONS", "Decoded", "PayloadDecoder", "PayloadLimits"]

# Above this a numeric ts is epoch milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 1e11
_NUMBER_START = frozenset(b"-0123456789")
# NaN / Infinity as a bare token (not inside a string or a longer word such as "info").
_NON_FINITE_TOKEN = re.compile(rb"(?i)(?:^|[\s:,\[])[-+]?(?:nan|inf(?:inity)?)\s*(?:$|[,}\]])")
_TOPIC_CACHE_MAX = 100_000
# A topic's format, its device and metric (None where its pattern names none, or for a
# Telegraf or line-protocol topic no pattern matched), its rejection reason and detail
# (reason None: the topic is fine), and its labels (None: its pattern names none).
_TopicEntry = tuple[str, str | None, str | None, str | None, str, Labels | None]


class Decoded:
    """What one message yielded: accepted readings and rejections (each one reading), and
    the devices whose series it ended (a Sparkplug DEATH; None for any other message)."""

    __slots__ = ("ended", "labels", "readings", "rejections")

    def __init__(self) -> None:
        # A plain class: a dataclass with default factories costs twice as much per message.
        self.readings: list[Reading] = []
        self.rejections: list[Rejection] = []
        self.ended: list[Ended] | None = None
        self.labels: Labels | None = None
        """The labels of every reading and rejection of the message (its topic's), or None."""

    @property
    def n_readings(self) -> int:
        return len(self.readings) + len(self.rejections)


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
        self._time_keys = self.limits.time_keys
        self._value_keys = self.limits.value_keys
        # The fast path's form: {"<first time key>": <float>, "<first value key>": <float>}.
        self._ts_key = self._time_keys[0]
        self._value_key = self._value_keys[0]
        self._formats = list(self.limits.formats.items())
        self._metrics = MetricDecoder(self.limits, self._parse_json)
        self.sparkplug: SparkplugDecoder | None = None
        if "sparkplug" in self.limits.formats.values():
            # protobuf is imported only by workers that read Sparkplug.
            from detector.worker.sparkplug import SparkplugDecoder

            self.sparkplug = SparkplugDecoder(self.limits)
        # topic -> (format, device, metric, rejection reason, detail); reason None: accepted
        self._topics: dict[str, _TopicEntry] = {}
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
        except Reject as rej:
            out.readings.clear()
            out.rejections[:] = [Rejection(rej.reason, rej.detail, topic_text, payload)]
            if rej.labels is not None:
                out.labels = rej.labels
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

    def _topic(self, topic: str) -> _TopicEntry:
        cached = self._topics.get(topic)
        if cached is None:
            cached = self._parse_topic(topic)
            if len(self._topics) >= _TOPIC_CACHE_MAX:
                self._topics.clear()  # bounded: a flood of distinct topics cannot grow it
            self._topics[topic] = cached
        if cached[3] is not None:
            # A fresh exception each time: re-raising one cached instance grows its traceback.
            raise Reject(cached[3], cached[4], cached[5])
        return cached

    def _parse_topic(self, topic: str) -> _TopicEntry:
        fmt = next((f for flt, f in self._formats if topic_matches(flt, topic)), "json")
        parts = topic.split("/")
        for pattern in self.patterns:
            found = pattern.match(parts)
            if found is None:
                continue
            device, metric, labels = found
            named = [("device", device), ("metric", metric), *labels.items()]
            for kind, name in named:
                if name is not None and not valid_name(name):
                    detail = f"{kind} {short(name)!r} in topic is not a valid name"
                    return (fmt, None, None, BAD_NAME, detail, labels or None)
            return (fmt, device, metric, None, "", labels or None)
        if fmt != "json":
            # Telegraf and line protocol name the device in tags, Sparkplug in its own topics
            return (fmt, None, None, None, "", None)
        shown = " or ".join(p.pattern for p in self.patterns)
        return (fmt, None, None, BAD_TOPIC, f"topic matches none of {shown}", None)

    # -- payload -------------------------------------------------------------------------

    def _decode(self, topic: str, payload: bytes, arrival: float, out: Decoded) -> None:
        size = len(payload)
        if size > self.limits.max_bytes:
            raise Reject(OVERSIZE, f"payload of {size} bytes exceeds {self.limits.max_bytes}")
        cached = self._topics.get(topic)  # the cache hit inlined: a call is ~4 % of a message
        if cached is None or cached[3] is not None:
            cached = self._topic(topic)
        fmt, device, metric = cached[0], cached[1], cached[2]
        if cached[5] is not None:
            out.labels = cached[5]
        if fmt == "sparkplug" and self.sparkplug is not None:
            # Before the empty check: a DEATH may come without a payload.
            self.sparkplug.decode(topic, payload, arrival, out)
            return
        if size == 0:
            raise Reject(EMPTY_PAYLOAD, "empty payload")
        if fmt != "json":
            if fmt == "telegraf":
                self._metrics.telegraf(
                    payload, device, arrival, topic, out.readings, out.rejections
                )
            else:
                self._metrics.influx(payload, device, arrival, topic, out.readings, out.rejections)
            return
        first = payload.lstrip()[:1]
        if first and first[0] in _NUMBER_START:
            value = self._bare_number(payload)
            if device is None or metric is None:
                raise Reject(
                    MISSING_FIELD, "a bare number needs a topic naming both device and metric"
                )
            out.readings.append(Reading(device, metric, arrival, value))
            return
        try:
            # `_parse_json` inlined: the call cost ~4 % of this path.
            doc = self._json.decode(payload)
        except msgspec.ValidationError:  # e.g. 1e400: "Number out of range"
            doc = _lenient_json(payload)
        except msgspec.DecodeError as exc:
            if not _looks_non_finite(payload):
                raise Reject(MALFORMED_JSON, short(str(exc))) from None
            doc = _lenient_json(payload)
        except RecursionError:
            raise Reject(TOO_DEEP, "JSON nesting is too deep") from None
        if isinstance(doc, dict):
            self._object(doc, device, metric, arrival, topic, payload, out, "")
        elif isinstance(doc, list):
            self._array(doc, device, metric, arrival, topic, out)
        elif (isinstance(doc, str) and doc.strip().lower() in NON_FINITE_WORDS) or (
            isinstance(doc, float) and not math.isfinite(doc)
        ):
            raise Reject(NON_FINITE, "value is not finite")
        else:
            raise Reject(NOT_A_NUMBER, f"payload is a JSON {json_type(doc)}, not a number")

    def _parse_json(self, payload: bytes) -> Any:
        """The JSON document of `payload`, or `Reject` (malformed_json, too_deep, ...)."""
        try:
            return self._json.decode(payload)
        except msgspec.ValidationError:  # e.g. 1e400: "Number out of range"
            return _lenient_json(payload)
        except msgspec.DecodeError as exc:
            if not _looks_non_finite(payload):
                raise Reject(MALFORMED_JSON, short(str(exc))) from None
            return _lenient_json(payload)
        except RecursionError:
            raise Reject(TOO_DEEP, "JSON nesting is too deep") from None

    def _bare_number(self, payload: bytes) -> float:
        try:
            doc = self._json.decode(payload)
        except msgspec.ValidationError:
            raise Reject(NON_FINITE, "value is out of the float range") from None
        except msgspec.DecodeError:
            if _looks_non_finite(payload):
                raise Reject(NON_FINITE, "value is not finite") from None
            raise Reject(
                NOT_A_NUMBER, f"payload {short_bytes(payload)!r} is not a number"
            ) from None
        if isinstance(doc, bool) or not isinstance(doc, (int, float)):
            raise Reject(NOT_A_NUMBER, f"payload {short_bytes(payload)!r} is not a number")
        return finite(doc, "value")

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
            raise Reject(MISSING_FIELD, "empty array carries no reading")
        if len(doc) > self.limits.max_readings:
            raise Reject(
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
                        f"{where}: {json_type(element)} is not a reading object",
                        topic,
                        encode(element),
                    )
                )
                continue
            self._object(element, device, metric, arrival, topic, None, out, where)
        if len(out.readings) + len(out.rejections) > self.limits.max_readings:
            raise Reject(
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
            ts, value = obj.get(self._ts_key), obj.get(self._value_key)
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
                raise Reject(MISSING_FIELD, "no device in topic or payload")
            ts = self._object_ts(obj, arrival)
            value_keys: Sequence[str] = self._value_keys
            if len(value_keys) == 1:  # the common case, without building a list
                value_keys = value_keys if value_keys[0] in obj else ()
            else:
                value_keys = [key for key in value_keys if key in obj]
            if len(value_keys) > 1:
                raise Reject(
                    MISSING_FIELD, f"object has more than one value ({', '.join(value_keys)})"
                )
            if values is not None:
                if value_keys:
                    raise Reject(MISSING_FIELD, f"object has both {value_keys[0]!r} and 'values'")
                if not isinstance(values, dict):
                    raise Reject(NOT_AN_OBJECT, "'values' must map metric names to numbers")
                if not values:
                    raise Reject(MISSING_FIELD, "'values' is empty")
            elif value_keys:
                key = value_keys[0]
                metric = _name(obj, "metric", metric)
                if metric is None:
                    raise Reject(MISSING_FIELD, "no metric in topic or payload")
                out.readings.append(Reading(device, metric, ts, finite(obj[key], key)))
                return
            else:
                raise Reject(
                    MISSING_FIELD,
                    f"object has neither {' nor '.join(map(repr, self._value_keys))} nor 'values'",
                )
        except Reject as rej:
            body = payload if payload is not None else encode(obj)
            rejection = Rejection(rej.reason, prefix + rej.detail, topic, body)
            out.rejections.extend([rejection] * n)
            return
        if len(values) > self.limits.max_readings:
            raise Reject(
                TOO_MANY_READINGS, f"{len(values)} values exceed {self.limits.max_readings}"
            )
        for name, raw in values.items():
            try:
                if not valid_name(name):
                    raise Reject(BAD_NAME, f"metric {short(name)!r} is not a valid name")
                out.readings.append(Reading(device, name, ts, finite(raw, f"values.{name}")))
            except Reject as rej:
                body = payload if payload is not None else encode(obj)
                out.rejections.append(Rejection(rej.reason, prefix + rej.detail, topic, body))

    def _object_ts(self, obj: dict[str, Any], arrival: float) -> float:
        """The object's time under one of the time keys, or the arrival time when it has none."""
        present = [key for key in self._time_keys if key in obj]
        if not present:
            return arrival
        if len(present) > 1:
            raise Reject(BAD_TS, f"object has more than one time ({', '.join(present)})")
        return self._ts(obj[present[0]], arrival)

    def _ts(self, raw: Any, arrival: float) -> float:
        if isinstance(raw, str):
            return check_ts(iso_ts(raw), arrival, self.limits)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise Reject(BAD_TS, f"ts is a JSON {json_type(raw)}")
        try:
            ts = float(raw)
        except OverflowError:
            raise Reject(BAD_TS, "ts is out of range") from None
        if ts > _MS_THRESHOLD:
            ts /= 1000.0
        limits = self.limits
        # `check_ts` inlined for the usual case (a call is ~15 % of this method).
        if limits.min_ts <= ts <= arrival + limits.max_future_s:
            return ts
        return check_ts(ts, arrival, limits)


def _name(obj: dict[str, Any], kind: str, default: str | None) -> str | None:
    """The object's `kind` field ("device"/"metric") if present, else the topic's."""
    if kind not in obj:
        return default
    name = obj[kind]
    if not isinstance(name, str):
        raise Reject(BAD_NAME, f"{kind} is a JSON {json_type(name)}, not a string")
    if not valid_name(name):
        raise Reject(BAD_NAME, f"{kind} {short(name)!r} is not a valid name")
    return name


def _looks_non_finite(payload: bytes) -> bool:
    """NaN/Infinity written where JSON does not allow them (bare or as a field value)."""
    return _NON_FINITE_TOKEN.search(payload) is not None


def _lenient_json(payload: bytes) -> Any:
    """Decode JSON that msgspec refused only for NaN, Infinity or a number out of range.

    The standard library reads those as non-finite floats, so in a batch only the readings
    that carry them are rejected (as ``non_finite``) and every other reading still counts.
    Rare, so the slower decoder costs nothing on the hot path.
    """
    try:
        return json.loads(payload)
    except RecursionError:
        raise Reject(TOO_DEEP, "JSON nesting is too deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        if _looks_non_finite(payload):
            raise Reject(NON_FINITE, "value is not finite") from None
        raise Reject(MALFORMED_JSON, short(str(exc))) from None
