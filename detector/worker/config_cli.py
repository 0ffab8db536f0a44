"""`iotad config`: the worker's settings in effect, secrets masked, as TOML or JSON.

The settings are built as `iotad run` builds them (environment, ``.env``, secrets directory,
the TOML file, defaults; `detector.config.settings.load_settings`), without requiring a model. The
TOML output is a settings file: save it, edit it, hand it to ``iotad run --config``.

Cheap to import, like every subcommand module.
"""

from __future__ import annotations

import argparse
import sys

from detector.worker.cli_flags import add_settings_file_arguments

EXIT_OK, EXIT_USAGE = 0, 2

EPILOG = """\
Secrets (passwords, tokens, a password in a URL) are never printed: the TOML form shows them
as comments ("secret: set, not shown"), the JSON form as "**********" (null when unset).
Settings that are not set are comments in TOML and null in JSON.

examples:
  iotad config                                 # what `iotad run` would use here
  iotad config --config plant.toml > effective.toml
  IOTAD_MQTT__HOST=broker iotad config --format json"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `iotad config`."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--format", choices=("toml", "json"), default="toml", help="output format (toml)"
    )
    add_settings_file_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from detector.config.config_file import config_path
    from detector.config.settings import SettingsError, load_settings
    from detector.config.settings_dump import to_json, to_toml
    from detector.worker.env_warnings import unknown_env_warnings

    config = config_path(args.config)
    try:
        settings = load_settings(
            env_file=args.env_file or None, config_file=config, require_model=False
        )
    except SettingsError as exc:
        for line in exc.lines:
            print(f"iotad config: {line}", file=sys.stderr)
        return EXIT_USAGE
    for line in unknown_env_warnings():
        print(f"iotad config: {line}", file=sys.stderr)
    if args.format == "json":
        sys.stdout.write(to_json(settings))
        return EXIT_OK
    sources = ["environment", f".env ({args.env_file})" if args.env_file else None]
    sources += ["secrets directory", f"{config}" if config else None, "defaults"]
    header = (
        "iotad settings in effect, from: " + ", ".join(s for s in sources if s) + ".\n"
        "Secrets are not shown. Load it with: iotad run --config FILE"
    )
    sys.stdout.write(to_toml(settings, header))
    return EXIT_OK
