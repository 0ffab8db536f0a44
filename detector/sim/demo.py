"""`iotad demo`: broker, simulated factory, worker, metrics and alerts on this machine at once.

What runs, in start order, and is stopped in reverse at the end (Ctrl-C, SIGTERM or
``--duration``):

1. a broker of its own (`detector.sim.demo_broker`): mosquitto on a free loopback port when it
   is installed, else amqtt in-process (MQTT 3.1.1, so everything then speaks 3.1.1);
2. a model: ``--model DIR``, or a small LSTM trained once on simulated history in a child
   process and cached (`detector.sim.demo_model`);
3. the worker (`detector.worker.run_cli.serve`) in a thread of this process, with /metrics on
   127.0.0.1:9108 (or a free port);
4. a subscriber to ``alerts/#`` that prints each alert as the worker publishes it;
5. the simulated factory (`detector.sim.simulate_publish.run_publisher`) in a thread, with a
   few faults injected early on, whose ground truth the summary checks the alerts against.

Cheap to import (the CLI imports every subcommand): paho, pydantic and prometheus_client
are imported when the command runs.
"""

from __future__ import annotations

import os

# Before numpy is imported anywhere: see run_cli (small matmuls were erratic with 2 threads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from detector.sim.demo_broker import BROKER_CHOICES
from detector.sim.demo_console import Console
from detector.sim.demo_model import DemoPlant, default_cache_dir
from detector.sim.simulate_cli import parse_fault
from detector.sim.simulation import METRICS, FaultSpec, device_names
from detector.worker.cli_flags import (
    add_log_arguments,
    format_without_settings,
    level_without_settings,
    parse_duration,
)

DEFAULT_METRICS_PORT = 9108
# Random faults the worker is meant to catch; `stuck` and `silent` are no forecast error
# (a frozen or absent sensor needs a staleness rule, which the worker does not have).
DEMO_FAULT_KINDS = ("spike", "level_shift", "drift", "noise_burst")

EPILOG = """\
Runs until Ctrl-C (or --duration). Everything it starts is stopped at the end: the broker
(never the system one: its own on a free port), the worker and the simulator. The trained
demo model is kept in the cache dir and reused by the next run.

examples:
  iotad demo
  iotad demo --duration 60 --fault-rate 30
  iotad demo --broker embedded --devices 3 --fault line1-press01:pressure:drift@10:30:1.5
  iotad demo --model models/20240105T120000Z-ab12cd34
"""


def default_faults(devices: int) -> list[FaultSpec]:
    """Two faults early in the run: a current spike, then a temperature level shift.

    Sizes are explicit and plainly faults (many residual sigmas, and beyond the range the
    model was trained on): a level shift of the simulator's default size (3-6 °C) scored
    0.43 against the 0.5 threshold on a recent demo model, a miss the demo is not meant
    to show on its first run.
    """
    names = device_names(devices)
    return [
        FaultSpec(names[1 % devices], "current", "spike", offset_s=12.0, magnitude=25.0),
        FaultSpec(names[0], "temperature", "level_shift", 20.0, duration_s=15.0, magnitude=10.0),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `iotad demo` flags."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add = parser.add_argument
    add(
        "--duration",
        type=parse_duration,
        metavar="DURATION",
        help="stop after this long: seconds, or with a unit (30, 2m; default: until Ctrl-C)",
    )
    add("--model", type=Path, metavar="DIR", help="model artifact to use (default: demo model)")
    add("--devices", type=int, default=6, help="simulated machines, 4 sensors each (6)")
    add("--interval-s", type=float, default=1.0, help="seconds between readings (1)")
    add("--broker", choices=BROKER_CHOICES, default="auto", help="auto: mosquitto if installed")
    add("--metrics-port", type=int, help=f"port of /metrics ({DEFAULT_METRICS_PORT} if free)")
    add("--seed", type=int, default=0, help="random seed of the simulated plant (0)")
    add(
        "--fault",
        dest="faults",
        type=parse_fault,
        action="append",
        metavar="DEV:METRIC:KIND@OFFSET[:DURATION[:MAGNITUDE]]",
        help="inject this fault instead of the default two (repeatable); see iotad simulate",
    )
    add("--no-faults", action="store_true", help="inject no scheduled fault")
    add("--fault-rate", type=float, default=0.0, help="random faults per hour (0)")
    add("--report-s", type=float, default=5.0, help="seconds between status lines (5)")
    add("--cache-dir", type=Path, help=f"where the demo model is kept ({default_cache_dir()})")
    add_log_arguments(
        parser,
        quiet_help="print only the summary (and errors)",
        default_level="WARNING: the console shows the rest",
    )


def _check(args: argparse.Namespace) -> str | None:
    """The first invalid flag, as a message; None when all are fine."""
    checks = [
        (args.devices >= 1, "--devices must be at least 1"),
        (args.interval_s > 0, "--interval-s must be positive"),
        (args.duration is None or args.duration > 0, "--duration must be positive"),
        (args.fault_rate >= 0, "--fault-rate must not be negative"),
        (args.report_s > 0, "--report-s must be positive"),
        (
            args.metrics_port is None or 0 <= args.metrics_port <= 65535,
            "--metrics-port must be 0..65535",
        ),
    ]
    for ok, message in checks:
        if not ok:
            return message
    names = device_names(args.devices)
    for spec in args.faults or ():
        if spec.device not in names:
            return f"--fault: no device {spec.device!r}; devices: {', '.join(names)}"
        if spec.metric not in METRICS and not (spec.kind == "silent" and spec.metric == "*"):
            return f"--fault: no metric {spec.metric!r}; metrics: {', '.join(METRICS)}"
    return None


def main(args: argparse.Namespace) -> int:
    """Run `iotad demo`; 0 after a clean stop (Ctrl-C, SIGTERM or --duration)."""
    problem = _check(args)
    if problem:
        print(f"iotad demo: {problem}", file=sys.stderr)
        return 2
    from detector.sim.demo_run import DemoRun, DemoSettings
    from detector.worker.log_setup import configure_logging

    # WARNING: the console shows what matters, the worker's INFO lines would repeat it.
    configure_logging(level_without_settings(args, "WARNING"), format_without_settings(args))
    stop = threading.Event()
    console = Console(quiet=args.quiet)

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            console.line(f"{signal.Signals(signum).name}: stopping ...", always=True)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    faults = [] if args.no_faults else list(args.faults or default_faults(args.devices))
    settings = DemoSettings(
        plant=DemoPlant(args.devices, args.interval_s, args.seed),
        faults=faults,
        fault_rate_per_h=args.fault_rate,
        fault_kinds=DEMO_FAULT_KINDS,
        broker=args.broker,
        model=args.model,
        cache_dir=args.cache_dir or default_cache_dir(),
        metrics_port=args.metrics_port,
        default_metrics_port=DEFAULT_METRICS_PORT,
        duration_s=args.duration,
        report_s=args.report_s,
    )
    try:
        return DemoRun(settings, console, stop).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
