"""The Sparkplug B payload schema, built at import time with protobuf's descriptor API.

Pinned to **Eclipse Sparkplug 3.0.0** (the specification's "Payload" definition, section 6.4,
protobuf v2 syntax, package ``org.eclipse.tahu.protobuf`` on the wire; the package name is
not part of the encoding). Written here from the specification rather than compiled from a
``.proto`` file: no protoc at build or run time, and no generated code in the repository.
Messages are registered in a pool of their own, so an application that also loads Eclipse
Tahu's generated module sees no clash.

`Payload` is the message class (``Payload.FromString(data)`` parses, ``SerializeToString``
writes); `DataType` holds the datatype codes of the specification's section 6.4.16.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SPEC_VERSION = "3.0.0"
_PACKAGE = "iotad.sparkplug_b"
_EXTENSIONS_MAX = 536_870_912  # protobuf's "max" (2**29) as an exclusive end
_F = descriptor_pb2.FieldDescriptorProto


class DataType(IntEnum):
    """Metric datatypes (Sparkplug 3.0.0, 6.4.16)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


# (name, number, type, label, message type name or None, in the oneof "value")
_Field = tuple[str, int, int, int, str | None, bool]
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_U32, _U64, _FLT, _DBL = _F.TYPE_UINT32, _F.TYPE_UINT64, _F.TYPE_FLOAT, _F.TYPE_DOUBLE
_BOOL, _STR, _BYTES, _MSG = _F.TYPE_BOOL, _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE


def _scalar_values(first: int, extension: str) -> list[_Field]:
    """The oneof "value" that Parameter, DataSetValue and PropertyValue share in shape."""
    kinds = [
        ("int_value", _U32),
        ("long_value", _U64),
        ("float_value", _FLT),
        ("double_value", _DBL),
        ("boolean_value", _BOOL),
        ("string_value", _STR),
    ]
    fields: list[_Field] = [
        (name, first + i, kind, _OPT, None, True) for i, (name, kind) in enumerate(kinds)
    ]
    fields.append(("extension_value", first + len(kinds), _MSG, _OPT, extension, True))
    return fields


def _message(
    parent: Any, name: str, fields: list[_Field], extensions_from: int | None = None
) -> Any:
    """Add message `name` to `parent` (a file or a message) with `fields`."""
    msg = parent.message_type.add() if hasattr(parent, "message_type") else parent.nested_type.add()
    msg.name = name
    if any(f[5] for f in fields):
        msg.oneof_decl.add(name="value")
    for fname, number, ftype, label, type_name, in_oneof in fields:
        field = msg.field.add(name=fname, number=number, type=ftype, label=label)
        if type_name is not None:
            field.type_name = type_name
        if in_oneof:
            field.oneof_index = 0
    if extensions_from is not None:
        msg.extension_range.add(start=extensions_from, end=_EXTENSIONS_MAX)
    return msg


_P = f".{_PACKAGE}.Payload"  # the full name nested messages are referred to by


def _add_template(payload: Any) -> None:
    """Payload.Template and its Parameter."""
    template = _message(
        payload,
        "Template",
        [
            ("version", 1, _STR, _OPT, None, False),
            ("metrics", 2, _MSG, _REP, f"{_P}.Metric", False),
            ("parameters", 3, _MSG, _REP, f"{_P}.Template.Parameter", False),
            ("template_ref", 4, _STR, _OPT, None, False),
            ("is_definition", 5, _BOOL, _OPT, None, False),
        ],
        extensions_from=6,
    )
    parameter = _message(
        template,
        "Parameter",
        [
            ("name", 1, _STR, _OPT, None, False),
            ("type", 2, _U32, _OPT, None, False),
            *_scalar_values(3, f"{_P}.Template.Parameter.ParameterValueExtension"),
        ],
    )
    _message(parameter, "ParameterValueExtension", [], extensions_from=1)


def _add_dataset(payload: Any) -> None:
    """Payload.DataSet, its DataSetValue and Row."""
    dataset = _message(
        payload,
        "DataSet",
        [
            ("num_of_columns", 1, _U64, _OPT, None, False),
            ("columns", 2, _STR, _REP, None, False),
            ("types", 3, _U32, _REP, None, False),
            ("rows", 4, _MSG, _REP, f"{_P}.DataSet.Row", False),
        ],
        extensions_from=5,
    )
    dataset_value = _message(
        dataset,
        "DataSetValue",
        _scalar_values(1, f"{_P}.DataSet.DataSetValue.DataSetValueExtension"),
    )
    _message(dataset_value, "DataSetValueExtension", [], extensions_from=1)
    _message(
        dataset,
        "Row",
        [("elements", 1, _MSG, _REP, f"{_P}.DataSet.DataSetValue", False)],
        extensions_from=2,
    )


