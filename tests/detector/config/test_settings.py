"""Settings: environment, nesting, .env, secrets directory, flags, and one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest

from detector.config.settings import (
    DETECTION_BOUNDS,
    PAYLOAD_BOUNDS,
    SettingsError,
    WorkerSettings,
    env_name,
    load_settings,
    unknown_env_vars,
)
from detector.engine.detection_config import DetectionConfig
from detector.worker.payloads import PayloadLimits
from detector.worker.run_cli import add_arguments, overrides_from_args


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No IOTAD_* from the developer's shell, no .env or /run/secrets of the machine."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("IOTAD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def load(**kwargs: object) -> WorkerSettings:
    kwargs.setdefault("secrets_dir", None)
    kwargs.setdefault("env_file", None)
    overrides = kwargs.pop("overrides", {"model": {"path": "/models/m"}})
    return load_settings(overrides, **kwargs)  # type: ignore[arg-type]


def test_defaults() -> None:
    s = load()
    assert s.mqtt.host == "localhost"
    assert s.mqtt.port == 1883
    assert s.mqtt.version == "5"
    assert s.mqtt.topics == ["sensors/#"]
    assert s.mqtt.topic_patterns == ["sensors/{device}/{metric}", "sensors/{device}"]
    assert s.mqtt.qos == 1
    assert s.metrics.port == 9108
    assert s.metrics.host == "0.0.0.0"
    assert s.output.deadletter_topic == "iotad/deadletter"
    assert s.output.scores is False
    assert s.payload.max_bytes == 65_536
    assert s.payload.max_readings == 1000
    assert s.payload.max_future_s == 300
    assert s.payload == PayloadLimits()
    assert s.mqtt.tls.active is False and s.mqtt.tls.insecure is False
    assert s.detection == DetectionConfig()
    assert s.client_id == s.worker_id


def test_environment_with_nested_delimiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTAD_MQTT__HOST", "broker.plant")
    monkeypatch.setenv("IOTAD_MQTT__PORT", "8883")
    monkeypatch.setenv("IOTAD_MQTT__TOPICS", "sensors/#, plant/+/raw")
    monkeypatch.setenv("IOTAD_MQTT__VERSION", "3.1.1")
    monkeypatch.setenv("IOTAD_MODEL__PATH", "/models/current")
    monkeypatch.setenv("IOTAD_METRICS__PORT", "9200")
    monkeypatch.setenv("IOTAD_METRICS__SERIES_DEVICES", '["press-1", "press-2"]')
    monkeypatch.setenv("IOTAD_DETECTION__THRESHOLD", "0.65")
    monkeypatch.setenv("IOTAD_DETECTION__RESOLVE_AFTER", "3")
    monkeypatch.setenv("IOTAD_WORKER_ID", "worker-7")
    monkeypatch.setenv("IOTAD_OUTPUT__SCORES", "true")
    s = load(overrides={})
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.version) == ("broker.plant", 8883, "3.1.1")
    assert s.mqtt.topics == ["sensors/#", "plant/+/raw"]
    assert s.model.path == Path("/models/current")
    assert s.metrics.port == 9200
    assert s.metrics.series_devices == ["press-1", "press-2"]
    assert s.detection.threshold == 0.65 and s.detection.resolve_after == 3
    assert isinstance(s.detection, DetectionConfig)
    assert s.worker_id == "worker-7" and s.client_id == "worker-7"
    assert s.output.scores is True


def test_tls_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("IOTAD_MQTT__TLS__CA_FILE", str(ca))
    s = load()
    assert s.mqtt.tls.active and s.mqtt.tls.ca_file == ca and not s.mqtt.tls.insecure


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTAD_MQTT__PORT", "1884")
    monkeypatch.setenv("IOTAD_MQTT__HOST", "from-env")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--port", "1999", "--topic", "a/#", "--topic", "b/#", "--model", "/m", "--scores"]
    )
    s = load(overrides=overrides_from_args(args))
    assert s.mqtt.port == 1999
    assert s.mqtt.host == "from-env"  # not given as a flag: the environment's
    assert s.mqtt.topics == ["a/#", "b/#"]
    assert s.output.scores is True


def test_there_is_no_password_flag() -> None:
    """A password is never a flag's value: only a file holding it is."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = [opt for a in parser._actions for opt in a.option_strings if "pass" in opt]
    assert options == ["--password-file"]


def test_dotenv_file(tmp_path: Path) -> None:
    env = tmp_path / "worker.env"
    env.write_text("IOTAD_MQTT__HOST=dotenv-host\nIOTAD_MODEL__PATH=/m\n")
    s = load(overrides={}, env_file=env)
    assert s.mqtt.host == "dotenv-host"


