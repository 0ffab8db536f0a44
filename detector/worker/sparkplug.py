"""Sparkplug B (Eclipse Sparkplug 3.0.0): what Ignition, Kepware and SCADA gateways publish.

Topics ``spBv1.0/{group}/{type}/{edge node}[/{device}]``, payloads protobuf
(`detector.worker.sparkplug_schema`). A Sparkplug edge node names its metrics once, in its BIRTH
messages, and then often sends only numeric aliases, so this decoder keeps state per edge
node (on the network thread, like the rest of the decoder):

- **NBIRTH / DBIRTH**: the metric names, aliases and datatypes of the node (or one of its
  devices) are learnt, replacing what an earlier BIRTH said; the values they carry are
  readings too. An NBIRTH forgets the node's devices (they send DBIRTH again after it) and
  records its ``bdSeq``.
- **NDATA / DDATA**: each metric, by alias or by name, is one reading. A metric no BIRTH
  defined (the worker started after the BIRTH, or the node never sent one) is rejected as
  ``unknown_alias``: its name and datatype cannot be known. With
  `PayloadLimits.sparkplug_rebirth` on, the worker then asks the node to publish its BIRTH
  again (NCMD ``Node Control/Rebirth``, as a Sparkplug host application does; at most once
  per `REBIRTH_INTERVAL_S` per node); off by default: it is a command to the plant.
- **NDEATH / DDEATH**: the device's series (for NDEATH the node's and all its devices') have
  ended: `Decoded.ended` names the devices, and the worker ends their series in the core
  (`detector.engine.core.DetectionCore.end_devices`). An NDEATH whose ``bdSeq`` is not the one of
  the node's last NBIRTH is the late will of an older session and is ignored.
- NCMD, DCMD and host ``STATE`` messages are commands and host status, not readings: taken
  and acknowledged, nothing counted as a reading.

Series: device ``{edge node}`` or ``{edge node}/{device}``, metric the metric's name, both
made safe as for Telegraf (every run of characters outside ``A-Za-z0-9_.-`` becomes ``_``,
so ``gw1/press 4`` is ``gw1_press_4`` and ``Line 1/Oil Temp`` is ``Line_1_Oil_Temp``).
Values: integers of every width (signed ones as the specification stores them, two's
complement), floats and doubles are readings. Strings, text, UUIDs, bytes, files, datasets,
templates, arrays, DateTime, nulls and the session number ``bdSeq`` are not measurements:
rejected as ``not_a_measurement``, counted and logged but not dead-lettered (a gateway's
string tags would flood the dead-letter topic). Booleans are skipped the same way unless
`PayloadLimits.sparkplug_booleans` is ``number`` (then 0 and 1). Time: the metric's
timestamp, else the payload's (epoch milliseconds), else the arrival time. The payload's
``seq`` is not checked.

Bounded: a message carries at most `PayloadLimits.max_readings` metrics; a node's names and
aliases (its own and its devices') at most `sparkplug_max_aliases` (a BIRTH metric beyond
it is ``alias_table_full``); at most `sparkplug_max_nodes` nodes are remembered, the one
born longest ago forgotten first (counted in `SparkplugDecoder.evicted_nodes`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from detector.config.payload_limits import PayloadLimits
from detector.engine.readings import NOT_A_MEASUREMENT, Reading, Rejection
from detector.worker.payload_checks import (
    ALIAS_TABLE_FULL,
    BAD_TOPIC,
    MALFORMED_PROTOBUF,
    MISSING_FIELD,
    NOT_A_NUMBER,
    TOO_MANY_READINGS,
    UNKNOWN_ALIAS,
    Reject,
    check_ts,
    finite,
    sanitise_name,
    short,
)
from detector.worker.sparkplug_schema import DataType, Payload

if TYPE_CHECKING:
    from detector.worker.payloads import Decoded

log = logging.getLogger("iotad.sparkplug")

NAMESPACE = "spBv1.0"
_NODE_TYPES = frozenset({"NBIRTH", "NDATA", "NDEATH"})
_DEVICE_TYPES = frozenset({"DBIRTH", "DDATA", "DDEATH"})
_NOT_INPUT = frozenset({"NCMD", "DCMD"})
_BDSEQ = "bdSeq"
_LOG_EVERY_S = 60.0
_TOPIC_CACHE_MAX = 100_000

# Signed integers: the bits the specification keeps them in (two's complement).
# (ints, not the enum: these are looked up per metric)
_SIGNED_BITS = {int(DataType.Int8): 8, int(DataType.Int16): 16, int(DataType.Int32): 32}
_SIGNED_BITS[int(DataType.Int64)] = 64
_UNSIGNED = frozenset(map(int, (DataType.UInt8, DataType.UInt16, DataType.UInt32, DataType.UInt64)))
_INTEGER_FIELDS = frozenset({"int_value", "long_value"})
_FLOAT_FIELDS = frozenset({"float_value", "double_value"})
_FLOATS = frozenset({int(DataType.Float), int(DataType.Double)})


GROUP_LABEL = "sparkplug_group"
NODE_LABEL = "edge_node"
"""The labels every Sparkplug series carries into its alerts and dead letters."""
# message type, group, edge node, device (None: the node itself), labels
_Topic = tuple[str, str, str, str | None, dict[str, str] | None]


REBIRTH_INTERVAL_S = 30.0
"""At most one rebirth request per edge node in this time (a node answers with its BIRTHs,
usually within a second; one that does not is not flooded with commands)."""
REBIRTH_METRIC = "Node Control/Rebirth"


def rebirth_request(now_s: float) -> bytes:
    """The NCMD payload asking an edge node to publish its BIRTH messages again."""
    msg = Payload(timestamp=int(now_s * 1000))
    msg.metrics.add(name=REBIRTH_METRIC, datatype=DataType.Boolean, boolean_value=True)
    data: bytes = msg.SerializeToString()
    return data


class Ended(NamedTuple):
    """A device whose series ended (a DEATH), and when (epoch s)."""

    device: str
    ts: float


class _Entry(NamedTuple):
    """What a BIRTH said of one metric: our metric name (or why it has none), datatype, and
    whether it is a Float or Double (the decoder's fast path)."""

    metric: str | Reject
    datatype: int
    is_float: bool


class _Device:
    """The names and aliases a BIRTH defined for a node (device None) or one device."""

    __slots__ = ("aliases", "born", "key", "name", "names")

    def __init__(self, key: str | None, name: str | Reject) -> None:
        self.key = key  # the Sparkplug device id; None for the node itself
        self.name = name  # our device name, or why the Sparkplug ids make none
        self.aliases: dict[int, _Entry] = {}
        self.names: dict[str, _Entry] = {}
        self.born = False

    @property
    def size(self) -> int:
        return len(self.aliases) + len(self.names)


class _Node:
    __slots__ = ("asked_at", "bdseq", "devices", "size")

    def __init__(self) -> None:
        self.bdseq: int | None = None
        self.devices: dict[str | None, _Device] = {}
        self.size = 0  # its devices (the node itself included) and their names and aliases
        self.asked_at = -REBIRTH_INTERVAL_S  # monotonic time of the last rebirth request


def _device_name(node: str, device: str | None) -> str | Reject:
    raw = node if device is None else f"{node}/{device}"
    try:
        return sanitise_name(raw, "Sparkplug device" if device is not None else "edge node")
    except Reject as rej:
        return rej


class SparkplugDecoder:
    """Readings of Sparkplug B messages (see the module docstring). Not thread-safe: one per
    network thread, inside `detector.worker.payloads.PayloadDecoder`."""

    def __init__(self, limits: PayloadLimits) -> None:
        self.limits = limits
        self._booleans = limits.sparkplug_booleans == "number"
        self._nodes: dict[tuple[str, str], _Node] = {}
        # topic -> (message type, group, edge node, device or None); or the Reject
        self._topics: dict[str, _Topic | Reject] = {}
        self.evicted_nodes = 0
        self._logged_at = -_LOG_EVERY_S
        self.commands: Callable[[str, bytes], object] | None = None
        """Publishes a command to the plant (topic, payload): set by the worker when
        `PayloadLimits.sparkplug_rebirth` is on, and then used for rebirth requests only."""
        self.rebirths_requested = 0
        self._rebirth_logged_at = -_LOG_EVERY_S

    # -- state, for metrics and tests ---------------------------------------------------

    @property
    def nodes(self) -> int:
        return len(self._nodes)

    @property
    def aliases(self) -> int:
        # list() copies under the GIL: /metrics reads this from the HTTP server's thread.
        return sum(n.size for n in list(self._nodes.values()))

    # -- topic -----------------------------------------------------------------------------

    def _topic(self, topic: str) -> _Topic:
        parsed = self._topics.get(topic)
        if parsed is None:
            parsed = self._parse_topic(topic)
            if len(self._topics) >= _TOPIC_CACHE_MAX:
                self._topics.clear()
            self._topics[topic] = parsed
        if isinstance(parsed, Reject):
            raise Reject(parsed.reason, parsed.detail)
        return parsed

    @staticmethod
    def _parse_topic(topic: str) -> _Topic | Reject:
        parts = topic.split("/")
        if parts[0] != NAMESPACE:
            return Reject(BAD_TOPIC, f"Sparkplug B topics start with {NAMESPACE}/")
        if len(parts) >= 2 and parts[1] == "STATE":
            return ("STATE", "", "", None, None)
        kind = parts[2] if len(parts) > 2 else ""
        if (len(parts) == 4 and (kind in _NODE_TYPES or kind == "NCMD")) or (
            len(parts) == 5 and (kind in _DEVICE_TYPES or kind == "DCMD")
        ):
            group, node = parts[1], parts[3]
            labels = {}
            for label, raw in ((GROUP_LABEL, group), (NODE_LABEL, node)):
                with contextlib.suppress(Reject):  # an unsafe id: the device says why
                    labels[label] = sanitise_name(raw, label)
            return (kind, group, node, parts[4] if len(parts) == 5 else None, labels)
        return Reject(
            BAD_TOPIC,
            f"not {NAMESPACE}/{{group}}/{{N|D}}{{BIRTH|DATA|DEATH}}/{{edge node}}[/{{device}}]",
        )

    # -- messages --------------------------------------------------------------------------

    def decode(self, topic: str, payload: bytes, arrival: float, out: Decoded) -> None:
        """Readings and rejections of one message into `out`, with its labels (the group
        and edge node) and the devices a DEATH ended. `Reject` for the whole message."""
        kind, group, node_id, device_id, labels = self._topic(topic)
        if kind == "STATE" or kind in _NOT_INPUT:
            return
        out.labels = labels
        out.ended = self._decode(kind, group, node_id, device_id, topic, payload, arrival, out)

    def _decode(
        self,
        kind: str,
        group: str,
        node_id: str,
        device_id: str | None,
        topic: str,
        payload: bytes,
        arrival: float,
        out: Decoded,
    ) -> list[Ended] | None:
        readings, rejections = out.readings, out.rejections
        try:
            msg = Payload.FromString(payload)
        except Exception as exc:  # protobuf's DecodeError, or a recursion limit
            raise Reject(MALFORMED_PROTOBUF, short(f"{type(exc).__name__}: {exc}")) from None
        metrics = msg.metrics
        if len(metrics) > self.limits.max_readings:
            raise Reject(
                TOO_MANY_READINGS, f"{len(metrics)} metrics exceed {self.limits.max_readings}"
            )
        # A payload time that fails the checks rejects the metrics that take it, one each;
        # a BIRTH is still learnt and a DEATH still ends its series (at the arrival time).
        ts, bad_ts = arrival, None
        if msg.HasField("timestamp"):
            try:
                ts = self._ts(msg.timestamp, arrival)
            except Reject as rej:
                bad_ts = rej
        key = (group, node_id)
        if kind == "NDEATH":
            return self._node_death(key, node_id, metrics, ts)
        if kind == "DDEATH":
            node = self._nodes.get(key)
            if node is not None:
                old = node.devices.pop(device_id, None)
                if old is not None:
                    node.size -= 1 + old.size
            name = _device_name(node_id, device_id)
            return [Ended(name, ts)] if isinstance(name, str) else None
        node = self._node(key, kind == "NBIRTH")
        skip: set[int] = set()
        if kind == "NBIRTH" or kind == "DBIRTH":
            device = self._new_device(node, node_id, device_id)
            skip = self._birth(node, device, metrics, kind == "NBIRTH", topic, payload, rejections)
        else:
            device = node.devices.get(device_id) or self._new_device(node, node_id, device_id)
        before = len(rejections)
        self._readings(
            device, metrics, ts, bad_ts, arrival, topic, payload, readings, rejections, skip
        )
        if self.commands is not None and any(
            r.reason == UNKNOWN_ALIAS for r in rejections[before:]
        ):
            self._request_rebirth(node, group, node_id)
        return None

    def _request_rebirth(self, node: _Node, group: str, node_id: str) -> None:
        """Ask the edge node to publish its BIRTH messages again (NCMD ``Node
        Control/Rebirth``, QoS 0, not retained, as Sparkplug 3.0.0 says a host application
        does), at most once per `REBIRTH_INTERVAL_S` per node."""
        now = time.monotonic()
        if now - node.asked_at < REBIRTH_INTERVAL_S or self.commands is None:
            return
        node.asked_at = now
        self.rebirths_requested += 1
        self.commands(f"{NAMESPACE}/{group}/NCMD/{node_id}", rebirth_request(time.time()))
        if now - self._rebirth_logged_at >= _LOG_EVERY_S:
            self._rebirth_logged_at = now
            log.info(
                "asked Sparkplug edge node %s/%s to rebirth: DATA with unknown aliases "
                "(%d requests so far)",
                group,
                node_id,
                self.rebirths_requested,
            )

    def _new_device(self, node: _Node, node_id: str, device_id: str | None) -> _Device:
        """A fresh, empty table for the node (device None) or one of its devices, replacing
        the one it had; kept in the node while the node's bound allows (a DATA of a device
        no BIRTH named is remembered so that its node's DEATH ends its series too)."""
        old = node.devices.pop(device_id, None)
        if old is not None:
            node.size -= 1 + old.size
        device = _Device(device_id, _device_name(node_id, device_id))
        if node.size < self.limits.sparkplug_max_aliases:
            node.devices[device_id] = device
            node.size += 1
        return device

    def _node(self, key: tuple[str, str], birth: bool) -> _Node:
        node = self._nodes.get(key)
        if node is None or birth:
            if node is None and len(self._nodes) >= self.limits.sparkplug_max_nodes:
                del self._nodes[next(iter(self._nodes))]
                self.evicted_nodes += 1
                self._log_eviction()
            self._nodes.pop(key, None)  # re-inserted last: eviction takes the oldest birth
            node = self._nodes[key] = _Node()
        return node

    def _log_eviction(self) -> None:
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "more than %d Sparkplug edge nodes: the one born longest ago is forgotten "
                "(%d so far; its DATA is unknown_alias until its next BIRTH; "
                "IOTAD_PAYLOAD__SPARKPLUG_MAX_NODES)",
                self.limits.sparkplug_max_nodes,
                self.evicted_nodes,
            )

    def _node_death(
        self, key: tuple[str, str], node_id: str, metrics: Any, ts: float
    ) -> list[Ended] | None:
        node = self._nodes.get(key)
        bdseq = next((m.long_value for m in metrics if m.name == _BDSEQ), None)
        if node is not None and None not in (node.bdseq, bdseq) and node.bdseq != bdseq:
            return None  # the will of an earlier session, arriving after the new BIRTH
        self._nodes.pop(key, None)
        ended: list[Ended] = []
        names = [_device_name(node_id, None)]
        if node is not None:
            names += [d.name for dev_id, d in node.devices.items() if dev_id is not None]
        for name in names:
            if isinstance(name, str):
                ended.append(Ended(name, ts))
        return ended

    def _birth(
        self,
        node: _Node,
        device: _Device,
        metrics: Any,
        is_node: bool,
        topic: str,
        payload: bytes,
        rejections: list[Rejection],
    ) -> set[int]:
        """Learn the names and aliases of a BIRTH; returns the positions of the metrics
        rejected here (past the table's bound), which `_readings` then skips."""
        device.born = True
        limit = self.limits.sparkplug_max_aliases
        kept = node.devices.get(device.key) is device
        skipped: set[int] = set()
        for i, m in enumerate(metrics):
            if not m.name:
                skipped.add(i)
                rejections.append(
                    Rejection(MISSING_FIELD, "a BIRTH metric without a name", topic, payload)
                )
                continue
            if is_node and m.name == _BDSEQ:
                node.bdseq = m.long_value if m.WhichOneof("value") == "long_value" else None
            added = (m.name not in device.names) + (
                m.HasField("alias") and m.alias not in device.aliases
            )
            if added and (not kept or node.size + added > limit):
                skipped.add(i)
                rejections.append(
                    Rejection(
                        ALIAS_TABLE_FULL,
                        f"metric {short(m.name)!r}: the node's names and aliases exceed {limit} "
                        "(IOTAD_PAYLOAD__SPARKPLUG_MAX_ALIASES)",
                        topic,
                        payload,
                    )
                )
                continue
            try:
                metric: str | Reject = sanitise_name(m.name, "metric")
            except Reject as rej:
                metric = rej
            if is_node and m.name == _BDSEQ:
                metric = Reject(NOT_A_MEASUREMENT, "bdSeq is the node's session number")
            entry = _Entry(metric, m.datatype, m.datatype in _FLOATS)
            device.names[m.name] = entry
            if m.HasField("alias"):
                device.aliases[m.alias] = entry
            node.size += added
        return skipped

    def _readings(
        self,
        device: _Device,
        metrics: Any,
        ts: float,
        bad_ts: Reject | None,
        arrival: float,
        topic: str,
        payload: bytes,
        readings: list[Reading],
        rejections: list[Rejection],
        skip: set[int],
    ) -> None:
        aliases, names = device.aliases, device.names
        device_name = device.name
        limits = self.limits
        latest = arrival + limits.max_future_s
        for i, m in enumerate(metrics):
            if skip and i in skip:
                continue
            try:
                entry = aliases.get(m.alias) if m.HasField("alias") else names.get(m.name)
                if entry is None:
                    if m.HasField("alias"):
                        what = f"alias {m.alias}"
                    else:
                        what = f"metric {short(m.name)!r}" if m.name else "a metric without name"
                    raise Reject(
                        UNKNOWN_ALIAS,
                        f"{what}: no BIRTH defined it"
                        + ("" if device.born else " (none seen since the worker started)"),
                    )
                name = entry.metric
                if not isinstance(name, str):
                    raise Reject(name.reason, name.detail)
                if not isinstance(device_name, str):
                    raise Reject(device_name.reason, device_name.detail)
                value = None
                if entry.is_float:  # the usual case, inlined: a float or double that is set
                    field = m.WhichOneof("value")
                    if field == "double_value":
                        value = m.double_value
                    elif field == "float_value":
                        value = m.float_value
                    if value is not None and (value - value != 0.0 or m.is_null):
                        value = None  # not finite, or null: `_value` says which
                if value is None:
                    value = self._value(m, entry.datatype, name)
                if m.HasField("timestamp"):
                    at = m.timestamp / 1000.0
                    if not limits.min_ts <= at <= latest:
                        at = check_ts(at, arrival, limits)
                elif bad_ts is not None:
                    raise Reject(bad_ts.reason, bad_ts.detail)
                else:
                    at = ts
                readings.append(Reading(device_name, name, at, value))
            except Reject as rej:
                rejections.append(Rejection(rej.reason, rej.detail, topic, payload))

    def _value(self, m: Any, datatype: int, name: str) -> float:
        if m.is_null:
            raise Reject(NOT_A_MEASUREMENT, f"metric {name!r} is null")
        field = m.WhichOneof("value")
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None or datatype in _UNSIGNED:
            if field not in _INTEGER_FIELDS:
                raise Reject(NOT_A_NUMBER, f"metric {name!r}: an integer datatype with {field}")
            raw = m.int_value if field == "int_value" else m.long_value
            if bits is None:
                return float(raw)
            raw &= (1 << bits) - 1  # writers differ in how wide they sign-extend
            return float(raw - (1 << bits) if raw >> (bits - 1) else raw)
        if datatype == DataType.Float or datatype == DataType.Double:
            if field not in _FLOAT_FIELDS:
                raise Reject(NOT_A_NUMBER, f"metric {name!r}: a float datatype with {field}")
            return finite(getattr(m, field), f"metric {name!r}")
        if datatype == DataType.Boolean and self._booleans:
            if field != "boolean_value":
                raise Reject(NOT_A_NUMBER, f"metric {name!r}: a Boolean with {field}")
            return 1.0 if m.boolean_value else 0.0
        try:
            kind = DataType(datatype).name
        except ValueError:
            kind = f"datatype {datatype}"
        raise Reject(NOT_A_MEASUREMENT, f"metric {name!r} is a {kind}")

    def _ts(self, ms: int, arrival: float) -> float:
        return check_ts(ms / 1000.0, arrival, self.limits)
