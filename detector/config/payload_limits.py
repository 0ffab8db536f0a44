"""The settings of the input contract: what one message may carry, and how it is read.

A value module (the settings build `PayloadSettings` from it, with bounds); the decoders in
`detector.worker` apply it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from detector.worker.topics import valid_filter

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
