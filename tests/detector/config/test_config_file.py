"""The TOML settings file: where it sits among the sources, its one-line errors, and the
example shipped in deploy/."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from detector.cli import main as cli_main
from detector.config.config_file import config_path, unknown_keys
from detector.config.settings import SettingsError, WorkerSettings, load_settings, unknown_env_vars

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "iotad.example.toml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.upper().startswith("IOTAD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(config: Path, **kwargs: object) -> WorkerSettings:
    kwargs.setdefault("env_file", None)
    kwargs.setdefault("secrets_dir", Path("no-secrets"))
    return load_settings(config_file=config, require_model=False, **kwargs)  # type: ignore[arg-type]


def test_each_source_wins_over_the_file_in_the_documented_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write(tmp_path / "iotad.toml", '[mqtt]\nhost = "toml"\nport = 1999\n')
    assert load(config).mqtt.host == "toml"
    assert load(config).mqtt.keepalive_s == 30  # not in the file: the default
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    write(secrets / "iotad_mqtt__host", "secrets")
    assert load(config, secrets_dir=secrets).mqtt.host == "secrets"
    dotenv = write(tmp_path / ".env", "IOTAD_MQTT__HOST=dotenv\n")
    assert load(config, secrets_dir=secrets, env_file=dotenv).mqtt.host == "dotenv"
    monkeypatch.setenv("IOTAD_MQTT__HOST", "env")
    s = load(config, secrets_dir=secrets, env_file=dotenv)
    assert s.mqtt.host == "env"
    assert s.mqtt.port == 1999  # tables merge: the file's other keys stay
    flagged = load(config, env_file=dotenv, overrides={"mqtt": {"host": "flag"}})
    assert flagged.mqtt.host == "flag"


def test_an_unknown_key_is_one_line_naming_it(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", 'hots = "b"\n[mqtt]\nport = 1883\nhots = "b"\n')
    with pytest.raises(SettingsError) as err:
        load(config)
    assert err.value.lines == [
        f"config file {config}: unknown key 'hots' (no such setting; misspelt?)",
        f"config file {config}: unknown key 'mqtt.hots' (no such setting; misspelt?)",
    ]


def test_free_keys_of_a_mapping_setting_are_not_unknown() -> None:
    data = {"payload": {"formats": {"telegraf/#": "telegraf"}}, "detection": {"thresh": 1}}
    assert unknown_keys(data, WorkerSettings) == ["detection.thresh"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "not found"),
        ("[mqtt\nhost = 1", "not valid TOML: "),
    ],
)
def test_a_missing_or_broken_file_is_one_line(
    tmp_path: Path, text: str | None, problem: str
) -> None:
    config = tmp_path / "c.toml"
    if text is not None:
        write(config, text)
    with pytest.raises(SettingsError) as err:
        load(config)
    (line,) = err.value.lines
    assert line.startswith(f"config file {config}: {problem}")


def test_a_bad_value_names_the_key_in_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[mqtt]\nport = 0\n")
    with pytest.raises(SettingsError) as err:
        load(config)
    (line,) = err.value.lines
    assert line.startswith(f"setting IOTAD_MQTT__PORT (mqtt.port in {config}): ")


def test_the_file_comes_from_the_flag_else_the_environment() -> None:
    assert config_path("a.toml", {"IOTAD_CONFIG": "b.toml"}) == Path("a.toml")
    assert config_path(None, {"IOTAD_CONFIG": "b.toml"}) == Path("b.toml")
    assert config_path(None, {}) is None
    assert unknown_env_vars({"IOTAD_CONFIG": "b.toml"}) == []


def test_run_with_a_missing_file_named_in_the_environment_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IOTAD_CONFIG", str(tmp_path / "nope.toml"))
    assert cli_main(["run", "--model", "m", "--env-file", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"iotad run: config file {tmp_path / 'nope.toml'}: not found"]


def test_record_reads_the_file_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "c.toml", '[mqtt]\ntopics = ["#"]\n')
    argv = ["record", "--out", str(tmp_path / "h"), "--env-file", "", "--config", str(config)]
    assert cli_main(argv) == 2
    assert "also matches the worker's own output" in capsys.readouterr().err


def test_the_example_file_loads(tmp_path: Path) -> None:
    s = load(EXAMPLE)
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert s.mqtt.host == data["mqtt"]["host"]
    assert s.worker_id == data["worker_id"]
    assert s.payload.formats == data["payload"]["formats"]
    assert str(s.model.path) == data["model"]["path"]


def test_every_key_of_the_example_is_a_setting_commented_ones_too() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^# (\w+ = )", r"\1", text)
    assert uncommented.count("\n") == text.count("\n") and uncommented != text
    data = tomllib.loads(uncommented)
    assert unknown_keys(data, WorkerSettings) == []
    assert len(data) >= 10
    assert not [k for k in data.get("mqtt", {}) if "password" in k]
