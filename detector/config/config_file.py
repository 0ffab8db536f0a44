"""The TOML settings file: where it is, and the checks made before pydantic-settings reads it.

The file holds the same settings as the ``IOTAD_*`` variables, as tables:
``IOTAD_MQTT__TLS__CA_FILE`` is ``ca_file`` in ``[mqtt.tls]``. It is read by pydantic-settings'
own `TomlConfigSettingsSource`, below every other source but the defaults (see
`detector.config.settings.load_settings`). pydantic-settings ignores a missing file and, at the top
level, an unknown key; an operator who names a file means it, so both are errors here, one
line each.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

CONFIG_ENV = "IOTAD_CONFIG"


def config_path(flag: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The settings file: ``--config``, else ``IOTAD_CONFIG``, else None (no file)."""
    environ = os.environ if environ is None else environ
    given = flag or environ.get(CONFIG_ENV, "").strip()
    return Path(given) if given else None


def read_config(path: Path, model: type[BaseModel]) -> tuple[dict[str, Any], list[str]]:
    """The file's content and one line per problem: missing, not TOML, unknown keys."""
    where = f"config file {path}"
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}, [f"{where}: not found"]
    except IsADirectoryError:
        return {}, [f"{where}: is a directory"]
    except OSError as exc:
        return {}, [f"{where}: {exc.strerror or exc}"]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return {}, [f"{where}: not valid TOML: {exc}"]
    return data, [
        f"{where}: unknown key {key!r} (no such setting; misspelt?)"
        for key in unknown_keys(data, model)
    ]


def unknown_keys(data: Mapping[str, Any], model: Any, prefix: str = "") -> list[str]:
    """Dotted keys of `data` that are no field of `model` (tables looked into)."""
    fields = _fields(model)
    out = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            out.append(dotted)
            continue
        nested = fields[key]
        if isinstance(value, dict) and _fields(nested):
            out.extend(unknown_keys(value, nested, f"{dotted}."))
    return out


def _fields(model: Any) -> dict[str, Any]:
    """Field name -> type of a settings model (a pydantic model or a dataclass); {} for a
    plain value's type (a ``dict[str, str]`` setting takes any key)."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return {name: info.annotation for name, info in model.model_fields.items()}
    if isinstance(model, type) and dataclasses.is_dataclass(model):
        return {f.name: f.type for f in dataclasses.fields(model)}
    return {}


def key_of(loc: tuple[int | str, ...]) -> str:
    """The dotted TOML key of a setting: ``("mqtt", "port")`` -> ``mqtt.port``."""
    return ".".join(str(p) for p in loc if isinstance(p, str))


def has_key(data: Mapping[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
