"""`iotad simulate`: publish the simulated factory to an MQTT broker, or write its history.

The edge around `detector.sim.simulation`: CSV and ground-truth files, and the command line. The
publisher itself (pacing, bounded in-flight MQTT publishing) is `detector.sim.simulate_publish`;
its names are re-exported here, so ``from detector.sim.simulate_cli import run_publisher`` works.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from detector.sim.plant_config import SHAPES
from detector.sim.simulate_publish import (
    MAX_PENDING_LIMIT,
    PublishError,
    PublishSettings,
    PublishStats,
    run_publisher,
)
from detector.sim.simulation import (
    FAULT_KINDS,
    LEGACY_KINDS,
    METRICS,
    SHIFT_SCHEDULES,
    FactoryConfig,
    Fault,
    FaultSpec,
    History,
    device_names,
    generate_history,
)
from detector.worker.cli_flags import (
    add_alias,
    add_log_arguments,
    deprecated_env,
    format_without_settings,
    level_without_settings,
    parse_duration,
)
from detector.worker.log_setup import configure_logging, json_logging, stderr_line
from detector.worker.mqtt_flags import (
    PASSWORD_ENV,
    PasswordFileError,
    add_mqtt_arguments,
    read_password_file,
)

# The publisher's names are re-exported: callers and tests import them from here.
__all__ = [
    "MAX_PENDING_LIMIT",
    "PASSWORD_ENV",
    "PublishError",
    "PublishSettings",
    "PublishStats",
    "add_arguments",
    "main",
    "parse_duration",
    "parse_fault",
    "parse_ts",
    "run_publisher",
    "truth_document",
    "write_csv",
    "write_truth",
]

OLD_PASSWORD_ENV = "IOTAD_SIM_PASSWORD"
"""The password variable of `iotad simulate` until this release (deprecated)."""


# -- files ------------------------------------------------------------------------------------


def _fmt_ts(ts: float) -> str:
    return str(int(ts)) if ts == int(ts) else f"{ts:.3f}"


def write_csv(history: History, out: IO[str]) -> int:
    """Write `history` as long-format CSV ``ts,device,metric,value``; return the row count."""
    out.write("ts,device,metric,value\n")
    rows = zip(history.ts, history.device, history.metric, history.value, strict=True)
    out.writelines(f"{_fmt_ts(ts)},{d},{m},{v:.6g}\n" for ts, d, m, v in rows)
    return len(history)


def truth_document(
    faults: Sequence[Fault], config: FactoryConfig, start_ts: float, last_ts: float | None
) -> dict[str, Any]:
    """The ground-truth JSON: the run's time range and plant, and one object per fault."""
    return {
        "start_ts": start_ts,
        "last_ts": last_ts,
        "interval_s": config.interval_s,
        "seed": config.seed,
        "devices": device_names(config.n_devices, config.machines_per_line),
        "metrics": list(config.metrics),
        "faults": [f.to_dict() for f in faults],
    }


def write_truth(path: str, document: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(document, fh, indent=1)
        fh.write("\n")


# -- command line ---------------------------------------------------------------------------


SHIFTS_HELP = "24/7; 3: Mon 06:00-Sat 06:00; 2: weekdays 06-22; 1: weekdays 06-14 (2)"
FAULT_HELP = f"inject a fault (repeatable); KIND: {', '.join(FAULT_KINDS)}"
PAYLOAD_HELP = 'json: DEV/METRIC {"ts","value"}; bare: the number; batch: DEV {"ts","values"}'
EPILOG = """\
Publishes sensors/DEVICE/METRIC until --duration (wall time), --days (simulated) or
--max-readings, or writes history with --csv (--duration/--days of simulated time,
default 1 day at --interval-s 60). Publishing defaults to --interval-s 1 in real time.
The password is read from --password-file, else IOTAD_MQTT__PASSWORD.

examples:
  iotad simulate --host broker --duration 10m --fault line1-press01:current:spike@60
  iotad simulate --csv week.csv --days 7 --interval-s 120 --fault-rate 0.2 --truth t.json
"""


def parse_fault(text: str) -> FaultSpec:
    """``device:metric:kind@offset[:duration[:magnitude]]``, e.g.
    ``line1-press01:temperature:level_shift@2h:30m:5`` (offset from the start; ``*`` as the
    metric of a ``silent`` fault)."""
    try:
        head, _, tail = text.partition("@")
        device, metric, kind = head.split(":")
        parts = tail.split(":")
        if kind not in FAULT_KINDS or not 1 <= len(parts) <= 3:
            raise ValueError
        duration = parse_duration(parts[1]) if len(parts) > 1 and parts[1] else None
        magnitude = float(parts[2]) if len(parts) > 2 else None
        return FaultSpec(device, metric, kind, parse_duration(parts[0]), duration, magnitude)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad fault {text!r}: want device:metric:kind@offset[:duration[:magnitude]] "
            f"with kind one of {', '.join(FAULT_KINDS)}"
        ) from None


