"""Publishing the simulated factory to an MQTT broker, paced against the wall clock.

`run_publisher(settings, stop_event)` runs `detector.sim.simulation.FactorySimulator` and publishes
every tick with bounded in-flight messages. Safe in a thread (it installs no signal handlers):
`iotad simulate` calls it from `main`, `iotad demo` from a thread of its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from detector.sim.simulation import FactoryConfig, FactorySimulator, Fault, FaultSpec

__all__ = [
    "MAX_PENDING_LIMIT",
    "PublishError",
    "PublishSettings",
    "PublishStats",
    "run_publisher",
]

# paho numbers outstanding messages with 16-bit ids and stalls past 65,535 of them
# (docs/architecture.md), so the publisher never lets more than this many be unconfirmed.
MAX_PENDING_LIMIT = 60_000


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

    `backfill_s` of simulated history before `start_ts` is published at once, unpaced, ahead
    of the paced run: a detector listening has full windows when the paced part begins.
    Fault offsets still count from `start_ts`.
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
    backfill_s: float = 0.0
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
        if self.backfill_s < 0:
            raise ValueError("backfill_s must be >= 0")


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
    interval_s = settings.factory.interval_s
    # Backfill ticks are numbered below zero: the simulator starts that much earlier, and
    # the faults move with it so that their offsets still count from `start_ts`.
    backfill = math.ceil(settings.backfill_s / interval_s - 1e-9)
    sim_start_ts = start_ts - backfill * interval_s
    faults = [replace(f, offset_s=f.offset_s + backfill * interval_s) for f in settings.faults]
    sim = FactorySimulator(settings.factory, sim_start_ts, faults)
    n_series = len(sim.devices) * len(sim.metrics)
    if settings.rate:
        period_s = n_series / settings.rate
    else:
        period_s = interval_s / settings.speed if settings.speed > 0 else 0.0
    cap = settings.max_pending
    if settings.qos > 0 and state["receive_max"]:
        cap = min(cap, state["receive_max"])
    stats = PublishStats(first_ts=sim_start_ts)
    wall0 = time.monotonic()
    next_progress = wall0 + settings.progress_s
    tick = -backfill
    try:
        while not stop_event.is_set():
            ts = start_ts + tick * interval_s
            due = wall0 + max(tick, 0) * period_s
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
