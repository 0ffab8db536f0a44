"""The MQTT connection flags of `iotad run`, `iotad record` and `iotad simulate`, defined once.

run and record turn them into worker settings (`MQTT_FLAGS`, `SUBSCRIBE_FLAGS`: the flag
wins over ``IOTAD_MQTT__*``); simulate reads them directly. Every flag's default is None
(not given), so each command applies its own default. The vocabulary: docs/cli.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

PASSWORD_ENV = "IOTAD_MQTT__PASSWORD"

MQTT_FLAGS: dict[str, tuple[str, str]] = {
    "host": ("mqtt.host", "--host"),
    "port": ("mqtt.port", "--port"),
    "mqtt_version": ("mqtt.version", "--mqtt-version"),
    "username": ("mqtt.username", "--username"),
    "tls": ("mqtt.tls.enabled", "--tls"),
    "ca_file": ("mqtt.tls.ca_file", "--ca-file"),
    "cert_file": ("mqtt.tls.cert_file", "--cert-file"),
    "key_file": ("mqtt.tls.key_file", "--key-file"),
}
"""flag dest -> (dotted setting, flag as shown in errors). ``--password-file`` is read by
`password_override` (a file's content, never a value on the command line)."""
SUBSCRIBE_FLAGS: dict[str, tuple[str, str]] = {"topic": ("mqtt.topics", "--topic")}


class PasswordFileError(Exception):
    """``--password-file`` names a file that cannot be read; the message is one line."""


def add_mqtt_arguments(
    parser: argparse.ArgumentParser | Any,
    *,
    subscribe: bool,
    client_id_help: str,
    settings: bool = True,
) -> dict[str, argparse.Action]:
    """The broker, credentials and TLS flags; `subscribe` adds ``--topic``. `settings`: the
    command also reads ``IOTAD_MQTT__*`` (the help names them). Returns the actions by flag
    (for `detector.worker.cli_flags.add_alias`)."""

    def h(text: str, env: str, default: str = "") -> str:
        said = [env] if settings else []
        said += [f"default {default}"] if default else []
        return f"{text} ({'; '.join(said)})" if said else text

    add = parser.add_argument
    add("--host", help=h("MQTT broker host", "IOTAD_MQTT__HOST", "localhost"))
    add("--port", type=int, help=h("MQTT broker port", "IOTAD_MQTT__PORT", "1883, 8883 with TLS"))
    if subscribe:
        add(
            "--topic",
            action="append",
            metavar="FILTER",
            help=h("topic filter to subscribe to; repeatable", "IOTAD_MQTT__TOPICS", "sensors/#"),
        )
    add(
        "--mqtt-version",
        choices=["5", "3.1.1"],
        help=h("MQTT protocol", "IOTAD_MQTT__VERSION", "5"),
    )
    add("--client-id", help=client_id_help)
    add("--username", help=h("MQTT user name", "IOTAD_MQTT__USERNAME"))
    sources = (
        "the environment, a .env file or the secrets directory" if settings else "the environment"
    )
    add(
        "--password-file",
        metavar="FILE",
        help=f"file holding the MQTT password (else {PASSWORD_ENV} from {sources}; never a "
        "password on the command line)",
    )
    add(
        "--tls",
        action="store_true",
        default=None,
        help=h("TLS, verified with the system's CAs or --ca-file", "IOTAD_MQTT__TLS__ENABLED"),
    )
    return {
        "--ca-file": add(
            "--ca-file", metavar="PEM", help=h("CA bundle for TLS", "IOTAD_MQTT__TLS__CA_FILE")
        ),
        "--cert-file": add(
            "--cert-file",
            metavar="PEM",
            help=h("client certificate", "IOTAD_MQTT__TLS__CERT_FILE"),
        ),
        "--key-file": add(
            "--key-file", metavar="PEM", help=h("its private key", "IOTAD_MQTT__TLS__KEY_FILE")
        ),
    }


def read_password_file(path: str) -> str:
    """The password in `path` (one line; the line break after it is not part of it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        # The path is not shown: it may be a password given there by mistake.
        raise PasswordFileError(
            f"--password-file: cannot read the file ({exc.strerror or type(exc).__name__})"
        ) from None
    return text.rstrip("\r\n")


def add_password_file(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with ``mqtt.password`` from ``--password-file`` when it was given."""
    path = getattr(args, "password_file", None)
    if path:
        overrides.setdefault("mqtt", {})["password"] = read_password_file(path)
    return overrides


def flag_overrides(
    args: argparse.Namespace, flags: dict[str, tuple[str, str]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the given flags set (nested, ``--quiet`` folded into the log level, the
    password from ``--password-file``), and the flag that set each one: a settings error
    names a flag only when it was the flag that set the bad value. `flags` maps argparse
    dests to (setting path, flag), as `iotad run` and `iotad record` declare them."""
    from detector.config.settings import overrides_from_flags
    from detector.worker.cli_flags import log_level_flag

    given = argparse.Namespace(**{**vars(args), "log_level": log_level_flag(args)})
    named = {d: f for dest, (d, f) in flags.items() if getattr(given, dest, None) is not None}
    return add_password_file(args, overrides_from_flags(given, flags)), named