def parse_ts(text: str) -> float:
    """Epoch seconds, or an ISO 8601 time (UTC when it has no offset)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad time {text!r}: epoch seconds or ISO 8601") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _csv_list(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        if not items or set(items) - set(choices):
            raise argparse.ArgumentTypeError(f"want a comma list of {', '.join(choices)}")
        return items

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `iotad simulate` flags."""
    g = parser.add_argument_group("factory")
    g.add_argument("--devices", type=int, default=6, help="number of machines (6)")
    g.add_argument("--metrics", type=_csv_list(METRICS), default=METRICS, help="comma list")
    g.add_argument("--shifts", choices=SHIFT_SCHEDULES, default="2", help=SHIFTS_HELP)
    g.add_argument("--seed", type=int, default=0, help="random seed (0)")
    g.add_argument(
        "--shape",
        choices=list(SHAPES),
        help="a fleet of the factory benchmark (its machines, schedules, ramps, maintenance "
        "stops and idling) instead of --devices/--shifts",
    )
    g.add_argument("--interval-s", type=float, help="simulated s between readings of a series")
    g = parser.add_argument_group("time")
    g.add_argument("--start", type=parse_ts, help="first ts: epoch s or ISO 8601 (default now)")
    g.add_argument("--speed", type=float, help="simulated s per wall s; 0: unpaced (1)")
    g.add_argument("--rate", type=float, help="readings per wall second, all series together")
    duration = g.add_argument(
        "--duration",
        type=parse_duration,
        metavar="DURATION",
        help="stop after this long: seconds, or with a unit (90, 15m, 2h)",
    )
    add_alias(g, "--duration-s", duration)
    g.add_argument("--days", type=float, help="stop after this many simulated days")
    g.add_argument("--max-readings", type=int, help="stop after this many readings")
    g.add_argument(
        "--backfill",
        type=parse_duration,
        default=0.0,
        metavar="DURATION",
        help="first publish this much history before the start at once (e.g. 1m): "
        "detectors listening start with full windows",
    )
    g = parser.add_argument_group("faults")
    g.add_argument(
        "--fault",
        dest="faults",
        type=parse_fault,
        action="append",
        default=[],
        metavar="DEV:METRIC:KIND@OFFSET[:DURATION[:MAGNITUDE]]",
        help=FAULT_HELP,
    )
    g.add_argument("--fault-rate", type=float, default=0.0, help="random faults per sim. hour")
    g.add_argument(
        "--fault-kinds",
        type=_csv_list(FAULT_KINDS),
        default=LEGACY_KINDS,
        help=f"random faults' kinds (default: {','.join(LEGACY_KINDS)})",
    )
    g.add_argument("--truth", metavar="FILE", help="write the injected faults as JSON")
    g = parser.add_argument_group("output")
    g.add_argument("--csv", metavar="FILE", help="write history as CSV, no broker (- = stdout)")
    add_log_arguments(g, quiet_help="print nothing but warnings and errors", default_level="INFO")
    g = parser.add_argument_group("MQTT")
    tls_files = add_mqtt_arguments(
        g,
        subscribe=False,
        client_id_help="MQTT client id (default: one the broker assigns)",
        settings=False,
    )
    # The names of this command until this release.
    add_alias(g, "--cafile", tls_files["--ca-file"])
    add_alias(g, "--certfile", tls_files["--cert-file"])
    add_alias(g, "--keyfile", tls_files["--key-file"])
    g.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    g.add_argument("--topic-prefix", default="sensors")
    g.add_argument(
        "--payload", choices=("json", "bare", "batch"), default="json", help=PAYLOAD_HELP
    )
    g.add_argument("--max-pending", type=int, default=1_000, help="unconfirmed messages cap")
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _factory(args: argparse.Namespace, interval_s: float) -> FactoryConfig:
    if args.shape:
        return dataclasses.replace(
            SHAPES[args.shape].config(args.seed, interval_s),
            metrics=tuple(args.metrics),
            fault_rate_per_h=args.fault_rate,
            fault_kinds=tuple(args.fault_kinds),
        )
    return FactoryConfig(
        n_devices=args.devices,
        metrics=tuple(args.metrics),
        shifts=args.shifts,
        interval_s=interval_s,
        seed=args.seed,
        fault_rate_per_h=args.fault_rate,
        fault_kinds=tuple(args.fault_kinds),
    )


