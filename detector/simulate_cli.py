"""`iotad simulate`: publish the simulated factory to an MQTT broker, or write its history.

The edge around `detector.simulation`: pacing against the wall clock, MQTT publishing with
bounded in-flight messages, CSV and ground-truth files, and the command line. A demo runner
calls `run_publisher(settings, stop_event)` in a thread; the command calls it from `main`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any

from detector.simulation import (
    FAULT_KINDS,
    METRICS,
    SHIFT_SCHEDULES,
    FactoryConfig,
    FactorySimulator,
    Fault,
    FaultSpec,
    History,
    device_names,
    generate_history,
)

PASSWORD_ENV = "IOTAD_SIM_PASSWORD"
# paho numbers outstanding messages with 16-bit ids and stalls past 65,535 of them
# (docs/architecture.md), so the publisher never lets more than this many be unconfirmed.
MAX_PENDING_LIMIT = 60_000
_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0}


class PublishError(RuntimeError):
    """The publisher could not connect or the broker refused it."""


@dataclass
class PublishSettings:
    """Everything `run_publisher` needs. Times in seconds; `speed` 0 means unpaced.

    Pacing: one tick publishes every series once; ticks are ``factory.interval_s``
    simulated seconds apart and ``interval_s / speed`` wall seconds apart, or
    ``n_series / rate`` when `rate` (readings per second overall) is set. Timestamps start
    at `start_ts`, or now when None. The run stops at `stop_event`, after `duration_s` of
    wall time, `sim_duration_s` of simulated time or `max_readings` readings.
    """

    factory: FactoryConfig = field(default_factory=lambda: FactoryConfig(interval_s=1.0))
    faults: tuple[FaultSpec, ...] = ()
    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = ""
    mqtt_version: str = "5"  # or "3.1.1"
    qos: int = 1
    tls: bool = False
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    topic_prefix: str = "sensors"
    payload: str = "json"  # json: {"ts", "value"}; bare: the number; batch: one per device
    speed: float = 1.0
    rate: float | None = None
    start_ts: float | None = None
    duration_s: float | None = None
    sim_duration_s: float | None = None
    max_readings: int | None = None
    max_pending: int = 1_000
    connect_timeout_s: float = 10.0
    drain_timeout_s: float = 10.0
    progress_s: float = 5.0

    def __post_init__(self) -> None:
        if self.payload not in ("json", "bare", "batch") or self.qos not in (0, 1, 2):
            raise ValueError(f"bad payload {self.payload!r} or qos {self.qos}")
        if self.mqtt_version not in ("5", "3.1.1"):
            raise ValueError(f"mqtt_version must be '5' or '3.1.1', not {self.mqtt_version!r}")
        if not 0 < self.max_pending <= MAX_PENDING_LIMIT:
            raise ValueError(f"max_pending must be in 1..{MAX_PENDING_LIMIT}")
        if self.speed < 0 or (self.rate is not None and self.rate <= 0):
            raise ValueError("speed must be >= 0 and rate > 0")


@dataclass
class PublishStats:
    """What a publisher run did. `acked` counts messages the broker confirmed (QoS 1/2) or
    that were written to the socket (QoS 0); only those count as sent."""

    readings: int = 0
    messages: int = 0
    acked: int = 0
    failed: int = 0
    pending: int = 0
    max_pending: int = 0
    elapsed_s: float = 0.0
    first_ts: float | None = None
    last_ts: float | None = None
    faults: list[Fault] = field(default_factory=list)

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Outstanding:
    """Counts messages handed to paho and not yet confirmed; publishers wait on it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.pending = self.acked = self.failed = self.peak = 0

    def add(self) -> None:
        with self._cond:
            self.pending += 1
            self.peak = max(self.peak, self.pending)

    def done(self, ok: bool) -> None:
        with self._cond:
            self.pending -= 1
            if ok:
                self.acked += 1
            else:
                self.failed += 1
            self._cond.notify_all()

    def wait_at_most(self, cap: int, stop: threading.Event | None, timeout_s: float) -> bool:
        """Block until at most `cap` are pending; False on timeout or `stop`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.pending > cap:
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    return False
                self._cond.wait(min(left, 0.1))
        return True


def _make_client(settings: PublishSettings, outstanding: _Outstanding) -> tuple[Any, Any]:
    import paho.mqtt.client as mqtt  # here, so `iotad --help` does not pay for it

    v5 = settings.mqtt_version == "5"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    # No paho window: with one set, paho rescans all outstanding messages on every PUBACK
    # (measured 2-6x slower at 1,000-5,000 pending). `max_pending` bounds in-flight instead.
    client.max_inflight_messages_set(0)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls or settings.cafile or settings.certfile:
        client.tls_set(
            ca_certs=settings.cafile, certfile=settings.certfile, keyfile=settings.keyfile
        )
    state: dict[str, Any] = {"connected": threading.Event(), "refused": None, "receive_max": 0}

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            state["refused"] = str(reason)
        # MQTT v5 brokers say how many unacknowledged QoS 1/2 messages they accept.
        state["receive_max"] = getattr(props, "ReceiveMaximum", 0) or 0
        state["connected"].set()

    def on_publish(_c: Any, _u: Any, _mid: int, reason: Any, _props: Any) -> None:
        outstanding.done(not getattr(reason, "is_failure", False))

    client.on_connect = on_connect
    client.on_publish = on_publish
    return client, state


def _connect(settings: PublishSettings, client: Any, state: dict[str, Any]) -> None:
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except OSError as exc:
        raise PublishError(f"cannot connect to {settings.host}:{settings.port}: {exc}") from exc
    client.loop_start()
    if not state["connected"].wait(settings.connect_timeout_s) or state["refused"]:
        client.loop_stop()
        why = state["refused"] or f"no CONNACK in {settings.connect_timeout_s:g} s"
        raise PublishError(f"broker {settings.host}:{settings.port} refused: {why}")


def _messages(
    settings: PublishSettings, sim: FactorySimulator, ts: float
) -> list[tuple[str, str, int]]:
    """One tick's ``(topic, payload, readings)`` in the configured payload format."""
    values, present = sim.step_arrays(ts)
    prefix, out = settings.topic_prefix, []
    for d, device in enumerate(sim.devices):
        if not present[d]:
            continue
        row = values[d]
        # Hand-built JSON: a float's `.6g` is a valid JSON number, and json.dumps per
        # message would cost more than the simulation itself at high rates.
        if settings.payload == "batch":
            body = ",".join(f'"{m}":{v:.6g}' for m, v in zip(sim.metrics, row, strict=True))
            out.append((f"{prefix}/{device}", f'{{"ts":{ts:.3f},"values":{{{body}}}}}', len(row)))
        elif settings.payload == "bare":
            out += [
                (f"{prefix}/{device}/{m}", f"{v:.6g}", 1)
                for m, v in zip(sim.metrics, row, strict=True)
            ]
        else:
            out += [
                (f"{prefix}/{device}/{m}", f'{{"ts":{ts:.3f},"value":{v:.6g}}}', 1)
                for m, v in zip(sim.metrics, row, strict=True)
            ]
    return out


