"""InfluxDB line protocol: one line parsed into measurement, tags, fields and timestamp.

``measurement[,tag=value...] field=value[,field=value...] [timestamp]``, as InfluxDB
documents it (https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/):

- measurement: ``,`` and space escaped with a backslash; tag keys, tag values and field
  keys: ``,``, ``=`` and space; a doubled backslash is one backslash; any other backslash is
  itself;
- field values: float (``1``, ``-1.5``, ``1e3``), integer (``3i``), unsigned (``3u``),
  boolean (``t``, ``true``, ``True``, ``TRUE``, ``f``, ...) or a string in double quotes
  (``\\"`` and ``\\\\`` escaped);
- timestamp: an integer in the writer's precision (ns unless told otherwise), optional.

Pure: no detector imports, no I/O. `format_line` writes what `parse_line` reads.
"""

from __future__ import annotations

import re
from typing import NamedTuple

FieldValue = float | int | bool | str

_INT = re.compile(r"[-+]?\d+", re.ASCII)
_DIGIT_OR_DOT = frozenset("0123456789.")
_FLOAT_START = frozenset("+-.0123456789")
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1


class LineError(ValueError):
    """A line that is not line protocol; the message says where."""


class Line(NamedTuple):
    """One parsed line. `ts` is the raw integer timestamp (None when the line has none)."""

    measurement: str
    tags: dict[str, str]
    fields: list[tuple[str, FieldValue]]
    ts: int | None


def parse_line(line: str) -> Line:
    """Parse one line (no newline in it); `LineError` when it is not line protocol.

    >>> parse_line('cpu,host=a usage=0.5,n=3i 1700000000000000000').fields
    [('usage', 0.5), ('n', 3)]
    """
    if "\\" in line or '"' in line:
        return _parse_escaped(line)
    # Fast path, no escapes and no strings: the separators are plain characters.
    parts = line.split(" ")
    if len(parts) not in (2, 3):
        raise LineError(f"expected 'measurement fields [timestamp]', got {len(parts)} parts")
    key = parts[0].split(",")
    measurement = key[0]
    if not measurement:
        raise LineError("empty measurement")
    tags: dict[str, str] = {}
    for pair in key[1:]:
        kv = pair.split("=")
        if len(kv) != 2 or not kv[0] or not kv[1]:
            raise LineError(f"tag {pair!r} is not key=value")
        tags[kv[0]] = kv[1]
    fields: list[tuple[str, FieldValue]] = []
    for pair in parts[1].split(","):
        kv = pair.split("=")
        if len(kv) != 2 or not kv[0]:
            raise LineError(f"field {pair!r} is not key=value")
        fields.append((kv[0], _value(kv[1])))
    return Line(measurement, tags, fields, _timestamp(parts[2]) if len(parts) == 3 else None)


def _value(text: str) -> FieldValue:
    if not text:
        raise LineError("field without a value")
    last = text[-1]
    if last == "i" and _INT.fullmatch(text, 0, len(text) - 1):
        value = int(text[:-1])
        if not INT64_MIN <= value <= INT64_MAX:
            raise LineError(f"integer {text!r} is out of the int64 range")
        return value
    if last == "u" and text[0] != "-" and _INT.fullmatch(text, 0, len(text) - 1):
        value = int(text[:-1])
        if value > UINT64_MAX:
            raise LineError(f"unsigned {text!r} is out of the uint64 range")
        return value
    if text[-1] in _DIGIT_OR_DOT and text[0] in _FLOAT_START and text.isascii() and "_" not in text:
        # float() reads every line-protocol float, and with these guards (no nan, inf,
        # 1_000, spaces or non-ASCII digits) nothing else: 3x faster than the regex first.
        try:
            return float(text)  # 1e400 is inf: the caller rejects that field as non_finite
        except ValueError:
            pass
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise LineError(f"field value {text[:40]!r} is no number, boolean or string")


def _timestamp(text: str) -> int:
    if not text.isascii() or not _INT.fullmatch(text):
        raise LineError(f"timestamp {text[:40]!r} is not an integer")
    return int(text)


def _parse_escaped(line: str) -> Line:
    """The general parser: a scan that honours escapes and quoted strings."""
    n = len(line)
    i = 0

    def token(specials: str) -> str:
        # Up to the first unescaped character of `specials`; `\x` is x for x in specials or
        # a backslash, any other backslash is itself.
        nonlocal i
        out = []
        while i < n:
            c = line[i]
            if c == "\\" and i + 1 < n and (line[i + 1] in specials or line[i + 1] == "\\"):
                out.append(line[i + 1])
                i += 2
                continue
            if c in specials:
                break
            out.append(c)
            i += 1
        return "".join(out)

    measurement = token(", ")
    if not measurement:
        raise LineError("empty measurement")
    tags: dict[str, str] = {}
    while i < n and line[i] == ",":
        i += 1
        key = token(",= ")
        if i >= n or line[i] != "=" or not key:
            raise LineError(f"tag {key!r} is not key=value")
        i += 1
        value = token(",= ")
        if not value or (i < n and line[i] == "="):
            raise LineError(f"tag {key!r} has no value or an unescaped '='")
        tags[key] = value
    if i >= n or line[i] != " ":
        raise LineError("no fields after the measurement and tags")
    i += 1
    fields: list[tuple[str, FieldValue]] = []
    while True:
        key = token(",= ")
        if i >= n or line[i] != "=" or not key:
            raise LineError(f"field {key!r} is not key=value")
        i += 1
        if i < n and line[i] == '"':
            i += 1
            chars = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    i += 1
                chars.append(line[i])
                i += 1
            if i >= n:
                raise LineError(f"string of field {key!r} is not closed")
            i += 1
            fields.append((key, "".join(chars)))
        else:
            start = i
            while i < n and line[i] not in ", ":
                i += 1
            fields.append((key, _value(line[start:i])))
        if i < n and line[i] == ",":
            i += 1
            continue
        break
    if i >= n:
        return Line(measurement, tags, fields, None)
    if line[i] != " ":
        raise LineError(f"unexpected {line[i]!r} after the fields")
    return Line(measurement, tags, fields, _timestamp(line[i + 1 :]))


def _escape(text: str, specials: str) -> str:
    out = text.replace("\\", "\\\\")
    for c in specials:
        out = out.replace(c, "\\" + c)
    return out


def format_value(value: FieldValue, kind: str = "") -> str:
    """A field value as line protocol: `kind` ``i`` or ``u`` marks an integer field."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind in ("i", "u"):
        return f"{int(value)}{kind}"
    return repr(float(value))


def format_line(
    measurement: str,
    tags: dict[str, str],
    fields: dict[str, str],
    ts: int | None = None,
) -> str:
    """One line from a measurement, tags, already formatted field values (`format_value`)
    and an optional timestamp, escaped as `parse_line` reads it."""
    key = ",".join(
        [_escape(measurement, ", ")]
        + [f"{_escape(k, ',= ')}={_escape(v, ',= ')}" for k, v in tags.items()]
    )
    body = ",".join(f"{_escape(k, ',= ')}={v}" for k, v in fields.items())
    return f"{key} {body}" if ts is None else f"{key} {body} {ts}"
