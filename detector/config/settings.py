"""Settings of `iotad run`: flags, environment (``IOTAD_*``), ``.env``, a secrets directory,
a TOML file.

Precedence, highest first: command-line flags, environment variables, the ``.env`` file,
files in the secrets directory, the TOML settings file (``--config`` or ``IOTAD_CONFIG``;
`detector.config.config_file`), defaults. Nested settings use ``__``::

    IOTAD_MQTT__HOST=broker IOTAD_MQTT__PORT=8883 IOTAD_MQTT__TLS__CA_FILE=/etc/ca.pem
    IOTAD_MODEL__PATH=/models/current IOTAD_DETECTION__THRESHOLD=0.6

Passwords come from the environment or, better, from a file named like the variable in the
secrets directory (``/run/secrets/iotad_mqtt__password``; the directory is
``IOTAD_SECRETS_DIR``, default ``/run/secrets`` when it exists). There is no password flag.

Every numeric setting has bounds, and each default is stated once: in the settings model, or
for the detection core and the payload decoder in their own dataclasses (`DetectionConfig`,
`PayloadLimits`), whose settings models are built from them here with the bounds added.
Non-finite numbers (``nan``, ``inf``) are refused everywhere.

pydantic is used here, at start-up, and nowhere on the per-message path.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import typing
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FilePath,
    PlainSerializer,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources import NestedSecretsSettingsSource

from detector.config.alertmanager_settings import AlertmanagerSettings
from detector.config.attribute_docs import attribute_docs
from detector.config.config_file import has_key, key_of, read_config
from detector.config.nats_settings import NatsSettings
from detector.config.payload_limits import PayloadLimits
from detector.config.setting_values import split_list
from detector.engine.detection_config import DetectionConfig
from detector.engine.readings import valid_name
from detector.worker.partitions import Shard, parse_shard
from detector.worker.topics import DEFAULT_PATTERNS, TopicPattern, filters_overlap

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "IOTAD_"
NESTED = "__"
DEFAULT_SECRETS_DIR = Path("/run/secrets")
_TOML_FILE: ContextVar[Path | None] = ContextVar("iotad_toml_file", default=None)
"""The TOML file of the settings being built (`load_settings` sets it around the build:
`settings_customise_sources` is a class method and sees no arguments)."""


class SettingsError(Exception):
    """Invalid settings; `lines` holds one line per problem, each naming the setting."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def default_worker_id() -> str:
    """``iotad-<hostname>``, reduced to the characters a client id and topic may carry."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname()) or "local"
    return f"iotad-{host}"[:64]


STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)
"""Every settings model: unknown keys are errors (typos), ``nan``/``inf`` are refused, and
the docstring under a field is its description (the README's settings table, `iotad
config`)."""

COUNT_MAX = 2**30
"""Upper bound of settings counted in readings: per-series counters are int32 and saturate
here (`detector.engine.scoring.COUNTER_CAP`)."""

DETECTION_BOUNDS: dict[str, dict[str, float]] = {
    # A score is in [0, 1]: above 1 nothing would ever alert, at 0 everything would.
    "threshold": {"gt": 0, "le": 1},
    "resolve_after": {"ge": 1, "le": COUNT_MAX},
    "quiet_period": {"ge": 0, "le": COUNT_MAX},
    "band_sigmas": {"gt": 0, "le": 100},
    # Half-lives below one reading were silently taken as one.
    "error_halflife": {"ge": 1, "le": COUNT_MAX},
    "error_clip": {"gt": 0, "le": 1000},
    "likelihood_halflife": {"ge": 1, "le": COUNT_MAX},
    "level_halflife": {"ge": 1, "le": COUNT_MAX},
    # Three float32 rings of this length per series: 10,000 is 12 GB at 100,000 series.
    "short_window": {"ge": 1, "le": 10_000},
    "sustained_window": {"ge": 1, "le": 100_000},
    "range_tolerance": {"ge": 0, "le": 100},
    "flatline_min": {"ge": 0, "le": COUNT_MAX},
    "learn_readings": {"ge": 0, "le": COUNT_MAX},
    # In typical intervals of the series; 0 turns silence alerts off.
    "silence_after": {"ge": 0, "le": 1_000_000},
    # About 500 bytes of state per series: 10 million is 5 GB.
    "max_series": {"ge": 1, "le": 10_000_000},
    "idle_evict_s": {"gt": 0, "le": 10 * 365 * 86_400},
}
"""Bounds of the `DetectionConfig` fields as settings (pydantic `Field` constraints)."""

PAYLOAD_BOUNDS: dict[str, dict[str, float]] = {
    "max_bytes": {"ge": 1, "le": 268_435_455},  # MQTT's largest packet
    "max_readings": {"ge": 1, "le": 1_000_000},
    "max_future_s": {"ge": 0, "le": 7 * 86_400},
    "min_ts": {"ge": 0, "le": 4_102_444_800},  # 2100-01-01
    # ~150 bytes an entry: the defaults' worst case (every node full) is about 1.5 GB.
    "sparkplug_max_aliases": {"ge": 1, "le": 1_000_000},
    "sparkplug_max_nodes": {"ge": 1, "le": 1_000_000},
}
"""Bounds of the `PayloadLimits` fields as settings."""


def settings_from_dataclass(
    config: type[DataclassInstance], bounds: dict[str, dict[str, float]]
) -> Any:
    """The settings type of dataclass `config`: its fields, its defaults, `bounds` added.

    The dataclass stays the one place that states the defaults and documents the fields; the
    validated value *is* a `config` instance, so the code that uses it never sees pydantic.
    A field the dataclass gains later is a setting at once (bounded once it is named in
    `bounds`: a test asks for every numeric field).
    """
    hints = typing.get_type_hints(config)
    docs = attribute_docs(config)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        described: dict[str, Any] = {**bounds.get(f.name, {}), "description": docs.get(f.name)}
        if f.default is not dataclasses.MISSING:
            info = Field(f.default, **described)
        elif f.default_factory is not dataclasses.MISSING:
            info = Field(default_factory=f.default_factory, **described)
        else:
            info = Field(**described)  # a field without a default is a required setting
        hint = hints[f.name]
        if hint == tuple[str, ...]:
            # Names from the environment: comma-separated or JSON, as for the other lists.
            hint = Annotated[hint, NoDecode, BeforeValidator(lambda v: split_list(v))]
        fields[f.name] = (hint, info)
    unknown = set(bounds) - set(fields)
    if unknown:
        raise RuntimeError(f"bounds for unknown fields of {config.__name__}: {sorted(unknown)}")
    model = create_model(
        config.__name__.removesuffix("Config").removesuffix("Limits") + "Settings",
        __config__=STRICT,
        __doc__=config.__doc__,
        **fields,
    )
    return Annotated[
        model,
        # A `config` instance (the default, or one passed in) is checked like any other input.
        BeforeValidator(lambda v: dataclasses.asdict(v) if isinstance(v, config) else v),
        AfterValidator(lambda validated: config(**dict(validated))),
        PlainSerializer(dataclasses.asdict),
    ]


if TYPE_CHECKING:
    # What validation returns: the dataclass itself (the model is built at import time).
    DetectionSettings = DetectionConfig
    PayloadSettings = PayloadLimits
else:
    DetectionSettings = settings_from_dataclass(DetectionConfig, DETECTION_BOUNDS)
    PayloadSettings = settings_from_dataclass(PayloadLimits, PAYLOAD_BOUNDS)


StrList = Annotated[list[str], NoDecode]


def _check_topic_name(topic: str, what: str) -> str:
    if not topic or any(c in topic for c in "+#\0") or topic.startswith("/") or topic.endswith("/"):
        raise ValueError(f"{what} {topic!r} must be a topic without wildcards or outer '/'")
    return topic


class TLSSettings(BaseModel):
    """TLS to the broker. On when `enabled` or any file is given; verification always on
    unless `insecure` (which skips the host name check; for test brokers only)."""

    model_config = STRICT

    enabled: bool = False
    """TLS to the broker, verified against the system's CAs (or `ca_file`); on anyway when a
    file below is given."""
    ca_file: FilePath | None = None
    """CA bundle (PEM) that verifies the broker's certificate."""
    cert_file: FilePath | None = None
    """Client certificate (PEM) for mutual TLS."""
    key_file: FilePath | None = None
    """Private key of the client certificate (needs `cert_file`)."""
    insecure: bool = False
    """Skip the host name check of the broker's certificate (test brokers only; the chain is
    still verified)."""

    @property
    def active(self) -> bool:
        return self.enabled or self.ca_file is not None or self.cert_file is not None

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TLSSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (a client certificate)")
        return self


class MqttSettings(BaseModel):
    """The broker connection and what to subscribe to."""

    model_config = STRICT

    host: str = "localhost"
    """Host name or address of the MQTT broker."""
    port: int = Field(1883, ge=1, le=65535)
    """Port of the MQTT broker (8883 is the usual one for TLS)."""
    version: Literal["5", "3.1.1"] = "5"
    """MQTT protocol version; 3.1.1 for brokers without MQTT 5 (NATS' MQTT listener)."""
    client_id: str | None = None
    """Defaults to the worker id: stable, so the broker keeps the session across restarts."""
    username: str | None = None
    """User name at the broker; unset: connect without credentials."""
    password: SecretStr | None = None
    """Password of `username`: from the environment, `.env`, the secrets directory
    (`iotad_mqtt__password`) or `--password-file`; never logged or printed."""
    topics: StrList = Field(default_factory=lambda: ["sensors/#"])
    """Topic filters to subscribe to, comma-separated or JSON; none may match the worker's
    own output topics."""
    topic_patterns: StrList = Field(default_factory=lambda: list(DEFAULT_PATTERNS))
    """Topic templates, first match wins: literals, ``+``, ``{device}`` (required),
    ``{metric}`` (else the payload names it), ``{label}`` (e.g.
    ``plant/{site}/{line}/{device}/{metric}``: labels go into alerts and dead letters)."""
    qos: Literal[0, 1] = 1
    """QoS of the subscription: 1 (at least once, acknowledged after processing) or 0 (at
    most once: a restart loses what was in flight)."""
    keepalive_s: int = Field(30, ge=5, le=65535)
    """Seconds between MQTT pings while idle; after 1.5 x this of silence the broker takes
    the worker for gone (and publishes its offline status)."""
    session_expiry_s: int = Field(3600, ge=0, le=4_294_967_295)
    """MQTT v5: how long the broker keeps the session (and queues) while the worker is away."""
    receive_maximum: int = Field(4096, ge=1, le=65535)
    """MQTT v5: unacknowledged messages the broker may send ahead (v3.1.1: the broker's
    max_inflight_messages decides)."""
    reconnect_min_s: int = Field(1, ge=1, le=3600)
    """First wait before reconnecting after the connection is lost (doubling from here)."""
    reconnect_max_s: int = Field(60, ge=1, le=3600)
    """Longest wait between reconnect attempts."""
    connect_timeout_s: float = Field(30.0, gt=0, le=86_400)
    """At start-up, give up (exit 1) when no connection succeeded within this time."""
    max_queued_publishes: int = Field(10_000, ge=1, le=10_000_000)
    """Outgoing QoS 1 messages (alerts, dead letters) held while the broker is away."""
    tls: TLSSettings = Field(default_factory=TLSSettings)

    _split = field_validator("topics", "topic_patterns", mode="before")(split_list)

    @field_validator("topics")
    @classmethod
    def _filters(cls, topics: list[str]) -> list[str]:
        if not topics:
            raise ValueError("at least one topic filter is needed")
        for topic in topics:
            parts = topic.split("/")
            bad_hash = "#" in topic and (parts[-1] != "#" or topic.count("#") > 1)
            bad_plus = any("+" in p and p != "+" for p in parts)
            if not topic or bad_hash or bad_plus:
                raise ValueError(f"{topic!r} is not a valid MQTT topic filter")
        return topics

    @field_validator("topic_patterns")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        if not patterns:
            raise ValueError("at least one topic pattern is needed")
        for pattern in patterns:
            TopicPattern(pattern)  # raises ValueError naming the bad segment
        return patterns

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and not (1 <= len(value) <= 64):
            raise ValueError("client id must be 1 to 64 characters")
        return value

    @model_validator(mode="after")
    def _backoff(self) -> MqttSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self


class OutputSettings(BaseModel):
    """Topics the worker publishes to."""

    model_config = STRICT

    alerts_prefix: str = "alerts"
    """Alerts are published on ``<alerts_prefix>/{device}/{metric}`` (QoS 1)."""
    scores: bool = False
    """Publish every scored reading on ``<scores_prefix>/{device}/{metric}`` (QoS 0)."""
    scores_prefix: str = "scores"
    """Prefix of the score topics when `scores` is on."""
    deadletter_topic: str = "iotad/deadletter"
    """Rejected input is republished here with the reason (JSON)."""
    deadletter_payload_bytes: int = Field(1024, ge=0, le=268_435_455)
    """Dead letters carry at most this much of the rejected payload."""
    status_prefix: str = "iotad/status"
    """The worker's retained status (``online``, ``offline`` as the last will) is on
    ``<status_prefix>/<worker id>``."""

    @field_validator("alerts_prefix", "scores_prefix", "deadletter_topic", "status_prefix")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _check_topic_name(value, "topic")


class MetricsSettings(BaseModel):
    """The HTTP endpoint for /metrics, /healthz and /readyz."""

    model_config = STRICT

    host: str = "0.0.0.0"
    """Address /metrics, /healthz and /readyz listen on (127.0.0.1: this machine only)."""
    port: int = Field(9108, ge=0, le=65535)
    """0 picks a free port (tests)."""
    series_devices: StrList = Field(default_factory=list)
    """Devices that get per-series gauges (iotad_series_value/expected/lower/upper/score)."""
    max_active_anomalies: int = Field(500, ge=0, le=100_000)
    """Open anomalous episodes exported with their labels (iotad_anomaly_active...); more are
    counted in iotad_anomaly_active_overflow_total."""

    _split = field_validator("series_devices", mode="before")(split_list)


class ModelSettings(BaseModel):
    """The model artifact the worker runs."""

    model_config = STRICT

    path: Path | None = None
    """Required to run; checked by `load_settings` so the error names IOTAD_MODEL__PATH."""
    threads: int = Field(1, ge=1, le=64)
    """LiteRT interpreter threads (the network thread needs the other core)."""
    reload_check_s: float = Field(5.0, ge=0, le=3600)
    """How often the worker looks for a new artifact at the model path and swaps it in
    between batches (docs/model-lifecycle.md); 0: only on SIGHUP."""


class LogSettings(BaseModel):
    """Logging of rejected input: at most `lines` per `interval_s` per reason."""

    model_config = STRICT

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Least severe log lines written (``--log-level``; ``--quiet`` is WARNING)."""
    format: Literal["text", "json"] = "text"
    """Log lines as text, or json: one object per line with ``ts``, ``level``, ``logger``,
    ``message`` and ``exc`` (``--log-format``)."""
    reject_lines: int = Field(5, ge=0, le=100_000)
    """Log lines per rejection reason per `reject_interval_s`; the rest are counted and the
    count logged (every rejection is also a metric and a dead letter)."""
    reject_interval_s: float = Field(60.0, gt=0, le=86_400)
    """The window of `reject_lines`, in seconds."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class CheckpointSettings(BaseModel):
    """Periodic checkpoints of the detection state (see `detector.worker.checkpoint`)."""

    model_config = STRICT

    path: Path | None = None
    """File the detection state is saved to periodically and on shutdown, and restored from
    at start (e.g. /var/lib/iotad/state.npz); unset or empty: no checkpoints."""
    interval_s: float = Field(60.0, gt=0, le=86_400)
    """Seconds between checkpoints while readings flow."""

    @field_validator("path", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # ``IOTAD_CHECKPOINT__PATH=""`` (a template left blank) became Path("."), the working
        # directory itself: the save then failed on every interval.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("path")
    @classmethod
    def _directory_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.parent.is_dir():
            raise ValueError(f"directory {str(value.parent)!r} does not exist")
        if value is not None and value.is_dir():
            raise ValueError(f"{str(value)!r} is a directory; name a file in it")
        return value


class RulesSettings(BaseModel):
    """The per-device rules file (see docs/rules.md and `detector.engine.rules`)."""

    model_config = STRICT

    path: FilePath | None = None
    """TOML file of per-device rules: threshold overrides, mute, maintenance windows,
    Alertmanager severity and labels (e.g. /etc/iotad/rules.toml); unset: no rules. Checked
    at start (a bad file: exit 2), reloaded when it changes and on SIGHUP."""
    check_interval_s: float = Field(5.0, ge=0.1, le=3600)
    """Seconds between looks at the rules file for changes (between batches)."""

    @field_validator("path", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class WorkerSettings(BaseSettings):
    """Everything `iotad run` can be told."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        allow_inf_nan=False,
        case_sensitive=False,
        secrets_dir_missing="ok",
        use_attribute_docstrings=True,
    )

    worker_id: str = Field(default_factory=default_worker_id)
    """This worker's name: its MQTT client id (unless `mqtt.client_id`), status topic and
    ``worker`` in alerts; keep it stable across restarts. Default ``iotad-<host name>``."""
    source: Literal["mqtt", "nats"] = "mqtt"
    """Where readings come from: one MQTT broker (one worker), or NATS JetStream partitions
    shared by several workers (`IOTAD_NATS__*`, `IOTAD_SHARD`)."""
    shard: str = "0/1"
    """This worker's share: `i/N` (owns partitions p with p % N == i), or `ordinal/N` with
    i from the host name's trailing `-<n>` (a StatefulSet pod, `iotad-2`)."""
    queue_size: int = Field(20_000, ge=1, le=10_000_000)
    """Messages the network thread may hand over before it waits for the detection thread
    (it also waits at 4 x `max_batch` readings queued: gateway messages carry many)."""
    max_batch: int = Field(8192, ge=1, le=1_000_000)
    """Readings one drain of the queue passes to the core at most."""
    linger_s: float = Field(0.005, ge=0, le=1)
    """Under load, wait this long when fewer than 64 messages are waiting so that more
    make the batch (fewer, larger batches: less GIL contention). 0: never."""
    # In messages per second (the worker's `linger_above_msgs_per_s`); the public name stays
    # `IOTAD_LINGER_ABOVE`, which deployments already set.
    linger_above: float = Field(1000.0, ge=0, le=1e9)
    """Messages/s above which the worker lingers (below it, batches are taken at once)."""
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    payload: PayloadSettings = Field(default_factory=PayloadLimits)
    output: OutputSettings = Field(default_factory=OutputSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    detection: DetectionSettings = Field(default_factory=DetectionConfig)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    """Alert events also go to Alertmanager when ``IOTAD_ALERTMANAGER__URL`` is set."""
    nats: NatsSettings = Field(default_factory=NatsSettings)

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        # Resolved here (ordinal -> index), so the rest of the worker sees plain i/N.
        hostname = os.environ.get("HOSTNAME") or socket.gethostname()
        return str(parse_shard(value, hostname))

    @model_validator(mode="after")
    def _shard_fits(self) -> WorkerSettings:
        shard = self.shard_spec
        if self.source == "mqtt" and shard.count > 1:
            raise ValueError(
                f"shard {shard}: an MQTT broker cannot split series between workers; "
                "set IOTAD_SOURCE=nats to share them"
            )
        if shard.count > self.nats.partitions:
            raise ValueError(
                f"shard {shard}: N is above the {self.nats.partitions} partitions "
                "(IOTAD_NATS__PARTITIONS); a worker would own none"
            )
        if self.source == "nats" and self.checkpoint.path is not None:
            raise ValueError(
                "IOTAD_CHECKPOINT__PATH is the MQTT worker's file; with IOTAD_SOURCE=nats the "
                "state is checkpointed per partition in IOTAD_NATS__CHECKPOINT_BUCKET"
            )
        return self

    @property
    def shard_spec(self) -> Shard:
        return parse_shard(self.shard)

    @field_validator("worker_id")
    @classmethod
    def _worker_id(cls, value: str) -> str:
        if not valid_name(value):
            raise ValueError(f"{value!r} must be 1-64 of [A-Za-z0-9_.-] (it is a topic segment)")
        return value

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or self.worker_id

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The stock secrets source only sees top-level fields; the password is nested.
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            dotenv_settings,
            NestedSecretsSettingsSource(file_secret_settings),
        ]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable of a setting: ``("mqtt", "port")`` -> ``IOTAD_MQTT__PORT``."""
    names = [str(p) for p in loc if isinstance(p, str)]
    index = "".join(f"[{p}]" for p in loc if isinstance(p, int))
    return ENV_PREFIX + NESTED.join(n.upper() for n in names) + index


def format_errors(
    exc: ValidationError,
    flags: dict[str, str] | None = None,
    toml: tuple[Path, dict[str, Any]] | None = None,
) -> list[str]:
    """One line per problem: ``setting IOTAD_MQTT__PORT (--port): <what is wrong>``.

    `flags` maps dotted setting paths ("mqtt.port") to the flag that sets them; `toml` is the
    settings file and its content, named when the bad value can only have come from there.
    Values are echoed except for secrets.
    """
    flags = flags or {}
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        dotted = key_of(loc)
        name = env_name(loc) if loc else "IOTAD_*"
        flag = f" ({flags[dotted]})" if dotted in flags else ""
        from_toml = toml is not None and has_key(toml[1], dotted)
        if from_toml and not flag and not any(k.upper() == env_name(loc) for k in os.environ):
            flag = f" ({dotted} in {toml[0]})"  # type: ignore[index]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "missing":
            msg = "required but not set"
        elif err.get("type") == "extra_forbidden":
            msg = "unknown setting (misspelt?)"
        elif not _secret(dotted, err) and "input" in err and not isinstance(err["input"], dict):
            shown = repr(err["input"])
            msg += f" (got {shown if len(shown) <= 60 else shown[:60] + '...'})"
        lines.append(f"setting {name}{flag}: {msg}")
    return lines or [f"settings: {exc}"]


_URL_WITH_PASSWORD = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def _secret(dotted: str, err: Any) -> bool:
    """Whether an invalid value must not be echoed: a password or token, or a URL that
    carries credentials."""
    if dotted.rsplit(".", 1)[-1] in ("password", "token"):
        return True
    return bool(_URL_WITH_PASSWORD.search(repr(err.get("input", ""))))


def secrets_dir_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    """``IOTAD_SECRETS_DIR`` if set, else ``/run/secrets`` when it exists, else None."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    configured = env.get(f"{ENV_PREFIX}SECRETS_DIR")
    if configured:
        return Path(configured)
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


def load_settings(
    overrides: dict[str, Any] | None = None,
    *,
    env_file: str | Path | None = ".env",
    secrets_dir: str | Path | None = None,
    flags: dict[str, str] | None = None,
    config_file: str | Path | None = None,
    require_model: bool = True,
) -> WorkerSettings:
    """Build the settings; raise `SettingsError` with one line per invalid setting.

    `overrides` is a nested dict of values from flags (``{"mqtt": {"port": 1884}}``); they
    win over the environment, the ``.env`` file, the secrets directory and `config_file`
    (TOML, `detector.config.config_file`), which wins over the defaults only. `require_model`:
    the model path must be set (`iotad run`; `iotad record` and `iotad config` need none).
    """
    if secrets_dir is None:
        secrets_dir = secrets_dir_from_env()
    toml: tuple[Path, dict[str, Any]] | None = None
    if config_file is not None:
        path = Path(config_file)
        data, problems = read_config(path, WorkerSettings)
        if problems:
            raise SettingsError(problems)
        toml = (path, data)
    token = _TOML_FILE.set(toml[0] if toml else None)
    try:
        settings = WorkerSettings(
            _env_file=env_file,
            _secrets_dir=secrets_dir,
            **(overrides or {}),
        )
    except ValidationError as exc:
        raise SettingsError(format_errors(exc, flags, toml)) from None
    except (ValueError, OSError) as exc:  # e.g. an env list that is neither JSON nor CSV
        raise SettingsError([f"settings: {str(exc).splitlines()[0]}"]) from None
    finally:
        _TOML_FILE.reset(token)
    loops = loop_errors(settings, flags)
    if loops:
        raise SettingsError(loops)
    if require_model and settings.model.path is None:
        raise SettingsError(
            [
                f"setting {env_name(('model', 'path'))}: required but not set "
                "(the model artifact directory; `iotad run --model DIR`)"
            ]
        )
    return settings


def output_filters(settings: WorkerSettings) -> list[str]:
    """Filters matching every topic this worker publishes to: alerts, scores (when on),
    dead letters and its own status."""
    out = settings.output
    filters = [
        f"{out.alerts_prefix}/+/+",
        out.deadletter_topic,
        f"{out.status_prefix}/{settings.worker_id}",
    ]
    if out.scores:
        filters.append(f"{out.scores_prefix}/+/+")
    return filters


def loop_errors(settings: WorkerSettings, flags: dict[str, str] | None = None) -> list[str]:
    """One line per input filter that would also take the worker's own output.

    With ``IOTAD_MQTT__TOPICS='#'`` the worker read its own dead letters, rejected them and
    dead-lettered them again: an endless loop at thousands of messages a second.
    """
    flag = f" ({(flags or {})['mqtt.topics']})" if "mqtt.topics" in (flags or {}) else ""
    lines = []
    for topic_filter in settings.mqtt.topics:
        clash = [o for o in output_filters(settings) if filters_overlap(topic_filter, o)]
        if clash:
            lines.append(
                f"setting {env_name(('mqtt', 'topics'))}{flag}: filter {topic_filter!r} also "
                f"matches the worker's own output ({', '.join(clash)}): it would consume what "
                "it publishes; name the input topics only (e.g. sensors/#)"
            )
    return lines


def unknown_env_vars(environ: Mapping[str, str] | None = None) -> list[str]:
    """``IOTAD_*`` variables that name no setting (typos are otherwise silently ignored)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    known_top = set(WorkerSettings.model_fields) | {"secrets_dir", "env_file", "config"}
    unknown = []
    for key in env:
        if not key.upper().startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX) :].lower().split(NESTED)
        if path[0] not in known_top or not _known_path(WorkerSettings, path):
            unknown.append(key)
    return sorted(unknown)


def _known_path(model: Any, path: list[str]) -> bool:
    fields = getattr(model, "model_fields", None)
    if fields is None:
        import dataclasses

        if dataclasses.is_dataclass(model):
            return len(path) == 1 and path[0] in {f.name for f in dataclasses.fields(model)}
        return not path
    if not path:
        return True
    if path[0] not in fields:
        return path[0] in {"secrets_dir", "env_file", "config"}
    annotation = fields[path[0]].annotation
    if len(path) == 1:
        return True
    return isinstance(annotation, type) and _known_path(annotation, path[1:])


def overrides_from_flags(args: Any, flags: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Nested settings from the command-line flags that were given (None: not given);
    `flags` maps an argparse dest to ``(dotted setting, flag)``."""
    out: dict[str, Any] = {}
    for dest, (dotted, _flag) in flags.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
