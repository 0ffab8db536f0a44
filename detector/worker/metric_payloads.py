"""Telegraf JSON and InfluxDB line protocol: the metric formats plants already publish.

Both carry measurements with tags and several fields; each numeric field becomes a reading:

- device: the first of `PayloadLimits.device_tags` present in the tags (default ``device``,
  then ``host``), else the topic's ``{device}``;
- metric: ``{measurement}_{field}`` (or ``{field}`` when `measurement_prefix` is off);
- both sanitised to our name rules (every run of other characters becomes ``_``); a name
  that still breaks them (empty, longer than 64) is ``bad_name``.

Counting rule as for JSON: each field is one reading, accepted or rejected (a string or
boolean field is ``not_a_number``); a metric or line that cannot be read at all is one
rejection (``not_an_object``, ``malformed_line``, ...). Used by `detector.worker.payloads`, on the
network thread: fast, and never raises anything but `Reject` for the whole message.
"""

from __future__ import annotations

from collections.abc import Callable
from math import isfinite
from typing import Any

from detector.config.payload_limits import UNITS_PER_S, PayloadLimits
from detector.engine.readings import Reading, Rejection
from detector.worker.lineprotocol import LineError, parse_line
from detector.worker.payload_checks import (
    EMPTY_PAYLOAD,
    MALFORMED_LINE,
    MISSING_FIELD,
    NOT_A_NUMBER,
    NOT_AN_OBJECT,
    TOO_MANY_READINGS,
    Reject,
    check_ts,
    encode,
    epoch_number,
    finite,
    iso_ts,
    json_type,
    sanitise_name,
    short,
)

_NAME_CACHE_MAX = 10_000


