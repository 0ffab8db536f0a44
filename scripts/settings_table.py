"""Print the Markdown table of every `iotad run` setting, from `detector.config.settings` itself.

README.md carries its output between the ``settings-table`` markers; a test checks they match,
so the documented settings cannot drift from the code. Usage::

    python scripts/settings_table.py            # print the table
    python scripts/settings_table.py --write    # refresh README.md in place
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from detector.config.attribute_docs import attribute_docs
from detector.config.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def _fields(cls: type) -> list[tuple[str, Any, Any, str, str]]:
    """``(name, annotation, default, allowed values, description)`` of a pydantic model or a
    dataclass."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        out = []
        for name, info in cls.model_fields.items():
            default = info.get_default(call_default_factory=True)
            doc = " ".join((info.description or "").split())
            out.append((name, info.annotation, default, allowed(info), doc))
        return out
    if dataclasses.is_dataclass(cls):
        docs = attribute_docs(cls)
        return [
            (f.name, f.type, f.default, "", docs.get(f.name, "")) for f in dataclasses.fields(cls)
        ]
    return []


def _number(x: Any) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def allowed(info: FieldInfo) -> str:
    """The values a setting accepts, from its bounds (``[1, 65535]``, ``(0, 1]``) or its
    literal choices (``5 | 3.1.1``); empty when anything of its type goes."""
    if typing.get_origin(info.annotation) is Literal:
        return " | ".join(str(choice) for choice in typing.get_args(info.annotation))
    low = high = ""
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            low = f"[{_number(m.ge)}"
        elif isinstance(m, annotated_types.Gt):
            low = f"({_number(m.gt)}"
        elif isinstance(m, annotated_types.Le):
            high = f"{_number(m.le)}]"
        elif isinstance(m, annotated_types.Lt):
            high = f"{_number(m.lt)})"
    if not (low or high):
        return ""
    return f"{low or '(-∞'}, {high or '∞)'}"


def _nested(annotation: Any) -> type | None:
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)
    ):
        return annotation
    return None


def _show(default: Any) -> str:
    if default is None:
        return "—"
    if isinstance(default, (list, tuple)):
        return ",".join(str(d) for d in default) or "(empty)"
    if isinstance(default, dict):
        return ",".join(f"{k}={v}" for k, v in default.items()) or "(empty)"
    if isinstance(default, bool):
        return str(default).lower()
    text = str(default)
    return text if text else '""'


def rows(cls: type, prefix: str = "IOTAD_") -> list[tuple[str, str, str, str]]:
    """``(variable, default, allowed, description)`` for every leaf setting under `cls`; the
    description is the field's (``Field(description=...)``, or the docstring under it)."""
    out: list[tuple[str, str, str, str]] = []
    for name, annotation, default, values, doc in _fields(cls):
        var = f"{prefix}{name.upper()}"
        nested = _nested(annotation)
        if nested is not None:
            out.extend(rows(nested, var + "__"))
            continue
        if name == "worker_id":
            shown = "host name"
        elif "password" in name:
            shown = "— (secret)"
        else:
            shown = _show(default)
        out.append((var, shown, values, doc))
    return out


def table() -> str:
    lines = ["| variable | default | allowed | meaning |", "|---|---|---|---|"]
    for var, default, values, doc in rows(WorkerSettings):
        escaped = doc.replace("|", r"\|")
        shown = values.replace("|", r"\|")
        lines.append(f"| `{var}` | `{default}` | {shown} | {escaped} |")
    return "\n".join(lines)


def readme_block() -> str:
    return f"{START}\n{table()}\n{END}"


def main(argv: list[str]) -> int:
    if "--write" in argv:
        readme = ROOT / "README.md"
        text = readme.read_text(encoding="utf-8")
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(head + readme_block() + tail, encoding="utf-8")
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
