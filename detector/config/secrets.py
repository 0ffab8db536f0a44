"""Secrets given as files (a password, a token): read on every use, never shown.

The Alertmanager settings check them (`detector.config.alertmanager_settings`) and the
Alertmanager client sends them (`detector.worker.alertmanager_client`); they live here so that
the settings import no HTTP client.
"""

from __future__ import annotations

import base64
from pathlib import Path

SECRET_FILE_MAX_BYTES = 4096
"""A password or token file is one short line; anything longer is the wrong file."""


class SecretFileError(ValueError):
    """A password or token file that cannot be used (the message never holds its content)."""


def read_secret_file(path: Path) -> str:
    """The secret in `path`: one line, trailing newline removed, at most 4 KiB."""
    try:
        with open(path, "rb") as f:
            raw = f.read(SECRET_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise SecretFileError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if len(raw) > SECRET_FILE_MAX_BYTES:
        raise SecretFileError(f"{str(path)!r} is over {SECRET_FILE_MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretFileError(f"{str(path)!r} is not UTF-8 text") from None
    if not text:
        raise SecretFileError(f"{str(path)!r} is empty")
    if has_control_chars(text):
        raise SecretFileError(f"{str(path)!r} holds more than one line or control characters")
    return text


def has_control_chars(text: str) -> bool:
    """CR, LF and other control characters: in a header they would split it (injection)."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


class Credentials:
    """The ``Authorization`` header: HTTP basic auth or a bearer token.

    Each secret is given as a value or as a file read on every request (``password_file``,
    ``token_file``; rotation without a restart). Give basic auth or a token, not both; the
    settings (`detector.config.alertmanager_settings`) check that before this is built.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        password_file: Path | None = None,
        token: str | None = None,
        token_file: Path | None = None,
    ) -> None:
        self._username = username
        self._password = password
        self._password_file = password_file
        self._token = token
        self._token_file = token_file

    @property
    def scheme(self) -> str:
        """``basic``, ``bearer`` or ``none`` (for logs: never the secret)."""
        if self._username is not None:
            return "basic"
        if self._token is not None or self._token_file is not None:
            return "bearer"
        return "none"

    def header(self) -> str | None:
        """The header value, or None without credentials; SecretFileError when a file
        cannot be read."""
        if self._username is not None:
            password = self._password
            if self._password_file is not None:
                password = read_secret_file(self._password_file)
            pair = f"{self._username}:{password or ''}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        token = self._token
        if self._token_file is not None:
            token = read_secret_file(self._token_file)
        return None if token is None else f"Bearer {token}"

    def __repr__(self) -> str:
        return f"Credentials({self.scheme})"
