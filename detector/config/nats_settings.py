"""Settings of the NATS JetStream source (``IOTAD_NATS__*``), see `detector.worker.nats_source`.

Names and defaults are the contract with deploy/ and docs/scale-out.md: stream ``SENSORS``
of subjects ``part.*.sensors.>``, P partitions (the server's subject mapping must use the
same P; the worker checks it at start), durable consumers ``<prefix>-p<NN>``, checkpoints in
the key-value bucket ``iotad-checkpoints`` under ``p<NN>``.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, field_validator
from pydantic import model_validator as _model_validator
from pydantic_settings import NoDecode

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_URL = re.compile(r"^(nats|tls)://[^\s/]+(:\d+)?/?$")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class NatsSettings(BaseModel):
    """The NATS cluster, credentials, TLS and the JetStream names the worker uses."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)

    urls: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    """Servers of the cluster, comma-separated (`tls://` turns TLS on)."""
    user: str | None = None
    """User name; its password comes from `IOTAD_NATS__PASSWORD` (environment or secrets file)."""
    password: SecretStr | None = None
    """Password of `user` (environment or secrets file); never logged or printed."""
    token: SecretStr | None = None
    """Token authentication (environment or secrets file)."""
    creds_file: FilePath | None = None
    """A `.creds` file (JWT and nkey seed) for operator-mode accounts."""
    nkey_seed_file: FilePath | None = None
    """An nkey seed file (nkey authentication without JWT)."""
    ca_file: FilePath | None = None
    """CA bundle to verify the servers (TLS on when set)."""
    cert_file: FilePath | None = None
    """Client certificate for mutual TLS."""
    key_file: FilePath | None = None
    """Private key of the client certificate."""
    stream: str = "SENSORS"
    """JetStream stream of the partitioned readings (`part.*.sensors.>`); created when missing."""
    partitions: int = Field(64, ge=1, le=1024)
    """P of the server's `partition(P,1)` subject mapping; the worker refuses to start when
    the server maps devices otherwise."""
    replicas: int = Field(1, ge=1, le=5)
    """Replicas of the streams and the checkpoint bucket when the worker creates them."""
    output_stream: str = "IOTAD_OUTPUT"
    """JetStream stream that keeps the alerts and dead letters (`alerts.>`, `iotad.deadletter`);
    created when missing. The worker acks a reading once the stream acknowledged its alerts."""
    output_max_age_s: float = Field(7 * 86_400, ge=60, le=366 * 86_400)
    """Seconds the output stream keeps an alert or dead letter when the worker creates it."""
    output_max_bytes: int = Field(1 << 30, ge=1 << 20, le=1 << 40)
    """Bytes the output stream holds at most per replica when the worker creates it (the
    oldest go first)."""
    output_retry_s: float = Field(60.0, ge=1, le=3600)
    """Seconds the worker retries an alert or dead letter the output stream did not
    acknowledge (a node died, no leader yet); then it counts it as unconfirmed and keeps
    sending it again until the stream confirms it, the reading that raised it unacked."""
    checkpoint_bucket: str = "iotad-checkpoints"
    """Key-value bucket of the per-partition checkpoints (key `p<NN>`); created when missing."""
    durable_prefix: str = "iotad"
    """Durable consumer of partition NN: `<prefix>-p<NN>` (shared by whichever worker owns it)."""
    fetch_batch: int = Field(1000, ge=1, le=100_000)
    """Messages one pull of a partition's consumer asks for."""
    max_ack_pending: int = Field(20_000, ge=1, le=1_000_000)
    """Delivered, unacknowledged messages a partition's consumer allows: what a slow worker
    holds in memory at most per partition; the rest waits in the stream."""
    ack_wait_s: float = Field(60.0, ge=1, le=3600)
    """Seconds after which the server redelivers a message the worker has not acked."""
    connect_timeout_s: float = Field(30.0, gt=0, le=86_400)
    """At start-up, give up (exit 1) when no server answered within this time."""

    _split = field_validator("urls", mode="before")(_split)

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        if not urls:
            raise ValueError("at least one server URL is needed")
        for url in urls:
            if not _URL.match(url):
                raise ValueError(f"{url!r} is not nats://host:port or tls://host:port")
        return urls

    @field_validator("stream", "output_stream", "checkpoint_bucket", "durable_prefix")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} must be 1-64 of [A-Za-z0-9_-] (a JetStream name)")
        return value

    @property
    def tls(self) -> bool:
        return (
            any(u.startswith("tls://") for u in self.urls)
            or self.ca_file is not None
            or self.cert_file is not None
        )

    @_model_validator(mode="after")
    def _credentials(self) -> NatsSettings:
        if self.password is not None and self.user is None:
            raise ValueError("password needs user")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (a client certificate)")
        ways = [
            self.user is not None,
            self.token is not None,
            self.creds_file is not None,
            self.nkey_seed_file is not None,
        ]
        if sum(ways) > 1:
            raise ValueError("give one of user/password, token, creds_file, nkey_seed_file")
        if self.output_stream == self.stream:
            raise ValueError("output_stream must differ from stream (the readings' stream)")
        return self
