"""Settings of the Alertmanager sink (``IOTAD_ALERTMANAGER__*``), checked at load.

Everything that could fail at the first alert fails here, at start, with one line naming the
setting: a URL that is not http(s), credentials in a URL (they would reach logs and metric
labels), credentials sent in clear over the network, a CA or client certificate that does
not load, a secret file that is empty or unreadable, a label name Alertmanager would refuse.
"""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

from detector.config.secrets import (
    Credentials,
    SecretFileError,
    has_control_chars,
    read_secret_file,
)
from detector.config.setting_values import split_list

MAX_URLS = 10
"""Alertmanager peers posted to at most (an HA cluster has 2 or 3); also bounds the
cardinality of the ``url`` label of ``iotad_alertmanager_errors_total``."""
MAX_LABELS = 16
"""Static labels at most: they are part of every alert's identity."""
MAX_LABEL_VALUE = 256

RESERVED_LABELS = frozenset({"alertname", "device", "metric", "severity"})
"""Labels the sink sets itself (`detector.worker.alertmanager.alert_payload`)."""
_V = "IOTAD_ALERTMANAGER__"
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _urls(value: Any) -> Any:
    """One URL or several, comma-separated (or a JSON / TOML list); empty: off."""
    return [] if value is None else split_list(value)


def _labels(value: Any) -> Any:
    """``plant=north,line=2`` or a JSON object (``{"plant": "north"}``)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, label_value = part.partition("=")
        if not sep:
            raise ValueError(f"{part.strip()!r} is not name=value")
        if name.strip() in out:
            raise ValueError(f"label {name.strip()!r} given twice")
        out[name.strip()] = label_value.strip()
    return out


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: traffic that never leaves the machine (a proxy
    sidecar in the same pod)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AlertmanagerSettings(BaseModel):
    """Settings of the sink, meant as ``WorkerSettings.alertmanager`` (``IOTAD_ALERTMANAGER__*``).

    The sink is off while `url` is empty.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)

    url: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Alertmanager base URL, e.g. `http://alertmanager:9093`; for an HA cluster several,
    comma-separated: every alert is posted to each, and counts as delivered when one accepted
    it. Credentials go in `username`/`password` or `token`, never in the URL."""
    external_url: str | None = None
    """The worker as a human reaches it (`generatorURL`); default `http://<hostname>:<port>/`."""
    severity: str = "warning"
    """Value of the `severity` label of every alert."""
    labels: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """Static labels on every alert, e.g. `plant=north,line=2` (or a JSON object); they become
    part of the alert's identity. At most 16; not `alertname`, `device`, `metric`, `severity`."""
    username: str | None = None
    """HTTP basic auth user; the password comes from `password` or `password_file`."""
    password: SecretStr | None = None
    """Basic auth password (environment or secrets file `iotad_alertmanager__password` only)."""
    password_file: FilePath | None = None
    """File holding the basic auth password (read on every request: rotation needs no restart)."""
    token: SecretStr | None = None
    """Bearer token instead of basic auth (environment or secrets file only)."""
    token_file: FilePath | None = None
    """File holding the bearer token (read on every request)."""
    ca_file: FilePath | None = None
    """CA bundle that signed the Alertmanagers' certificates (https URLs; default: the
    system's CAs)."""
    cert_file: FilePath | None = None
    """Client certificate for mutual TLS (with `key_file`, or a PEM holding both)."""
    key_file: FilePath | None = None
    """Private key of `cert_file` (unencrypted PEM)."""
    resend_interval_s: float = Field(60.0, gt=0, le=86_400)
    """Firing alerts are re-posted this often. Keep below Alertmanager's resolve_timeout (5m by
    default)."""
    queue_size: int = Field(10_000, ge=1, le=10_000_000)
    """Events kept while Alertmanager is slow or down; past it the oldest is dropped."""
    timeout_s: float = Field(5.0, gt=0, le=3600)
    """HTTP timeout of one request."""
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    """Longest wait between retries (doubling from half a second)."""

    _split_urls = field_validator("url", mode="before")(_urls)
    _split_labels = field_validator("labels", mode="before")(_labels)

    @field_validator("url")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        if len(urls) > MAX_URLS:
            raise ValueError(f"{len(urls)} URLs: at most {MAX_URLS}")
        out: list[str] = []
        for url in urls:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
            if parts.username is not None or parts.password is not None:
                # Not echoed: the URL holds a password.
                raise ValueError(
                    "credentials in the URL would be logged and exported as a metric label: "
                    f"set {_V}USERNAME and __PASSWORD (or __TOKEN) instead"
                )
            try:
                parts.port  # noqa: B018 (raises on a bad port)
            except ValueError:
                raise ValueError(f"{url!r} has an invalid port") from None
            if parts.query or parts.fragment:
                raise ValueError(f"{url!r}: a base URL takes no query or fragment")
            url = url.rstrip("/")
            if url in out:
                raise ValueError(f"{url!r} is given twice")
            out.append(url)
        return out

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        if len(labels) > MAX_LABELS:
            raise ValueError(f"{len(labels)} labels: at most {MAX_LABELS}")
        for name, value in labels.items():
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(
                    f"label name {name!r} must be 1-64 of [A-Za-z0-9_], not starting with a "
                    "digit or '__'"
                )
            if name in RESERVED_LABELS:
                raise ValueError(f"label {name!r} is set by the worker itself")
            if not value or len(value) > MAX_LABEL_VALUE or has_control_chars(value):
                raise ValueError(
                    f"label {name!r}: the value must be 1-{MAX_LABEL_VALUE} printable characters"
                )
        return labels

    @field_validator("severity")
    @classmethod
    def _check_severity(cls, value: str) -> str:
        if not value or len(value) > MAX_LABEL_VALUE or has_control_chars(value):
            raise ValueError(f"must be 1-{MAX_LABEL_VALUE} printable characters")
        return value

    @field_validator("username")
    @classmethod
    def _check_username(cls, value: str | None) -> str | None:
        if value is not None and (not value or ":" in value or has_control_chars(value)):
            raise ValueError("must be non-empty, without ':' or control characters")
        return value

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and (
            not value.get_secret_value() or has_control_chars(value.get_secret_value())
        ):
            raise ValueError("must be one non-empty line")
        return value

    @field_validator("password_file", "token_file")
    @classmethod
    def _check_secret_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                read_secret_file(value)  # read to check, then forgotten
            except SecretFileError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> AlertmanagerSettings:
        basic = self.password is not None or self.password_file is not None
        bearer = self.token is not None or self.token_file is not None
        if self.password is not None and self.password_file is not None:
            raise ValueError(f"give {_V}PASSWORD or {_V}PASSWORD_FILE, not both")
        if self.token is not None and self.token_file is not None:
            raise ValueError(f"give {_V}TOKEN or {_V}TOKEN_FILE, not both")
        if basic and self.username is None:
            raise ValueError(f"a password needs {_V}USERNAME")
        if self.username is not None and not basic:
            raise ValueError(f"{_V}USERNAME needs {_V}PASSWORD or {_V}PASSWORD_FILE")
        if basic and bearer:
            raise ValueError("give basic auth (username and password) or a token, not both")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError(f"{_V}KEY_FILE needs {_V}CERT_FILE (a client certificate)")
        schemes = {urllib.parse.urlsplit(u).scheme for u in self.url}
        tls_files = self.ca_file is not None or self.cert_file is not None
        if tls_files and self.url and "https" not in schemes:
            raise ValueError(f"{_V}CA_FILE or __CERT_FILE is set but no URL is https://")
        if basic or bearer:
            for url in self.url:
                parts = urllib.parse.urlsplit(url)
                if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
                    raise ValueError(
                        f"credentials would cross the network in clear text to {url}: use "
                        f"https:// (with {_V}CA_FILE for a private CA)"
                    )
        if tls_files:
            self.ssl_context()  # a file that does not load fails here, at start
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the https URLs: None (system defaults) without CA or client
        certificate; ValueError when a file does not load."""
        if self.ca_file is None and self.cert_file is None:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"{_V}CA_FILE {str(self.ca_file)!r}: {_ssl_reason(exc)}") from None
        if self.cert_file is not None:
            try:
                # A key with a passphrase fails here instead of prompting on the terminal.
                ctx.load_cert_chain(self.cert_file, self.key_file, password=lambda: b"")
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"{_V}CERT_FILE {str(self.cert_file)!r} / __KEY_FILE: {_ssl_reason(exc)}"
                ) from None
        return ctx

    def credentials(self) -> Credentials:
        """The Authorization header source of these settings."""
        return Credentials(
            username=self.username,
            password=None if self.password is None else self.password.get_secret_value(),
            password_file=self.password_file,
            token=None if self.token is None else self.token.get_secret_value(),
            token_file=self.token_file,
        )


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc).splitlines()[0]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