def run_publisher(
    settings: PublishSettings,
    stop_event: threading.Event,
    on_fault: Callable[[Fault], None] | None = None,
    on_progress: Callable[[PublishStats], None] | None = None,
) -> PublishStats:
    """Publish the simulated factory until a stop condition; return what was sent.

    Safe to run in a thread: it installs no signal handlers; set `stop_event` to stop.
    `on_fault` is called (from this thread) when an injected fault starts. Raises
    `PublishError` when the broker cannot be reached or refuses the connection.
    """
    outstanding = _Outstanding()
    client, state = _make_client(settings, outstanding)
    _connect(settings, client, state)
    start_ts = time.time() if settings.start_ts is None else settings.start_ts
    sim = FactorySimulator(settings.factory, start_ts, settings.faults)
    interval_s = settings.factory.interval_s
    n_series = len(sim.devices) * len(sim.metrics)
    if settings.rate:
        period_s = n_series / settings.rate
    else:
        period_s = interval_s / settings.speed if settings.speed > 0 else 0.0
    cap = settings.max_pending
    if settings.qos > 0 and state["receive_max"]:
        cap = min(cap, state["receive_max"])
    stats = PublishStats(first_ts=start_ts)
    wall0 = time.monotonic()
    next_progress = wall0 + settings.progress_s
    tick = 0
    try:
        while not stop_event.is_set():
            ts = start_ts + tick * interval_s
            due = wall0 + tick * period_s
            if _finished(settings, max(due, time.monotonic()) - wall0, ts - start_ts):
                break
            if due > time.monotonic() and stop_event.wait(due - time.monotonic()):
                break
            messages = _messages(settings, sim, ts)
            stats.last_ts = ts
            for fault in sim.truth[len(stats.faults) :]:
                stats.faults.append(fault)
                if on_fault is not None:
                    on_fault(fault)
            if not _send(client, settings, messages, outstanding, cap, stop_event, stats):
                break
            tick += 1
            if on_progress is not None and time.monotonic() >= next_progress:
                next_progress += settings.progress_s
                on_progress(_snapshot(stats, outstanding, wall0))
    finally:
        # Let the broker confirm what is in flight, then leave cleanly.
        outstanding.wait_at_most(0, None, settings.drain_timeout_s)
        client.disconnect()
        client.loop_stop()
    return _snapshot(stats, outstanding, wall0)


