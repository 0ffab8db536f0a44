"""Flags several subcommands share, defined once: logging, settings sources, durations, and
deprecated aliases of renamed flags and variables.

The vocabulary they follow is docs/cli.md. A renamed flag keeps its old name for one release
as a hidden alias (`add_alias`) that still works and prints one line on stderr; a renamed
environment variable the same (`deprecated_env`).

Cheap to import: the CLI imports every subcommand to build its help.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0}
REMOVED_IN = "the next release"

LOG_FLAGS: dict[str, tuple[str, str]] = {
    "log_level": ("log.level", "--log-level"),
    "log_format": ("log.format", "--log-format"),
}
"""flag dest -> (dotted setting, flag as shown in errors), for commands with settings."""


class DurationError(argparse.ArgumentTypeError, ValueError):
    """A duration that does not read; argparse shows its message."""


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h`` or ``1.5d``."""
    text = text.strip()
    try:
        if text and text[-1] in _UNITS_S:
            return float(text[:-1]) * _UNITS_S[text[-1]]
        return float(text)
    except ValueError:
        raise DurationError(
            f"bad duration {text!r}: seconds, or a number with s, m, h or d (90, 15m, 2h)"
        ) from None


def add_log_arguments(
    parser: argparse.ArgumentParser | Any, *, quiet_help: str, default_level: str | None = None
) -> None:
    """``--log-level``, ``--log-format`` and ``--quiet`` (long-running commands).

    `default_level` is said in the help; the flags' own defaults are None (not given), so a
    command with settings lets ``IOTAD_LOG__LEVEL`` / ``IOTAD_LOG__FORMAT`` decide.
    """
    add = parser.add_argument
    level_default = f"; default {default_level}" if default_level else ""
    add(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.upper,
        help=f"least severe log lines shown (IOTAD_LOG__LEVEL{level_default})",
    )
    add(
        "--log-format",
        choices=("text", "json"),
        type=str.lower,
        help="text (default), or json: one object per line with ts, level, logger, message "
        "and exc (IOTAD_LOG__FORMAT)",
    )
    add("--quiet", action="store_true", help=quiet_help)


def log_level_flag(args: argparse.Namespace) -> str | None:
    """The level the flags ask for: ``--log-level``, else WARNING with ``--quiet``, else None
    (the settings decide)."""
    level = getattr(args, "log_level", None)
    if level is None and getattr(args, "quiet", False):
        return "WARNING"
    return level


def level_without_settings(
    args: argparse.Namespace, default: str, environ: Mapping[str, str] | None = None
) -> str:
    """The log level of a command that loads no settings (simulate, demo): the flags, else
    ``IOTAD_LOG__LEVEL`` (as for run and record), else `default`."""
    environ = os.environ if environ is None else environ
    level = log_level_flag(args) or environ.get("IOTAD_LOG__LEVEL", "").strip().upper()
    return level if level in LOG_LEVELS else default


def format_without_settings(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> str:
    """The log format of a command that loads no settings: ``--log-format``, else
    ``IOTAD_LOG__FORMAT``, else text."""
    environ = os.environ if environ is None else environ
    fmt = getattr(args, "log_format", None) or environ.get("IOTAD_LOG__FORMAT", "").strip().lower()
    return fmt if fmt in ("text", "json") else "text"


def add_settings_file_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """``--config`` (a TOML settings file) and ``--env-file`` (a dotenv file)."""
    add = parser.add_argument
    add(
        "--config",
        metavar="FILE",
        help="TOML settings file (else IOTAD_CONFIG); below flags, environment, .env and "
        "secrets directory, above the defaults",
    )
    add("--env-file", default=".env", metavar="FILE", help="dotenv file to read (default .env)")


# -- deprecated names --------------------------------------------------------------------------


class DeprecatedAlias(argparse.Action):
    """A hidden old name of the flag `target`: it sets what the new name sets, and says once
    on stderr that it is deprecated."""

    def __init__(self, option_strings: list[str], dest: str, *, target: argparse.Action) -> None:
        super().__init__(
            option_strings,
            dest=target.dest,
            nargs=target.nargs,
            const=target.const,
            default=argparse.SUPPRESS,  # the target's default stands
            # typeshed: Action.type may hold a registered type name, which __init__ omits.
            type=target.type,  # type: ignore[arg-type]
            choices=target.choices,
            help=argparse.SUPPRESS,
            metavar=target.metavar,
        )
        self.target = target

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        said: set[str] = namespace.__dict__.setdefault("_deprecations_said", set())
        if option_string not in said:
            said.add(option_string or "")
            new = self.target.option_strings[0]
            print(
                f"{parser.prog}: {option_string} is deprecated, use {new} "
                f"(the old name goes in {REMOVED_IN})",
                file=sys.stderr,
            )
        self.target(parser, namespace, values, self.target.option_strings[0])


def add_alias(parser: argparse.ArgumentParser | Any, old: str, target: argparse.Action) -> None:
    """Keep `old` working as a deprecated alias of the flag `target` (what `add_argument`
    returned for the new name)."""
    parser.add_argument(old, action=DeprecatedAlias, target=target)


def deprecated_env(
    new: str, old: str, *, prog: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """The value of variable `new`, else of its deprecated old name `old` (saying so once on
    stderr); None when neither is set."""
    environ = os.environ if environ is None else environ
    value = environ.get(new)
    if value:
        return value
    value = environ.get(old)
    if value:
        from detector.worker.log_setup import stderr_line  # a JSON record when logging is JSON

        stderr_line(
            prog,
            f"environment variable {old} is deprecated, use {new} "
            f"(the old name goes in {REMOVED_IN})",
            level=logging.WARNING,
        )
        return value
    return None