def test_password_from_secrets_dir(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "iotad_mqtt__password").write_text("s3cret-pw\n")
    (secrets / "iotad_mqtt__username").write_text("worker")
    s = load(secrets_dir=secrets)
    assert s.mqtt.username == "worker"
    assert s.mqtt.password is not None
    assert s.mqtt.password.get_secret_value() == "s3cret-pw"


def test_secrets_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = tmp_path / "s"
    secrets.mkdir()
    (secrets / "iotad_mqtt__password").write_text("pw-from-file")
    monkeypatch.setenv("IOTAD_SECRETS_DIR", str(secrets))
    s = load_settings({"model": {"path": "/m"}}, env_file=None)
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == "pw-from-file"


def test_password_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTAD_MQTT__PASSWORD", "hunter2-secret")
    s = load()
    assert s.mqtt.password is not None
    assert s.mqtt.password.get_secret_value() == "hunter2-secret"
    for text in (repr(s), str(s), repr(s.mqtt), str(s.mqtt), s.model_dump_json()):
        assert "hunter2-secret" not in text


def test_password_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTAD_MQTT__PASSWORD", "hunter2-secret")
    monkeypatch.setenv("IOTAD_MQTT__PORT", "nope")
    with pytest.raises(SettingsError) as err:
        load()
    assert "hunter2-secret" not in str(err.value)


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("IOTAD_MQTT__PORT", "70000", "setting IOTAD_MQTT__PORT: "),
        ("IOTAD_MQTT__PORT", "abc", "setting IOTAD_MQTT__PORT: "),
        ("IOTAD_MQTT__VERSION", "4", "setting IOTAD_MQTT__VERSION: "),
        ("IOTAD_MQTT__TOPICS", "a/#/b", "setting IOTAD_MQTT__TOPICS: "),
        ("IOTAD_MQTT__TOPIC_PATTERNS", "sensors/{device}/#", "setting IOTAD_MQTT__TOPIC_PATTERNS"),
        ("IOTAD_MQTT__TLS__CA_FILE", "/no/such/ca.pem", "setting IOTAD_MQTT__TLS__CA_FILE: "),
        ("IOTAD_DETECTION__THRESHOLD", "high", "setting IOTAD_DETECTION__THRESHOLD: "),
        # A score is in [0, 1]: 2 turned all alerting off, nan compared false with every score.
        ("IOTAD_DETECTION__THRESHOLD", "2", "setting IOTAD_DETECTION__THRESHOLD: "),
        ("IOTAD_DETECTION__THRESHOLD", "5.5", "setting IOTAD_DETECTION__THRESHOLD: "),
        ("IOTAD_DETECTION__THRESHOLD", "nan", "setting IOTAD_DETECTION__THRESHOLD: "),
        ("IOTAD_DETECTION__THRESHOLD", "0", "setting IOTAD_DETECTION__THRESHOLD: "),
        ("IOTAD_DETECTION__SHORT_WINDOW", "0", "setting IOTAD_DETECTION__SHORT_WINDOW: "),
        ("IOTAD_DETECTION__ERROR_HALFLIFE", "0", "setting IOTAD_DETECTION__ERROR_HALFLIFE: "),
        ("IOTAD_DETECTION__MAX_SERIES", "-1", "setting IOTAD_DETECTION__MAX_SERIES: "),
        ("IOTAD_DETECTION__MAX_SERIES", "0", "setting IOTAD_DETECTION__MAX_SERIES: "),
        ("IOTAD_DETECTION__IDLE_EVICT_S", "inf", "setting IOTAD_DETECTION__IDLE_EVICT_S: "),
        ("IOTAD_DETECTION__THRESHOLDD", "0.5", "setting IOTAD_DETECTION__THRESHOLDD: unknown"),
        ("IOTAD_PAYLOAD__MAX_BYTES", "0", "setting IOTAD_PAYLOAD__MAX_BYTES: "),
        ("IOTAD_PAYLOAD__MAX_FUTURE_S", "nan", "setting IOTAD_PAYLOAD__MAX_FUTURE_S: "),
        ("IOTAD_LINGER_S", "nan", "setting IOTAD_LINGER_S: "),
        ("IOTAD_ALERTMANAGER__TIMEOUT_S", "inf", "setting IOTAD_ALERTMANAGER__TIMEOUT_S: "),
        ("IOTAD_METRICS__PORT", "-1", "setting IOTAD_METRICS__PORT: "),
        ("IOTAD_WORKER_ID", "a/b", "setting IOTAD_WORKER_ID: "),
        ("IOTAD_OUTPUT__DEADLETTER_TOPIC", "dead/#", "setting IOTAD_OUTPUT__DEADLETTER_TOPIC: "),
        ("IOTAD_MQTT__HOTS", "typo", "setting IOTAD_MQTT__HOTS: unknown setting"),
    ],
)
def test_invalid_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as err:
        load()
    assert len(err.value.lines) == 1
    assert err.value.lines[0].startswith(named)
    assert "\n" not in err.value.lines[0]


