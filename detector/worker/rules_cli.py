"""`iotad rules check FILE` and `iotad rules explain DEVICE METRIC [--at TIME]`.

``check`` validates a rules file the way the worker does at start and on reload: exit 0 and
a summary line, or exit 1 and one line per problem. ``explain`` prints the effective rule of
one series: which rules match, the resulting threshold, mute, maintenance windows (and
whether `--at` falls in one), severity and labels, each with the rule that set it.

Cheap to import: the rules modules load when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from detector.worker.cli_flags import add_settings_file_arguments

if TYPE_CHECKING:
    from detector.engine.rules import RuleSet, SeriesPolicy

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check",
        help="validate a rules file (exit 1 with one line per problem)",
        description="Validate a rules file as the worker does at start and on reload.",
    )
    check.add_argument("file", type=Path, help="the rules file (TOML)")
    explain = sub.add_parser(
        "explain",
        help="the effective rule of one series",
        description="Print which rules match DEVICE/METRIC and what they set: threshold, "
        "mute, maintenance windows, severity, labels.",
    )
    explain.add_argument("device")
    explain.add_argument("metric")
    explain.add_argument(
        "--at",
        metavar="ISO_TIME",
        help="also say whether this time (ISO 8601 with offset; naive = UTC) is in a "
        "maintenance window",
    )
    explain.add_argument(
        "--file", type=Path, help="the rules file (default: IOTAD_RULES__PATH, or .env)"
    )
    add_settings_file_arguments(explain)


def main(args: argparse.Namespace) -> int:
    if args.rules_command == "check":
        return check(args.file, sys.stdout, sys.stderr)
    return explain(args, sys.stdout, sys.stderr)


def check(path: Path, out: TextIO, err: TextIO) -> int:
    from detector.worker.rules_file import RulesError, load_rules

    try:
        rules = load_rules(path)
    except RulesError as exc:
        for line in exc.lines:
            print(line, file=err)
        return EXIT_INVALID
    windows = sum(len(r.maintenance) for r in rules.rules)
    print(f"{path}: ok, {len(rules)} rules, {windows} maintenance windows", file=out)
    return EXIT_OK


def explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from detector.config.config_file import config_path
    from detector.config.settings import SettingsError, load_settings
    from detector.engine.readings import valid_name
    from detector.worker.rules_file import RulesError, load_rules

    for what, name in (("device", args.device), ("metric", args.metric)):
        if not valid_name(name):
            print(f"iotad rules explain: {what} {name!r} is not a valid name", file=err)
            return EXIT_USAGE
    at: float | None = None
    if args.at is not None:
        try:
            moment = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
        except ValueError:
            print(f"iotad rules explain: --at {args.at!r} is not an ISO datetime", file=err)
            return EXIT_USAGE
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        at = moment.timestamp()
    try:
        settings = load_settings(
            env_file=args.env_file or None,
            config_file=config_path(args.config),
            require_model=False,
        )
    except SettingsError as exc:
        for line in exc.lines:
            print(f"iotad rules explain: {line}", file=err)
        return EXIT_USAGE
    path = args.file or settings.rules.path
    if path is None:
        print("iotad rules explain: no rules file (--file or IOTAD_RULES__PATH)", file=err)
        return EXIT_USAGE
    try:
        rules = load_rules(path)
    except RulesError as exc:
        for line in exc.lines:
            print(line, file=err)
        return EXIT_INVALID
    policy = rules.policy(args.device, args.metric)
    lines = describe(rules, policy, args.device, args.metric, settings.detection.threshold, at)
    print("\n".join(lines), file=out)
    return EXIT_OK


def describe(
    rules: RuleSet,
    policy: SeriesPolicy,
    device: str,
    metric: str,
    default_threshold: float,
    at: float | None = None,
) -> list[str]:
    """The lines `explain` prints."""
    from detector.engine.rule_windows import WindowSet

    def by(field: str) -> str:
        i = policy.sources.get(field)
        return "" if i is None else f" (set by {rules.rules[i].title(i + 1)})"

    lines = [f"series {device}/{metric}: {len(rules)} rules in {rules.source or 'the file'}"]
    if not policy.matched:
        lines.append("matching rules: none (the worker's settings apply)")
    else:
        lines.append("matching rules, in file order (later ones override earlier ones):")
        for i in policy.matched:
            rule = rules.rules[i]
            lines.append(f"  {rule.title(i + 1)}: device {rule.device!r}, metric {rule.metric!r}")
    if policy.threshold is None:
        lines.append(f"threshold: {default_threshold:g} (IOTAD_DETECTION__THRESHOLD)")
    else:
        lines.append(
            f"threshold: {policy.threshold:g}{by('threshold')}; "
            f"IOTAD_DETECTION__THRESHOLD is {default_threshold:g}"
        )
    lines.append(f"mute: {'yes' if policy.mute else 'no'}{by('mute')}")
    lines.append(f"severity: {policy.severity or '(the sink default)'}{by('severity')}")
    if policy.labels:
        lines.append("labels:")
        lines.extend(f"  {k}={v}{by('labels.' + k)}" for k, v in sorted(policy.labels.items()))
    else:
        lines.append("labels: none")
    if policy.windows:
        lines.append("maintenance windows:")
        lines.extend(
            f"  {w.describe()} (from {rules.rules[i].title(i + 1)})" for i, w in policy.windows
        )
    else:
        lines.append("maintenance windows: none")
    if at is not None:
        when = datetime.fromtimestamp(at, UTC).isoformat()
        inside = WindowSet(w for _, w in policy.windows).active_at(at)
        if policy.mute:
            lines.append(f"at {when}: muted: scored and counted, no alert")
        elif inside:
            names = "; ".join(w.describe() for w in inside)
            lines.append(f"at {when}: in maintenance ({names}): scored and counted, no alert")
        else:
            lines.append(f"at {when}: alerts on (no maintenance window)")
    return lines