def _main_csv(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    interval_s = args.interval_s or 60.0
    duration_s = args.days * 86_400 if args.days is not None else args.duration
    if duration_s is None and args.max_readings is None:
        duration_s = 86_400.0
    if args.start is not None:
        start_ts = args.start
    else:
        # End now, on the sampling grid, so the history joins up with a live run.
        start_ts = math.floor(time.time() / interval_s) * interval_s - (duration_s or 0.0)
    config = _factory(args, interval_s)
    history = generate_history(
        config,
        start_ts=start_ts,
        duration_s=duration_s,
        n_readings=args.max_readings,
        faults=args.faults,
    )
    if args.csv == "-":
        write_csv(history, sys.stdout)
    else:
        with open(args.csv, "w", encoding="utf-8", newline="") as fh:
            write_csv(history, fh)
    for fault in history.faults:
        say(fault.line())
    say(f"wrote {len(history)} readings to {args.csv}")
    if args.truth:
        last_ts = float(history.ts[-1]) if len(history) else None
        write_truth(args.truth, truth_document(history.faults, config, start_ts, last_ts))
    return 0


def _password(args: argparse.Namespace) -> str | None:
    """``--password-file``, else ``IOTAD_MQTT__PASSWORD`` (as `iotad run`), else the
    deprecated ``IOTAD_SIM_PASSWORD``."""
    if args.password_file:
        return read_password_file(args.password_file)
    return deprecated_env(PASSWORD_ENV, OLD_PASSWORD_ENV, prog="iotad simulate")


def _main_publish(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    if args.rate is not None and args.speed is not None:
        stderr_line("iotad simulate", "give --rate or --speed, not both")
        return 2
    n_devices = SHAPES[args.shape].n_devices if args.shape else args.devices
    n_series = n_devices * len(args.metrics)
    interval_s = args.interval_s or (n_series / args.rate if args.rate else 1.0)
    tls = bool(args.tls or args.ca_file or args.cert_file)
    settings = PublishSettings(
        factory=_factory(args, interval_s),
        faults=tuple(args.faults),
        host=args.host or "localhost",
        port=args.port or (8883 if tls else 1883),
        username=args.username,
        password=_password(args),
        client_id=args.client_id or "",
        mqtt_version=args.mqtt_version or "5",
        qos=args.qos,
        tls=tls,
        cafile=args.ca_file,
        certfile=args.cert_file,
        keyfile=args.key_file,
        topic_prefix=args.topic_prefix,
        payload=args.payload,
        speed=1.0 if args.speed is None else args.speed,
        rate=args.rate,
        start_ts=args.start,
        backfill_s=args.backfill,
        duration_s=args.duration,
        sim_duration_s=args.days * 86_400 if args.days is not None else None,
        max_readings=args.max_readings,
        max_pending=args.max_pending,
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    def progress(s: PublishStats) -> None:
        if not args.quiet:
            _note(
                f"sent {s.readings} readings in {s.messages} messages ({s.readings_per_s:.0f}/s), "
                f"confirmed {s.acked}, pending {s.pending}, faults {len(s.faults)}"
            )

    def on_fault(fault: Fault) -> None:
        say(fault.line())

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stats = run_publisher(settings, stop, on_fault=on_fault, on_progress=progress)
    except PublishError as exc:
        stderr_line("iotad simulate", str(exc))
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    progress(stats)
    if args.truth:
        doc = truth_document(stats.faults, settings.factory, stats.first_ts or 0.0, stats.last_ts)
        write_truth(args.truth, doc)
    return 0 if stats.failed == 0 and stats.pending == 0 else 1


def main(args: argparse.Namespace) -> int:
    """Run `iotad simulate`: publish to a broker, or write a CSV history with ``--csv``."""
    configure_logging(level_without_settings(args, "INFO"), format_without_settings(args))

    def say(line: str) -> None:
        # Fault lines go to stdout, unless the CSV itself does.
        if args.quiet:
            return
        if args.csv == "-":
            _note(line)
        else:
            print(line, flush=True)

    try:
        if args.csv:
            return _main_csv(args, say)
        return _main_publish(args, say)
    except (ValueError, OSError, PasswordFileError) as exc:
        stderr_line("iotad simulate", str(exc))
        return 2


def _note(line: str) -> None:
    """A progress line on stderr: as it is, or an INFO record when logging is JSON."""
    if json_logging():
        logging.getLogger("iotad.simulate").info("%s", line)
    else:
        print(line, file=sys.stderr, flush=True)
