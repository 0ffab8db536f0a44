"""Sparkplug B payloads for tests, built with the protobuf library from the schema in
`detector.worker.sparkplug_schema` (never written by hand)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from detector.worker.sparkplug_schema import DataType, Payload

# A metric as tests write it: (name or None, alias or None, datatype, value); value None:
# is_null. Optional 5th item: the metric's own timestamp (epoch ms).
MetricSpec = tuple[Any, ...]

_FIELD = {
    DataType.Int8: "int_value",
    DataType.Int16: "int_value",
    DataType.Int32: "int_value",
    DataType.UInt8: "int_value",
    DataType.UInt16: "int_value",
    DataType.UInt32: "int_value",
    DataType.Int64: "long_value",
    DataType.UInt64: "long_value",
    DataType.DateTime: "long_value",
    DataType.Float: "float_value",
    DataType.Double: "double_value",
    DataType.Boolean: "boolean_value",
    DataType.String: "string_value",
    DataType.Text: "string_value",
    DataType.UUID: "string_value",
    DataType.Bytes: "bytes_value",
}
_BITS = {DataType.Int8: 8, DataType.Int16: 16, DataType.Int32: 32, DataType.Int64: 64}


def payload(
    metrics: Iterable[MetricSpec],
    *,
    ts_ms: int | None = None,
    seq: int | None = None,
    with_datatype: bool = True,
) -> bytes:
    """A serialised ``Payload``. Negative signed integers are stored in two's complement of
    their own width, as Eclipse Tahu's Python library writes them."""
    msg = Payload()
    if ts_ms is not None:
        msg.timestamp = ts_ms
    if seq is not None:
        msg.seq = seq
    for spec in metrics:
        name, alias, datatype, value = spec[:4]
        m = msg.metrics.add()
        if name is not None:
            m.name = name
        if alias is not None:
            m.alias = alias
        if with_datatype:
            m.datatype = datatype
        if len(spec) > 4:
            m.timestamp = spec[4]
        if value is None:
            m.is_null = True
            continue
        if datatype == DataType.DataSet:
            m.dataset_value.num_of_columns = 1
            m.dataset_value.columns.append("x")
            continue
        field = _FIELD[DataType(datatype)]
        bits = _BITS.get(DataType(datatype))
        if bits is not None and value < 0:
            value += 1 << bits
        setattr(m, field, value)
    return msg.SerializeToString()


def birth(
    metrics: Iterable[MetricSpec], *, bdseq: int | None = None, ts_ms: int | None = None
) -> bytes:
    """An NBIRTH (with `bdseq`: its ``bdSeq`` metric first) or DBIRTH payload."""
    specs = list(metrics)
    if bdseq is not None:
        specs.insert(0, ("bdSeq", None, DataType.Int64, bdseq))
    return payload(specs, ts_ms=ts_ms, seq=0)


def data(values: Iterable[tuple[int, Any]], datatype: int, *, ts_ms: int, seq: int = 1) -> bytes:
    """A DATA payload by alias, as gateways send it (no names, no datatypes)."""
    specs = [(None, alias, datatype, value) for alias, value in values]
    return payload(specs, ts_ms=ts_ms, seq=seq, with_datatype=False)


def death(bdseq: int | None = None) -> bytes:
    """An NDEATH payload (``bdSeq`` only) or, with None, a DDEATH one (no metrics)."""
    if bdseq is None:
        return payload([], seq=0)
    return payload([("bdSeq", None, DataType.Int64, bdseq)])
