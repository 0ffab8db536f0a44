"""Warnings about ``IOTAD_*`` variables that name no setting, saying what was meant.

``IOTAD_`` is the settings' namespace and nothing else's: the compose stack's own knobs are
``STACK_*`` and the NAB corpus is ``NAB_ROOT``. Their old ``IOTAD_`` names (and a few
variables renamed into settings) are listed here, so that the warning in a shell that still
sets one says what replaced it; any other unknown name gets the nearest setting spelt with
``__`` where it has ``_`` (``IOTAD_MQTT_HOST`` -> ``IOTAD_MQTT__HOST``), when there is one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping

from detector.config.settings import ENV_PREFIX, NESTED, unknown_env_vars

RENAMED: dict[str, str] = {
    # deploy/docker-compose.yml's own variables (the old names work there for one release)
    "IOTAD_BIND": "STACK_BIND, a docker compose variable",
    "IOTAD_MQTT_BIND": "STACK_MQTT_BIND, a docker compose variable",
    "IOTAD_NATS_BIND": "STACK_NATS_BIND, a docker compose variable",
    "IOTAD_TAG": "STACK_TAG, a docker compose variable",
    "IOTAD_MODELS_DIR": "STACK_MODELS_DIR, a docker compose variable",
    "IOTAD_DATA_DIR": "STACK_DATA_DIR, a docker compose variable",
    "IOTAD_SIM_DEVICES": "STACK_SIM_DEVICES, a docker compose variable",
    "IOTAD_SIM_FAULT_RATE": "STACK_SIM_FAULT_RATE, a docker compose variable",
    # compose variables that were copies of a setting: compose now reads the setting's name
    "IOTAD_LOG_LEVEL": "IOTAD_LOG__LEVEL",
    "IOTAD_SERIES_DEVICES": "IOTAD_METRICS__SERIES_DEVICES",
    # variables of other commands
    "IOTAD_SIM_PASSWORD": "IOTAD_MQTT__PASSWORD (iotad simulate)",
    "IOTAD_NAB_ROOT": "NAB_ROOT (iotad eval nab)",
}
"""Old name -> what replaced it."""


def nearest_setting(name: str) -> str | None:
    """The setting's variable that `name` spells with ``_`` where ``__`` belongs, if any."""
    words = name[len(ENV_PREFIX) :].split("_")
    if len(words) > 10:  # 2**9 spellings at most
        return None
    for joints in itertools.product(("_", NESTED), repeat=len(words) - 1):
        candidate = (
            ENV_PREFIX + words[0] + "".join(j + w for j, w in zip(joints, words[1:], strict=True))
        )
        if candidate != name and not unknown_env_vars({candidate: ""}):
            return candidate
    return None


def unknown_env_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``IOTAD_*`` variable that names no setting."""
    environ = os.environ if environ is None else environ
    lines = []
    for name in unknown_env_vars(dict(environ)):
        upper = name.upper()
        if upper in RENAMED:
            hint = f"; renamed {RENAMED[upper]}"
        else:
            near = nearest_setting(upper)
            hint = f"; did you mean {near}?" if near else ""
        lines.append(f"environment variable {name} names no setting{hint}; ignored")
    return lines
