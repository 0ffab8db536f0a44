"""`iotad config`: the settings in effect, secrets never shown, TOML that loads back."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from detector.cli import main as cli_main
from detector.config.settings import load_settings
from detector.config.settings_dump import MASK

SECRETS = {
    "IOTAD_MQTT__PASSWORD": "mqtt-Pa55-word",
    "IOTAD_NATS__PASSWORD": "nats-Pa55-word",
    "IOTAD_ALERTMANAGER__PASSWORD": "am-Pa55-word",
}
# NATS and Alertmanager take a password or a token
TOKEN = {"IOTAD_NATS__TOKEN": "nats-t0ken-value", "IOTAD_ALERTMANAGER__TOKEN": "am-t0ken"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.upper().startswith("IOTAD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("IOTAD_SECRETS_DIR", str(tmp_path / "secrets"))
    (tmp_path / "secrets").mkdir()
    monkeypatch.chdir(tmp_path)


def config(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli_main(["config", *argv]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_a_secret_set_anywhere_never_appears(
    fmt: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IOTAD_NATS__USER", "iotad")
    monkeypatch.setenv("IOTAD_ALERTMANAGER__USERNAME", "ops")
    out = config(capsys, "--format", fmt)
    assert "Pa55" not in out
    if fmt == "json":
        data = json.loads(out)
        assert data["mqtt"]["password"] == MASK and data["nats"]["password"] == MASK
        assert data["alertmanager"]["password"] == MASK
        assert data["alertmanager"]["username"] == "ops"
    else:
        assert out.count("# password = ...  (secret: set, not shown)") == 3
        tomllib.loads(out)


def test_a_password_in_a_url_is_masked_and_left_out_of_the_toml() -> None:
    from pydantic import BaseModel

    from detector.config.settings_dump import masked, to_toml

    class Example(BaseModel):
        url: str = "https://ops:am-Pa55-word@alertmanager:9093"
        urls: list[str] = ["nats://u:n-Pa55@a:4222", "nats://b:4222"]

    assert masked(Example()) == {
        "url": f"https://ops:{MASK}@alertmanager:9093",
        "urls": [f"nats://u:{MASK}@a:4222", "nats://b:4222"],
    }
    text = to_toml(Example())
    assert "Pa55" not in text and tomllib.loads(text) == {}


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_a_token_and_a_secrets_file_never_appear(
    fmt: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in TOKEN.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "secrets" / "iotad_mqtt__password").write_text("file-Pa55-word")
    out = config(capsys, "--format", fmt)
    assert "t0ken" not in out and "Pa55" not in out
    if fmt == "json":
        data = json.loads(out)
        assert data["mqtt"]["password"] == MASK and data["nats"]["token"] == MASK
        assert data["alertmanager"]["token"] == MASK
        assert data["alertmanager"]["token"] == MASK


def test_the_output_shows_every_source_and_reads_as_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plant.toml").write_text('[mqtt]\nhost = "from-toml"\nport = 8883\n')
    (tmp_path / ".env").write_text("IOTAD_DETECTION__THRESHOLD=0.7\n")
    monkeypatch.setenv("IOTAD_MQTT__PORT", "1884")
    data = json.loads(config(capsys, "--format", "json", "--config", "plant.toml"))
    assert data["mqtt"]["host"] == "from-toml"
    assert data["mqtt"]["port"] == 1884
    assert data["detection"]["threshold"] == 0.7
    assert data["mqtt"]["password"] is None
    assert data["model"]["path"] is None  # not required here, unlike `iotad run`


def test_the_toml_loads_back_as_a_settings_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IOTAD_MQTT__HOST", "broker")
    monkeypatch.setenv("IOTAD_PAYLOAD__FORMATS", '{"telegraf/#": "telegraf"}')
    monkeypatch.setenv("IOTAD_METRICS__SERIES_DEVICES", "press01,press02")
    monkeypatch.setenv("IOTAD_MODEL__PATH", "/models/current")
    monkeypatch.setenv("IOTAD_MQTT__PASSWORD", "mqtt-Pa55-word")
    monkeypatch.setenv("IOTAD_WORKER_ID", "w-1")
    before = load_settings(env_file=None)
    saved = tmp_path / "saved.toml"
    saved.write_text(config(capsys))
    tomllib.loads(saved.read_text())
    for key in list(os.environ):
        if key.startswith("IOTAD_") and key != "IOTAD_SECRETS_DIR":
            monkeypatch.delenv(key)
    after = load_settings(env_file=None, config_file=saved)
    assert after.mqtt.password is None  # never written out
    assert after.model_dump(exclude={"mqtt": {"password"}}) == before.model_dump(
        exclude={"mqtt": {"password"}}
    )


def test_invalid_settings_are_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IOTAD_MQTT__PORT", "0")
    assert cli_main(["config"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("iotad config: setting IOTAD_MQTT__PORT: ")