def _finished(settings: PublishSettings, wall_s: float, sim_s: float) -> bool:
    return (settings.duration_s is not None and wall_s >= settings.duration_s) or (
        settings.sim_duration_s is not None and sim_s >= settings.sim_duration_s
    )


def _send(
    client: Any,
    settings: PublishSettings,
    messages: list[tuple[str, str, int]],
    outstanding: _Outstanding,
    cap: int,
    stop_event: threading.Event,
    stats: PublishStats,
) -> bool:
    """Publish one tick's messages; False when the run is over (stopped, or enough sent)."""
    for topic, payload, n in messages:
        if settings.max_readings is not None and stats.readings >= settings.max_readings:
            return False
        # Backpressure: wait for confirmations rather than let paho's queue grow.
        while not outstanding.wait_at_most(cap - 1, stop_event, 1.0):
            if stop_event.is_set():
                return False
        outstanding.add()
        info = client.publish(topic, payload, qos=settings.qos)
        # QoS 0 while disconnected is dropped; QoS 1/2 stays queued for the reconnect.
        if info.rc != 0 and (settings.qos == 0 or info.rc != 4):  # 4: MQTT_ERR_NO_CONN
            outstanding.done(False)
        stats.messages += 1
        stats.readings += n
    return settings.max_readings is None or stats.readings < settings.max_readings


def _snapshot(stats: PublishStats, outstanding: _Outstanding, wall0: float) -> PublishStats:
    return replace(
        stats,
        acked=outstanding.acked,
        failed=outstanding.failed,
        pending=outstanding.pending,
        max_pending=outstanding.peak,
        elapsed_s=time.monotonic() - wall0,
        faults=list(stats.faults),
    )


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
Publishes sensors/DEVICE/METRIC until --duration-s (wall time), --days (simulated) or
--max-readings, or writes history with --csv (--duration-s/--days of simulated time,
default 1 day at --interval-s 60). Publishing defaults to --interval-s 1 in real time.

examples:
  iotad simulate --host broker --duration 10m --fault line1-press01:current:spike@60
  iotad simulate --csv week.csv --days 7 --interval-s 120 --fault-rate 0.2 --truth t.json
