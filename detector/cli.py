"""The `iotad` command: one entry point, one module per subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``main(args) -> int`` and must
be cheap to import (TensorFlow is imported inside `main` of training commands only).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from detector import __version__

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("detector.worker.run_cli", "run the streaming worker: MQTT in, alerts and metrics out"),
    "record": (
        "detector.worker.record_cli",
        "record readings from MQTT into long-format history files",
    ),
    "train": ("training.cli", "train a forecaster on historical readings into a model artifact"),
    "eval": ("training.eval_cli", "detection quality (NAB, simulated factory) with the core"),
    "simulate": ("detector.sim.simulate_cli", "publish a simulated factory to a broker"),
    "demo": (
        "detector.sim.demo",
        "broker, simulated sensors, worker, metrics and alerts in one go",
    ),
    "rules": (
        "detector.worker.rules_cli",
        "check a rules file, explain the effective rule of a series",
    ),
    "config": (
        "detector.worker.config_cli",
        "print the worker's settings in effect (secrets masked)",
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse that never echoes what was given after an option it does not know, and
    takes no abbreviated option (its subcommands' parsers are of this class too).

    argparse's "unrecognized arguments: --password hunter2" would print a secret someone
    tried to pass on the command line; the option names are enough to say what was wrong.
    With abbreviations, ``--password hunter2`` was ``--password-file hunter2``, and the
    secret came back as a file name that cannot be read.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            names = [a.split("=", 1)[0] for a in message[len(prefix) :].split() if a[:1] == "-"]
            shown = " ".join(names) if names else "(values not shown)"
            message = f"{prefix}{shown} (a password comes from --password-file or the environment)"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="iotad", description="Streaming anomaly detection for industrial IoT sensors."
    )
    parser.add_argument("--version", action="version", version=f"iotad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # subcommand not built yet / not installed
            raise
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sp)
        sp.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