def _add_property_sets(payload: Any) -> None:
    """Payload.PropertyValue, PropertySet and PropertySetList."""
    property_value = _message(
        payload,
        "PropertyValue",
        [
            ("type", 1, _U32, _OPT, None, False),
            ("is_null", 2, _BOOL, _OPT, None, False),
            *_scalar_values(3, f"{_P}.PropertyValue.PropertyValueExtension")[:-1],
            ("propertyset_value", 9, _MSG, _OPT, f"{_P}.PropertySet", True),
            ("propertysets_value", 10, _MSG, _OPT, f"{_P}.PropertySetList", True),
            (
                "extension_value",
                11,
                _MSG,
                _OPT,
                f"{_P}.PropertyValue.PropertyValueExtension",
                True,
            ),
        ],
    )
    _message(property_value, "PropertyValueExtension", [], extensions_from=1)
    _message(
        payload,
        "PropertySet",
        [
            ("keys", 1, _STR, _REP, None, False),
            ("values", 2, _MSG, _REP, f"{_P}.PropertyValue", False),
        ],
        extensions_from=3,
    )
    _message(
        payload,
        "PropertySetList",
        [("propertyset", 1, _MSG, _REP, f"{_P}.PropertySet", False)],
        extensions_from=2,
    )


def _add_metadata(payload: Any) -> None:
    """Payload.MetaData."""
    _message(
        payload,
        "MetaData",
        [
            ("is_multi_part", 1, _BOOL, _OPT, None, False),
            ("content_type", 2, _STR, _OPT, None, False),
            ("size", 3, _U64, _OPT, None, False),
            ("seq", 4, _U64, _OPT, None, False),
            ("file_name", 5, _STR, _OPT, None, False),
            ("file_type", 6, _STR, _OPT, None, False),
            ("md5", 7, _STR, _OPT, None, False),
            ("description", 8, _STR, _OPT, None, False),
        ],
        extensions_from=9,
    )


def _add_metric(payload: Any) -> None:
    """Payload.Metric."""
    metric = _message(
        payload,
        "Metric",
        [
            ("name", 1, _STR, _OPT, None, False),
            ("alias", 2, _U64, _OPT, None, False),
            ("timestamp", 3, _U64, _OPT, None, False),
            ("datatype", 4, _U32, _OPT, None, False),
            ("is_historical", 5, _BOOL, _OPT, None, False),
            ("is_transient", 6, _BOOL, _OPT, None, False),
            ("is_null", 7, _BOOL, _OPT, None, False),
            ("metadata", 8, _MSG, _OPT, f"{_P}.MetaData", False),
            ("properties", 9, _MSG, _OPT, f"{_P}.PropertySet", False),
            ("int_value", 10, _U32, _OPT, None, True),
            ("long_value", 11, _U64, _OPT, None, True),
            ("float_value", 12, _FLT, _OPT, None, True),
            ("double_value", 13, _DBL, _OPT, None, True),
            ("boolean_value", 14, _BOOL, _OPT, None, True),
            ("string_value", 15, _STR, _OPT, None, True),
            ("bytes_value", 16, _BYTES, _OPT, None, True),
            ("dataset_value", 17, _MSG, _OPT, f"{_P}.DataSet", True),
            ("template_value", 18, _MSG, _OPT, f"{_P}.Template", True),
            ("extension_value", 19, _MSG, _OPT, f"{_P}.Metric.MetricValueExtension", True),
        ],
    )
    _message(metric, "MetricValueExtension", [], extensions_from=1)


def _file() -> descriptor_pb2.FileDescriptorProto:
    """The schema as a file descriptor: Payload, then its nested messages in the
    specification's order."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="iotad/sparkplug_b.proto", package=_PACKAGE, syntax="proto2"
    )
    payload = _message(
        fdp,
        "Payload",
        [
            ("timestamp", 1, _U64, _OPT, None, False),
            ("metrics", 2, _MSG, _REP, f"{_P}.Metric", False),
            ("seq", 3, _U64, _OPT, None, False),
            ("uuid", 4, _STR, _OPT, None, False),
            ("body", 5, _BYTES, _OPT, None, False),
        ],
        extensions_from=6,
    )
    _add_template(payload)
    _add_dataset(payload)
    _add_property_sets(payload)
    _add_metadata(payload)
    _add_metric(payload)
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())
Payload: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Payload"))
"""The Sparkplug B ``Payload`` message class."""
