"""How list settings are written in the environment, shared by the settings models."""

from __future__ import annotations

import json
from typing import Any


def split_list(value: Any) -> Any:
    """Lists from the environment: JSON (``["a","b"]``) or comma-separated (``a,b``); other
    values (a TOML list, a default) pass through for pydantic to validate."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value
