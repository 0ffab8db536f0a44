"""Settings of the NATS source and the shard: defaults from the contract, and one-line errors
that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.config.settings import SettingsError, WorkerSettings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.upper().startswith("IOTAD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> WorkerSettings:
    monkeypatch.setenv("IOTAD_MODEL__PATH", "/models/x")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(env_file=None, secrets_dir=None)


def errors(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    with pytest.raises(SettingsError) as info:
        load(monkeypatch, **env)
    return "\n".join(info.value.lines)


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch)
    assert (s.source, s.shard) == ("mqtt", "0/1")
    n = s.nats
    assert n.urls == ["nats://127.0.0.1:4222"]
    assert (n.stream, n.partitions, n.replicas) == ("SENSORS", 64, 1)
    assert (n.checkpoint_bucket, n.durable_prefix) == ("iotad-checkpoints", "iotad")
    assert not n.tls


def test_nats_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    s = load(
        monkeypatch,
        IOTAD_SOURCE="nats",
        IOTAD_SHARD="2/3",
        IOTAD_NATS__URLS="tls://a:4222, tls://b:4222",
        IOTAD_NATS__USER="iotad",
        IOTAD_NATS__PASSWORD="secret",
        IOTAD_NATS__CA_FILE=str(ca),
        IOTAD_NATS__PARTITIONS="8",
    )
    assert s.shard_spec.owned(s.nats.partitions) == [2, 5]
    assert s.nats.urls == ["tls://a:4222", "tls://b:4222"]
    assert s.nats.tls and s.nats.password is not None
    assert s.nats.password.get_secret_value() == "secret"


def test_ordinal_shard_from_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, IOTAD_SOURCE="nats", IOTAD_SHARD="ordinal/4", HOSTNAME="iotad-3")
    assert s.shard == "3/4"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IOTAD_SOURCE": "nats", "IOTAD_SHARD": "3/3"}, "IOTAD_SHARD: .*below N=3"),
        ({"IOTAD_SOURCE": "nats", "IOTAD_SHARD": "0/0"}, "IOTAD_SHARD: .*at least 1"),
        ({"IOTAD_SOURCE": "nats", "IOTAD_SHARD": "ordinal/2", "HOSTNAME": "box"}, "-<ordinal>"),
        (
            {"IOTAD_SOURCE": "nats", "IOTAD_SHARD": "0/9", "IOTAD_NATS__PARTITIONS": "8"},
            "above the 8 partitions",
        ),
        ({"IOTAD_SHARD": "0/2"}, "IOTAD_SOURCE=nats"),
        ({"IOTAD_SOURCE": "kafka"}, "IOTAD_SOURCE"),
        ({"IOTAD_NATS__URLS": "http://x:4222"}, "IOTAD_NATS__URLS: .*not nats://"),
        ({"IOTAD_NATS__PASSWORD": "p"}, "password needs user"),
        ({"IOTAD_NATS__PARTITIONS": "0"}, "IOTAD_NATS__PARTITIONS"),
        ({"IOTAD_NATS__STREAM": "a.b"}, "IOTAD_NATS__STREAM"),
        ({"IOTAD_NATS__USER": "u", "IOTAD_NATS__TOKEN": "t"}, "give one of"),
        ({"IOTAD_NATS__CREDS_FILE": "/nonexistent.creds"}, "IOTAD_NATS__CREDS_FILE"),
    ],
)
def test_bad_settings_are_one_line_each(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    import re

    text = errors(monkeypatch, **env)
    assert re.search(message, text), text


def test_nats_source_keeps_no_checkpoint_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = errors(
        monkeypatch, IOTAD_SOURCE="nats", IOTAD_CHECKPOINT__PATH=str(tmp_path / "state.npz")
    )
    assert "IOTAD_NATS__CHECKPOINT_BUCKET" in text


def test_password_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    text = errors(monkeypatch, IOTAD_NATS__PASSWORD="hunter2")
    assert "hunter2" not in text


def test_nats_variables_are_known_settings() -> None:
    from detector.config.settings import unknown_env_vars

    env = {
        "IOTAD_SOURCE": "nats",
        "IOTAD_SHARD": "0/2",
        "IOTAD_NATS__URLS": "nats://a:4222",
        "IOTAD_NATS__CHECKPOINT_BUCKET": "b",
        "IOTAD_NATS__PARTITION": "8",  # misspelt
    }
    assert unknown_env_vars(env) == ["IOTAD_NATS__PARTITION"]


def test_output_stream_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    n = load(monkeypatch).nats
    assert (n.output_stream, n.output_max_age_s, n.output_max_bytes, n.output_retry_s) == (
        "IOTAD_OUTPUT",
        7 * 86_400,
        1 << 30,
        60.0,
    )


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("IOTAD_NATS__OUTPUT_MAX_AGE_S", "59", "greater than or equal to 60"),
        ("IOTAD_NATS__OUTPUT_MAX_BYTES", "1000", "greater than or equal to 1048576"),
        ("IOTAD_NATS__OUTPUT_RETRY_S", "0", "greater than or equal to 1"),
        ("IOTAD_NATS__OUTPUT_STREAM", "a.b", "JetStream name"),
        ("IOTAD_NATS__OUTPUT_STREAM", "SENSORS", "must differ from stream"),
    ],
)
def test_bad_output_stream_settings(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, says: str
) -> None:
    assert says in errors(monkeypatch, **{key: value})