"""


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h`` or ``1.5d``."""
    text = text.strip()
    if text and text[-1] in _UNITS_S:
        return float(text[:-1]) * _UNITS_S[text[-1]]
    return float(text)


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
    g.add_argument("--interval-s", type=float, help="simulated s between readings of a series")
    g = parser.add_argument_group("time")
    g.add_argument("--start", type=parse_ts, help="first ts: epoch s or ISO 8601 (default now)")
    g.add_argument("--speed", type=float, help="simulated s per wall s; 0: unpaced (1)")
    g.add_argument("--rate", type=float, help="readings per wall second, all series together")
    g.add_argument("--duration-s", "--duration", type=parse_duration, help="e.g. 90, 15m, 2h")
    g.add_argument("--days", type=float, help="stop after this many simulated days")
    g.add_argument("--max-readings", type=int, help="stop after this many readings")
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
    g.add_argument("--fault-kinds", type=_csv_list(FAULT_KINDS), default=FAULT_KINDS)
    g.add_argument("--truth", metavar="FILE", help="write the injected faults as JSON")
    g = parser.add_argument_group("output")
    g.add_argument("--csv", metavar="FILE", help="write history as CSV, no broker (- = stdout)")
    g.add_argument("--quiet", action="store_true", help="print nothing but errors")
    g = parser.add_argument_group("MQTT")
    g.add_argument("--host", default="localhost")
    g.add_argument("--port", type=int, help="1883, or 8883 with TLS")
    g.add_argument("--username")
    g.add_argument("--password-file", help=f"file with the password (else ${PASSWORD_ENV})")
    g.add_argument("--client-id", default="")
    g.add_argument("--mqtt-version", choices=("5", "3.1.1"), default="5")
    g.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    g.add_argument("--tls", action="store_true", help="TLS with the system's CAs")
    g.add_argument("--cafile")
    g.add_argument("--certfile")
    g.add_argument("--keyfile")
    g.add_argument("--topic-prefix", default="sensors")
    g.add_argument(
        "--payload", choices=("json", "bare", "batch"), default="json", help=PAYLOAD_HELP
    )
    g.add_argument("--max-pending", type=int, default=1_000, help="unconfirmed messages cap")
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _factory(args: argparse.Namespace, interval_s: float) -> FactoryConfig:
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
    duration_s = args.days * 86_400 if args.days is not None else args.duration_s
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
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    return os.environ.get(PASSWORD_ENV)


def _main_publish(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    if args.rate is not None and args.speed is not None:
        print("iotad simulate: give --rate or --speed, not both", file=sys.stderr)
        return 2
    n_series = args.devices * len(args.metrics)
    interval_s = args.interval_s or (n_series / args.rate if args.rate else 1.0)
    tls = bool(args.tls or args.cafile or args.certfile)
    settings = PublishSettings(
        factory=_factory(args, interval_s),
        faults=tuple(args.faults),
        host=args.host,
        port=args.port or (8883 if tls else 1883),
        username=args.username,
        password=_password(args),
        client_id=args.client_id,
        mqtt_version=args.mqtt_version,
        qos=args.qos,
        tls=tls,
        cafile=args.cafile,
        certfile=args.certfile,
        keyfile=args.keyfile,
        topic_prefix=args.topic_prefix,
        payload=args.payload,
        speed=1.0 if args.speed is None else args.speed,
        rate=args.rate,
        start_ts=args.start,
        duration_s=args.duration_s,
        sim_duration_s=args.days * 86_400 if args.days is not None else None,
        max_readings=args.max_readings,
        max_pending=args.max_pending,
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    def progress(s: PublishStats) -> None:
        if not args.quiet:
            print(
                f"sent {s.readings} readings in {s.messages} messages ({s.readings_per_s:.0f}/s), "
                f"confirmed {s.acked}, pending {s.pending}, faults {len(s.faults)}",
                file=sys.stderr,
                flush=True,
            )

    def on_fault(fault: Fault) -> None:
        say(fault.line())

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stats = run_publisher(settings, stop, on_fault=on_fault, on_progress=progress)
    except PublishError as exc:
        print(f"iotad simulate: {exc}", file=sys.stderr)
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

    def say(line: str) -> None:
        # Fault lines go to stdout, unless the CSV itself does.
        if not args.quiet:
            print(line, file=sys.stderr if args.csv == "-" else sys.stdout, flush=True)

    try:
        if args.csv:
            return _main_csv(args, say)
        return _main_publish(args, say)
    except (ValueError, OSError) as exc:
        print(f"iotad simulate: {exc}", file=sys.stderr)
        return 2