def _numeric_fields(model: type) -> list[tuple[str, object]]:
    """``(dotted name, FieldInfo)`` of every int/float setting under `model`."""
    from pydantic import BaseModel

    out = []
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += [(f"{name}.{sub}", i) for sub, i in _numeric_fields(annotation)]
        elif annotation in (int, float):
            out.append((name, info))
    return out


def test_every_numeric_setting_has_bounds_on_both_sides() -> None:
    import annotated_types

    unbounded = []
    for name, info in _numeric_fields(WorkerSettings):
        kinds = {type(m) for m in info.metadata}  # type: ignore[attr-defined]
        low = kinds & {annotated_types.Ge, annotated_types.Gt}
        high = kinds & {annotated_types.Le, annotated_types.Lt}
        if not (low and high):
            unbounded.append(name)
    assert unbounded == []


def test_detection_and_payload_defaults_are_the_dataclasses_own() -> None:
    # One source of defaults: the settings are built from the dataclasses, bounds added.
    for cls, bounds in ((DetectionConfig, DETECTION_BOUNDS), (PayloadLimits, PAYLOAD_BOUNDS)):
        numeric = [
            f.name for f in dataclasses.fields(cls) if f.type in ("int", "float", int, float)
        ]
        assert sorted(bounds) == sorted(numeric), cls.__name__
        for name, limits in bounds.items():
            default = getattr(cls(), name)
            assert limits.get("ge", -math.inf) <= default <= limits.get("le", math.inf)
            assert limits.get("gt", -math.inf) < default, name
    s = load()
    assert s.detection == DetectionConfig() and type(s.detection) is DetectionConfig
    assert s.payload == PayloadLimits() and type(s.payload) is PayloadLimits


def test_bounds_reach_the_edges_and_no_further(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTAD_DETECTION__THRESHOLD", "1")
    monkeypatch.setenv("IOTAD_DETECTION__MAX_SERIES", "1")
    monkeypatch.setenv("IOTAD_DETECTION__SHORT_WINDOW", "1")
    s = load()
    assert (s.detection.threshold, s.detection.max_series, s.detection.short_window) == (1, 1, 1)
    monkeypatch.setenv("IOTAD_DETECTION__THRESHOLD", "1.0000001")
    with pytest.raises(SettingsError):
        load()


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_checkpoint_path_means_no_checkpoints(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # It used to become Path("."): the working directory, which no save can replace.
    monkeypatch.setenv("IOTAD_CHECKPOINT__PATH", value)
    assert load().checkpoint.path is None


def test_a_checkpoint_path_that_is_a_directory_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IOTAD_CHECKPOINT__PATH", str(tmp_path))
    with pytest.raises(SettingsError) as err:
        load()
    assert err.value.lines[0].startswith("setting IOTAD_CHECKPOINT__PATH: ")


def test_missing_model_names_the_variable_and_flag() -> None:
    with pytest.raises(SettingsError) as err:
        load(overrides={})
    assert err.value.lines == [
        "setting IOTAD_MODEL__PATH: required but not set "
        "(the model artifact directory; `iotad run --model DIR`)"
    ]


def test_error_names_the_flag_that_set_the_value() -> None:
    with pytest.raises(SettingsError) as err:
        load(
            overrides={"mqtt": {"port": 0}, "model": {"path": "/m"}}, flags={"mqtt.port": "--port"}
        )
    assert err.value.lines[0].startswith("setting IOTAD_MQTT__PORT (--port): ")


def test_env_name() -> None:
    assert env_name(("mqtt", "tls", "ca_file")) == "IOTAD_MQTT__TLS__CA_FILE"
    assert env_name(("mqtt", "topics", 0)) == "IOTAD_MQTT__TOPICS[0]"


def test_unknown_top_level_variables_are_reported() -> None:
    env = {"IOTAD_MQTT__HOST": "x", "IOTAD_TRESHOLD": "3", "IOTAD_SECRETS_DIR": "/s", "PATH": "/"}
    assert unknown_env_vars(env) == ["IOTAD_TRESHOLD"]


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("IOTAD_MQTT__PORT", "99999"),
        # MAX_SERIES -1 and 0 were a traceback from the window store and exit 1.
        ("IOTAD_DETECTION__MAX_SERIES", "-1"),
        ("IOTAD_DETECTION__MAX_SERIES", "0"),
        ("IOTAD_DETECTION__THRESHOLD", "2"),
    ],
)
def test_cli_invalid_setting_exits_2_with_one_line(tmp_path: Path, env: str, value: str) -> None:
    import os

    # The test's own environment (PYTHONPATH included) without its IOTAD_* variables.
    env_vars = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOTAD_")}
    env_vars.update({env: value, "IOTAD_MODEL__PATH": "/m"})
    out = subprocess.run(
        [sys.executable, "-m", "detector", "run"],
        capture_output=True,
        text=True,
        env=env_vars,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"iotad run: setting {env}: ")


