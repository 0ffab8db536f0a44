"""`iotad run` warns about IOTAD_* variables that name no setting, and says what was meant."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from detector.config.settings import load_settings, unknown_env_vars
from detector.worker.env_warnings import RENAMED, nearest_setting, unknown_env_warnings


def test_the_stacks_variables_and_real_settings_raise_no_warning() -> None:
    shell = {
        "STACK_BIND": "0.0.0.0",
        "STACK_TAG": "1.2",
        "NAB_ROOT": "/data/nab",
        "IOTAD_LOG__LEVEL": "INFO",
        "IOTAD_METRICS__SERIES_DEVICES": "press01",
        "IOTAD_SECRETS_DIR": "/run/secrets",
    }
    assert unknown_env_warnings(shell) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("IOTAD_BIND", "STACK_BIND"),
        ("IOTAD_LOG_LEVEL", "IOTAD_LOG__LEVEL"),
        ("IOTAD_SERIES_DEVICES", "IOTAD_METRICS__SERIES_DEVICES"),
        ("IOTAD_NAB_ROOT", "NAB_ROOT"),
        ("IOTAD_SIM_PASSWORD", "IOTAD_MQTT__PASSWORD"),
    ],
)
def test_an_old_name_is_answered_with_its_new_one(old: str, new: str) -> None:
    (line,) = unknown_env_warnings({old: "x"})
    assert line.startswith(f"environment variable {old} names no setting; renamed {new}")


def test_a_misspelt_setting_is_still_warned_about() -> None:
    (line,) = unknown_env_warnings({"IOTAD_MQTT_HOST": "b"})
    assert line == (
        "environment variable IOTAD_MQTT_HOST names no setting; did you mean "
        "IOTAD_MQTT__HOST?; ignored"
    )
    (line,) = unknown_env_warnings({"IOTAD_MQTT__HOTS": "b"})
    assert line == "environment variable IOTAD_MQTT__HOTS names no setting; ignored"
    assert nearest_setting("IOTAD_DETECTION_MAX_SERIES") == "IOTAD_DETECTION__MAX_SERIES"


def test_the_rename_table_is_true() -> None:
    """Old names name no setting; new IOTAD_ names are settings."""
    assert unknown_env_vars(dict.fromkeys(RENAMED, "x")) == sorted(RENAMED)
    new = {v.split()[0].rstrip(",") for v in RENAMED.values()}
    assert unknown_env_vars({n: "x" for n in new if n.startswith("IOTAD_")}) == []
    assert all(n.startswith(("IOTAD_", "STACK_")) or n == "NAB_ROOT" for n in new)


def test_run_logs_the_warning_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    from detector.worker.run_cli import serve

    for key in list(os.environ):
        if key.startswith("IOTAD_"):
            monkeypatch.delenv(key)
    settings = load_settings(
        {"model": {"path": str(tmp_path / "no-model")}, "metrics": {"port": 0}},
        env_file=None,
        secrets_dir=tmp_path,
    )
    monkeypatch.setenv("IOTAD_BIND", "0.0.0.0")
    monkeypatch.setenv("STACK_BIND", "0.0.0.0")
    with caplog.at_level(logging.WARNING, logger="iotad.run"):
        assert serve(settings, stop=threading.Event()) == 1  # no model: exits before MQTT
    warned = [r.getMessage() for r in caplog.records if "names no setting" in r.getMessage()]
    assert warned == [
        "environment variable IOTAD_BIND names no setting; renamed STACK_BIND, a docker "
        "compose variable; ignored"
    ]
