"""The repository's .env.example: every variable is a real setting, no secret, and the
example values load (uncommented, as someone copying it to .env would)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from detector.config.settings import ENV_PREFIX, load_settings, unknown_env_vars

EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"
# `IOTAD_X=value` lines, commented out (`# IOTAD_X=value`) or not
ASSIGNMENT = re.compile(r"^#?\s*(IOTAD_[A-Z0-9_]+)=(.*)$")


def assignments(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = ASSIGNMENT.match(line.strip())
        if m:
            assert m.group(1) not in out, f"{m.group(1)} twice"
            out[m.group(1)] = m.group(2)
    return out


def test_every_variable_names_a_setting() -> None:
    found = assignments(EXAMPLE.read_text())
    assert len(found) >= 20
    assert unknown_env_vars(found) == []


def test_the_check_catches_a_misspelt_name() -> None:
    found = assignments("# IOTAD_MQTT__HOTS=broker\nIOTAD_LOG__LEVEL=INFO\n")
    assert unknown_env_vars(found) == ["IOTAD_MQTT__HOTS"]


def test_main_settings_are_listed() -> None:
    found = assignments(EXAMPLE.read_text())
    for name in (
        "IOTAD_WORKER_ID",
        "IOTAD_MQTT__HOST",
        "IOTAD_MQTT__PORT",
        "IOTAD_MQTT__USERNAME",
        "IOTAD_MQTT__TOPICS",
        "IOTAD_MODEL__PATH",
        "IOTAD_ALERTMANAGER__URL",
        "IOTAD_METRICS__PORT",
        "IOTAD_CHECKPOINT__PATH",
        "IOTAD_LOG__LEVEL",
    ):
        assert name in found, name


def test_no_secrets() -> None:
    text = EXAMPLE.read_text()
    names = assignments(text)
    assert not [n for n in names if "PASSWORD" in n or "TOKEN" in n or "SECRET" in n]
    # every line is a comment or blank: copying the file to .env changes nothing by itself
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())


def test_the_examples_load_when_uncommented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = assignments(EXAMPLE.read_text())
    # files and directories the examples name, made here
    for name in ("CA_FILE", "CERT_FILE", "KEY_FILE"):
        key = f"{ENV_PREFIX}MQTT__TLS__{name}"
        path = tmp_path / name.lower()
        path.write_text("-")
        values[key] = str(path)
    (tmp_path / "state").mkdir()
    rules = tmp_path / "rules.toml"  # the rules file must exist: the worker reads it at start
    rules.write_text("")
    values[f"{ENV_PREFIX}RULES__PATH"] = str(rules)
    values[f"{ENV_PREFIX}CHECKPOINT__PATH"] = str(tmp_path / "state" / "state.npz")
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    settings = load_settings(env_file=env_file, secrets_dir=tmp_path)
    assert settings.worker_id == values["IOTAD_WORKER_ID"]
    assert settings.mqtt.port == int(values["IOTAD_MQTT__PORT"])
    assert settings.mqtt.tls.active
    assert settings.metrics.series_devices == values["IOTAD_METRICS__SERIES_DEVICES"].split(",")
    assert settings.detection.threshold == float(values["IOTAD_DETECTION__THRESHOLD"])
    assert settings.rules.path == rules
    assert settings.rules.check_interval_s == float(values["IOTAD_RULES__CHECK_INTERVAL_S"])