def test_cli_help_mentions_env_vars() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "detector", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    for text in (
        "--host",
        "--port",
        "--topic",
        "--model",
        "--metrics-port",
        "--worker-id",
        "--threshold",
        "--mqtt-version",
        "--scores",
        "--log-level",
        "IOTAD_MQTT__HOST",
        "IOTAD_MQTT__PASSWORD",
    ):
        assert text in out.stdout


@pytest.mark.parametrize(
    ("topics", "clash"),
    [
        ("#", "iotad/deadletter"),
        ("+/+", "iotad/deadletter"),
        ("iotad/#", "iotad/deadletter"),
        ("sensors/#,alerts/+/temp", "alerts/+/+"),
        ("iotad/status/+", "iotad/status/w1"),
        ("$share/g/#", "iotad/deadletter"),
    ],
)
def test_input_filters_that_take_the_workers_own_output_are_refused(
    monkeypatch: pytest.MonkeyPatch, topics: str, clash: str
) -> None:
    # '#' made the worker read its own dead letters and republish them, forever.
    monkeypatch.setenv("IOTAD_WORKER_ID", "w1")
    monkeypatch.setenv("IOTAD_MQTT__TOPICS", topics)
    with pytest.raises(SettingsError) as err:
        load()
    (line,) = err.value.lines
    assert line.startswith("setting IOTAD_MQTT__TOPICS: filter ")
    assert clash in line


def test_output_filters_follow_the_output_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTAD_WORKER_ID", "w1")
    monkeypatch.setenv("IOTAD_MQTT__TOPICS", "sensors/#,scores/#,iotad/status/w2,plant/+/raw")
    load()  # scores are off, another worker's status is not this one's output
    monkeypatch.setenv("IOTAD_OUTPUT__SCORES", "true")
    with pytest.raises(SettingsError) as err:
        load()
    assert "'scores/#'" in err.value.lines[0]
    monkeypatch.setenv("IOTAD_OUTPUT__SCORES_PREFIX", "out/scores")
    assert load().output.scores_prefix == "out/scores"


def test_payload_formats_and_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTAD_PAYLOAD__TIME_KEYS", "t, when")
    monkeypatch.setenv("IOTAD_PAYLOAD__VALUE_KEYS", '["v"]')
    monkeypatch.setenv("IOTAD_PAYLOAD__FORMATS", '{"telegraf/#": "telegraf", "lp/+": "influx"}')
    monkeypatch.setenv("IOTAD_PAYLOAD__DEVICE_TAGS", "slave_id")
    monkeypatch.setenv("IOTAD_PAYLOAD__TELEGRAF_TS_UNIT", "ms")
    monkeypatch.setenv("IOTAD_PAYLOAD__INFLUX_PRECISION", "s")
    monkeypatch.setenv("IOTAD_PAYLOAD__MEASUREMENT_PREFIX", "false")
    p = load().payload
    assert type(p) is PayloadLimits
    assert (p.time_keys, p.value_keys, p.device_tags) == (("t", "when"), ("v",), ("slave_id",))
    assert p.formats == {"telegraf/#": "telegraf", "lp/+": "influx"}
    assert (p.telegraf_ts_unit, p.influx_precision, p.measurement_prefix) == ("ms", "s", False)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("FORMATS", '{"telegraf/#": "xml"}', "'json', 'telegraf', 'influx' or 'sparkplug'"),
        ("FORMATS", '{"a/#/b": "influx"}', "not a valid MQTT topic filter"),
        ("TIME_KEYS", "ts,value", "both a time and a value"),
        ("DEVICE_TAGS", "", "one or more"),
        ("INFLUX_PRECISION", "h", "'s', 'ms', 'us' or 'ns'"),
        ("SPARKPLUG_BOOLEANS", "maybe", "'skip' or 'number'"),
        ("SPARKPLUG_MAX_NODES", "0", "greater than or equal to 1"),
        ("SPARKPLUG_MAX_ALIASES", "2000000", "less than or equal to 1000000"),
    ],
)
def test_bad_payload_formats_and_keys_are_one_line_each(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(f"IOTAD_PAYLOAD__{name}", value)
    with pytest.raises(SettingsError) as err:
        load()
    assert len(err.value.lines) == 1
    assert err.value.lines[0].startswith("setting IOTAD_PAYLOAD") and says in err.value.lines[0]
