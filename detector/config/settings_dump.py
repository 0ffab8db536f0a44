"""The settings in effect as plain data with every secret masked, written as TOML or JSON.

A secret is a `SecretStr` field or a field whose name says password, token or secret, and a
password inside a URL (``http://user:pw@host``). Masked values never reach the output: the
TOML form writes them as comments, so the text loads back as a settings file
(`detector.config.config_file`) without a placeholder password in it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from typing import Any

from pydantic import BaseModel, SecretStr

MASK = "**********"
SECRET_WORDS = ("password", "token", "secret")
_URL_PASSWORD = re.compile(r"(?<=//)([^/:@\s]*):[^/@\s]*@")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _is_secret(name: str, annotation: Any) -> bool:
    # `password_file`, `token_file`: where a secret is, not the secret
    if any(word in name.lower() for word in SECRET_WORDS) and not name.endswith("_file"):
        return True
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _nested(annotation: Any) -> Any:
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)
    ):
        return annotation
    return None


def _field_infos(model: Any) -> dict[str, tuple[Any, str]]:
    """name -> (annotation, description) of a settings model."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return {n: (i.annotation, i.description or "") for n, i in model.model_fields.items()}
    return {f.name: (f.type, "") for f in dataclasses.fields(model)}


def masked(settings: BaseModel) -> dict[str, Any]:
    """The settings as JSON-ready data; a set secret is `MASK`, an unset one None."""
    return _mask(type(settings), settings.model_dump(mode="json"))


def _mask(model: Any, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        annotation, _ = _field_infos(model).get(name, (None, ""))
        nested = _nested(annotation)
        if nested is not None and isinstance(value, dict):
            out[name] = _mask(nested, value)
        elif _is_secret(name, annotation):
            out[name] = None if value is None else MASK
        else:
            out[name] = _mask_urls(value)
    return out


def _mask_urls(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\1:{MASK}@", value)
    if isinstance(value, list):
        return [_mask_urls(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask_urls(v) for k, v in value.items()}
    return value


def to_json(settings: BaseModel) -> str:
    return json.dumps(masked(settings), indent=2, ensure_ascii=False) + "\n"


def to_toml(settings: BaseModel, header: str = "") -> str:
    """The settings as a TOML settings file, each key under its description; secrets and
    unset values are comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _table(type(settings), masked(settings), [], lines)
    return "\n".join(lines).strip("\n") + "\n"


def _table(model: Any, data: dict[str, Any], path: list[str], lines: list[str]) -> None:
    infos = _field_infos(model) if model is not None else {}
    tables = []
    for name, value in data.items():
        annotation, description = infos.get(name, (None, ""))
        if isinstance(value, dict):
            tables.append((name, _nested(annotation), value))
            continue
        if description:
            lines.extend(f"# {line}" for line in _wrap(description))
        key = _key(name)
        if model is not None and _is_secret(name, annotation):
            state = "set, not shown" if value is not None else "not set"
            lines.append(f"# {key} = ...  (secret: {state})")
        elif value is None:
            lines.append(f"# {key} =  (not set)")
        elif MASK in (text := _value(value)):
            # A URL's password: as a value it would load as the password "**********".
            lines.append(f"# {key} = {text}  (a password in it is not shown)")
        else:
            lines.append(f"{key} = {text}")
    for name, nested, value in tables:
        lines.append("")
        lines.append(f"[{'.'.join(_key(p) for p in [*path, name])}]")
        _table(nested, value, [*path, name], lines)


def _wrap(text: str, width: int = 96) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*out, line] if line else out


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")