class MetricDecoder:
    """Readings of Telegraf JSON and line-protocol payloads (see the module docstring)."""

    def __init__(self, limits: PayloadLimits, parse_json: Callable[[bytes], Any]) -> None:
        self.limits = limits
        self._parse_json = parse_json
        unit = limits.telegraf_ts_unit
        self._telegraf_per_s = None if unit == "auto" else UNITS_PER_S[unit]
        self._influx_per_s = UNITS_PER_S[limits.influx_precision]
        # (measurement, field) -> metric name, or the Reject detail of a name that is not one
        self._names: dict[tuple[str, str], str | Reject] = {}
        self._devices: dict[str, str | Reject] = {}

    # -- names ---------------------------------------------------------------------------

    def _metric(self, measurement: str, field: str) -> str:
        key = (measurement, field)
        name = self._names.get(key)
        if name is None:
            raw = f"{measurement}_{field}" if self.limits.measurement_prefix else field
            try:
                name = sanitise_name(raw, "metric")
            except Reject as rej:
                name = rej
            if len(self._names) >= _NAME_CACHE_MAX:
                self._names.clear()  # bounded: a flood of distinct names cannot grow it
            self._names[key] = name
        if isinstance(name, Reject):
            raise Reject(name.reason, name.detail)
        return name

    def _device(self, tags: Any, topic_device: str | None) -> str:
        if isinstance(tags, dict):
            for tag in self.limits.device_tags:
                raw = tags.get(tag)
                if isinstance(raw, str):
                    device = self._devices.get(raw)
                    if device is None:
                        try:
                            device = sanitise_name(raw, f"device tag {tag}")
                        except Reject as rej:
                            device = rej
                        if len(self._devices) >= _NAME_CACHE_MAX:
                            self._devices.clear()
                        self._devices[raw] = device
                    if isinstance(device, Reject):
                        raise Reject(device.reason, device.detail)
                    return device
        if topic_device is None:
            raise Reject(
                MISSING_FIELD,
                f"no device tag ({', '.join(self.limits.device_tags)}) and no device in topic",
            )
        return topic_device

    # -- Telegraf JSON ---------------------------------------------------------------------

    def telegraf(
        self,
        payload: bytes,
        topic_device: str | None,
        arrival: float,
        topic: str,
        readings: list[Reading],
        rejections: list[Rejection],
    ) -> None:
        """Telegraf's JSON serializer output: one metric ``{"name", "tags", "fields",
        "timestamp"}``, or a batch ``{"metrics": [...]}``."""
        doc = self._parse_json(payload)
        if isinstance(doc, dict) and "fields" not in doc and "metrics" in doc:
            doc = doc["metrics"]
            if not isinstance(doc, list):
                raise Reject(NOT_AN_OBJECT, f"'metrics' is a JSON {json_type(doc)}, not an array")
        if isinstance(doc, dict):
            self._telegraf_metric(
                doc, topic_device, arrival, topic, payload, "", readings, rejections
            )
            return
        if not isinstance(doc, list):
            raise Reject(NOT_AN_OBJECT, f"payload is a JSON {json_type(doc)}, not a metric")
        if not doc:
            raise Reject(MISSING_FIELD, "empty batch carries no metric")
        limit = self.limits.max_readings
        if len(doc) > limit:
            raise Reject(TOO_MANY_READINGS, f"batch of {len(doc)} exceeds {limit}")
        for i, metric in enumerate(doc):
            where = f"metrics[{i}]"
            if len(readings) + len(rejections) > limit:
                break
            if not isinstance(metric, dict):
                rejections.append(
                    Rejection(
                        NOT_AN_OBJECT,
                        f"{where}: {json_type(metric)} is not a metric object",
                        topic,
                        encode(metric),
                    )
                )
                continue
            self._telegraf_metric(
                metric, topic_device, arrival, topic, None, where, readings, rejections
            )
        if len(readings) + len(rejections) > limit:
            raise Reject(
                TOO_MANY_READINGS, f"{len(readings) + len(rejections)} fields exceed {limit}"
            )

    def _telegraf_metric(
        self,
        obj: dict[str, Any],
        topic_device: str | None,
        arrival: float,
        topic: str,
        payload: bytes | None,
        where: str,
        readings: list[Reading],
        rejections: list[Rejection],
    ) -> None:
        prefix = f"{where}: " if where else ""
        fields = obj.get("fields")
        n = len(fields) if isinstance(fields, dict) and fields else 1
        try:
            name = obj.get("name")
            if not isinstance(name, str) or not name:
                raise Reject(MISSING_FIELD, "metric has no 'name' string")
            device = self._device(obj.get("tags"), topic_device)
            if "timestamp" in obj:
                raw = obj["timestamp"]
                if isinstance(raw, str):  # json_timestamp_format set: RFC 3339
                    ts = check_ts(iso_ts(raw), arrival, self.limits)
                else:
                    ts = check_ts(epoch_number(raw, self._telegraf_per_s), arrival, self.limits)
            else:
                ts = arrival
            if not isinstance(fields, dict):
                raise Reject(NOT_AN_OBJECT, "'fields' must map field names to numbers")
            if not fields:
                raise Reject(MISSING_FIELD, "'fields' is empty")
        except Reject as rej:
            body = payload if payload is not None else encode(obj)
            rejections.extend([Rejection(rej.reason, prefix + rej.detail, topic, body)] * n)
            return
        if len(fields) > self.limits.max_readings:
            # The whole message, as for JSON's "values": n rejections would exceed the bound.
            raise Reject(
                TOO_MANY_READINGS, f"{len(fields)} fields exceed {self.limits.max_readings}"
            )
        for field, raw in fields.items():
            try:
                if type(raw) is float and isfinite(raw):
                    value = raw  # the usual case, without building `finite`'s message
                else:
                    value = finite(raw, f"field {short(field)!r}")
                readings.append(Reading(device, self._metric(name, field), ts, value))
            except Reject as rej:
                body = payload if payload is not None else encode(obj)
                rejections.append(Rejection(rej.reason, prefix + rej.detail, topic, body))

    # -- line protocol -------------------------------------------------------------------

    def influx(
        self,
        payload: bytes,
        topic_device: str | None,
        arrival: float,
        topic: str,
        readings: list[Reading],
        rejections: list[Rejection],
    ) -> None:
        """InfluxDB line protocol: one line per measurement, ``#`` comments and blank lines
        skipped; a malformed line is one ``malformed_line`` rejection carrying that line."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Reject(MALFORMED_LINE, "payload is not UTF-8") from None
        lines = [ln for ln in text.split("\n") if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            raise Reject(EMPTY_PAYLOAD, "no line protocol lines (only blanks or comments)")
        limit = self.limits.max_readings
        if len(lines) > limit:
            raise Reject(TOO_MANY_READINGS, f"{len(lines)} lines exceed {limit}")
        per_s = self._influx_per_s
        several = len(lines) > 1
        for number, line in enumerate(lines, 1):
            if len(readings) + len(rejections) > limit:
                break
            # What a rejection shows: the line (of several), or the whole message.
            where = f"line {number}: " if several else ""
            body = line.encode() if several else payload
            stripped = line.rstrip("\r")
            if stripped.endswith(" ") and not stripped.endswith("\\ "):
                stripped = stripped.rstrip(" ")
            try:
                parsed = parse_line(stripped)
            except LineError as exc:
                rejections.append(Rejection(MALFORMED_LINE, where + str(exc), topic, body))
                continue
            except RecursionError:  # not reached by the parser; never raise on input
                rejections.append(Rejection(MALFORMED_LINE, where + "unreadable", topic, body))
                continue
            fields = parsed.fields
            try:
                device = self._device(parsed.tags, topic_device)
                if parsed.ts is None:
                    ts = arrival
                else:
                    ts = check_ts(epoch_number(parsed.ts, per_s), arrival, self.limits)
            except Reject as rej:
                rejections.extend(
                    [Rejection(rej.reason, where + rej.detail, topic, body)] * len(fields)
                )
                continue
            measurement = parsed.measurement
            for field, raw in fields:
                try:
                    if type(raw) is float and isfinite(raw):
                        value = raw  # the usual case, without building `finite`'s message
                    elif (kind := type(raw)) is bool or kind is str:
                        what = "boolean" if kind is bool else "string"
                        raise Reject(
                            NOT_A_NUMBER, f"field {short(field)!r} is a {what}, not a number"
                        )
                    else:
                        value = finite(raw, f"field {short(field)!r}")
                    readings.append(Reading(device, self._metric(measurement, field), ts, value))
                except Reject as rej:
                    rejections.append(Rejection(rej.reason, where + rej.detail, topic, body))
        if len(readings) + len(rejections) > limit:
            raise Reject(
                TOO_MANY_READINGS, f"{len(readings) + len(rejections)} fields exceed {limit}"
            )
