"""The running demo: start the parts in order, report while they run, stop them in reverse.

`DemoRun(settings, console, stop).run()` is `iotad demo` once its flags are checked (see
`detector.sim.demo` for what runs). Every part it starts is stopped in `run`'s ``finally``,
whatever happened: a broker that failed to come up, a Ctrl-C during training, a worker
that died. The summary is printed after everything has stopped, so that what it says about
the broker and the threads is true.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from detector.sim.demo_broker import BrokerError, DemoBroker, port_is_free, start_broker
from detector.sim.demo_console import (
    AlertBook,
    AlertSeen,
    Console,
    RunTotals,
    fault_line,
    match_faults,
    status_line,
    summary_lines,
)
from detector.sim.demo_model import RECIPE, DemoPlant, Interrupted, ModelError, ensure_model
from detector.sim.demo_worker import WORKER_ID, AlertFeed, DemoWorker, worker_settings
from detector.sim.simulate_publish import PublishError, PublishSettings, PublishStats, run_publisher
from detector.sim.simulation import Fault, FaultSpec, device_names

HOST = "127.0.0.1"
DRAIN_S = 5.0
JOIN_S = 15.0


@dataclass
class DemoSettings:
    """What `iotad demo` was asked for (its flags, checked)."""

    plant: DemoPlant
    faults: list[FaultSpec]
    fault_rate_per_h: float
    fault_kinds: tuple[str, ...]
    broker: str
    model: Path | None
    cache_dir: Path
    metrics_port: int | None
    default_metrics_port: int
    duration_s: float | None
    report_s: float


@dataclass
class _Parts:
    """What has been started (None: not yet, or never)."""

    broker: DemoBroker | None = None
    broker_note: str = ""
    worker: DemoWorker | None = None
    feed: AlertFeed | None = None
    sim: threading.Thread | None = None
    sim_stats: PublishStats | None = None
    sim_error: str | None = None
    faults: list[Fault] = field(default_factory=list)


class DemoRun:
    """One run of the demo; `run` returns the exit code."""

    def __init__(self, settings: DemoSettings, console: Console, stop: threading.Event) -> None:
        self.s = settings
        self.console = console
        self.stop = stop
        self.parts = _Parts()
        self.alerts = AlertBook()
        self.sim_stop = threading.Event()
        self.model_path: Path | None = None
        self.window_len = int(RECIPE["window"])
        self.t0 = 0.0  # sensor time of the live run's first tick
        self.live_since: float | None = None  # monotonic
        self.backfill_readings = 0

    def say(self, text: str = "") -> None:
        self.console.line(text)

    def fail(self, text: str) -> int:
        self.console.line(f"iotad demo: {text}", always=True)
        return 1

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> int:
        code = 1
        try:
            code = self._start_and_watch()
        except (BrokerError, ModelError, PublishError, OSError) as exc:
            code = self.fail(str(exc))
        except (Interrupted, InterruptedError):
            self.console.line("iotad demo: stopped before the demo began", always=True)
            code = 130
        finally:
            totals = self._stop_all()
        if totals is not None:
            outcomes, other = match_faults(
                self.parts.faults,
                self.alerts.snapshot(),
                grace_s=(self.window_len + 5) * self.s.plant.interval_s,
            )
            self.console.line(always=True)
            for line in summary_lines(totals, outcomes, other, self.t0):
                self.console.line(line, always=True)
        for line in self._cleanup_lines():
            self.console.line(line, always=True)
        return code

    def _start_and_watch(self) -> int:
        s, p = self.s, self.parts
        self.say("iotad demo: simulated sensors -> MQTT -> LSTM forecasts -> alerts and metrics")
        p.broker = b = start_broker(s.broker, HOST)
        where = f"pid {b.pid}" if b.pid else "in this process"
        name = f"{b.kind} {b.version}".strip()
        self.say(f"  broker   {name} on {b.host}:{b.port} (MQTT {b.mqtt_version}, {where})")
        self.model_path = self._model()
        port = s.metrics_port
        if port is None:
            port = s.default_metrics_port if port_is_free(s.default_metrics_port, HOST) else 0
        settings = worker_settings(b, self.model_path, HOST, port, device_names(s.plant.devices))
        p.worker = DemoWorker(settings)
        held = p.worker.start(self.stop)
        if held is not None:
            self.fail("the worker did not start:")
            for line in held[-15:]:
                self.console.line(f"    {line}", always=True)
            return 1
        self.say(f"  worker   in this process, id {WORKER_ID}: MQTT {b.mqtt_version}, sensors/#")
        self.say(
            f"  metrics  http://{HOST}:{p.worker.metrics_port}/metrics  (and /healthz, /readyz)"
        )
        p.feed = AlertFeed(b, self._on_alert)
        self._print_plan()
        self._start_simulator()
        return self._watch()

    def _model(self) -> Path:
        from detector.engine.artifact import ArtifactError, load_artifact

        s = self.s
        if s.model is not None:
            path, how = s.model, "given"
        else:
            started = time.monotonic()
            if not (s.cache_dir / s.plant.cache_name() / "artifact.json").is_file():
                n_seg, seg = int(RECIPE["segments"]), int(RECIPE["segment_readings"])
                hours = n_seg * seg * s.plant.interval_s / 3600
                self.say(
                    f"  model    training a small LSTM ({RECIPE['units']} units, window "
                    f"{RECIPE['window']}) on {hours:g} h of simulated readings from "
                    f"{RECIPE['history_days']} days: once, under a minute ..."
                )
            path, reused = ensure_model(s.plant, s.cache_dir, self.stop, self.say)
            how = (
                "cached by an earlier run; reused"
                if reused
                else f"trained in {time.monotonic() - started:.0f} s; cached for the next run"
            )
        try:
            art = load_artifact(path)
        except ArtifactError as exc:
            raise ModelError(f"cannot use the model: {exc}") from None
        self.window_len = art.window_len
        units = ",".join(map(str, art.units))
        self.say(f"  model    {path}")
        self.say(f"           ({how}; {art.cell.upper()} {units} units, window {art.window_len})")
        return path

    def _print_plan(self) -> None:
        s, b = self.s, self.parts.broker
        assert b is not None
        plant = s.plant
        self.say(f"  watch    mosquitto_sub -h {b.host} -p {b.port} -t 'alerts/#' -v")
        self.say("           (and 'sensors/#' readings, 'scores/#' forecasts, 'iotad/status/#')")
        if shutil.which("mosquitto_sub") is None:
            self.say("           (mosquitto_sub comes with the mosquitto-clients package)")
        self.say(
            f"  factory  {plant.devices} machines x 4 sensors, a reading each every "
            f"{plant.interval_s:g} s ({plant.devices * 4 / plant.interval_s:.0f}/s)"
        )
        self.say(
            f"           after the last {self.window_len + 2} readings of each at once: "
            "detection starts warm"
        )
        planned = [
            f"{f.kind}{f' {f.magnitude:+g}' if f.magnitude else ''} on {f.device}/{f.metric} "
            f"at +{f.offset_s:g}s" + (f" for {f.duration_s:g} s" if f.duration_s else "")
            for f in s.faults
        ]
        if s.fault_rate_per_h > 0:
            planned.append(f"about {s.fault_rate_per_h:g} random ones per hour")
        self.say(f"  faults   {'; '.join(planned) if planned else 'none'}")
        until = f"after {s.duration_s:g} s, or Ctrl-C" if s.duration_s else "Ctrl-C"
        self.say(f"  stop     {until}")
        self.say()

    def _start_simulator(self) -> None:
        s, b = self.s, self.parts.broker
        assert b is not None
        backfill_ticks = self.window_len + 2
        self.backfill_readings = backfill_ticks * s.plant.devices * 4
        # A whole second: readable timestamps, and fault times that are exact in the payload.
        self.t0 = float(math.floor(time.time()))
        settings = PublishSettings(
            factory=s.plant.factory(s.fault_rate_per_h, s.fault_kinds),
            faults=tuple(s.faults),
            host=b.host,
            port=b.port,
            client_id=f"iotad-demo-sim-{os.getpid()}",
            mqtt_version=b.mqtt_version,
            start_ts=self.t0,
            backfill_s=backfill_ticks * s.plant.interval_s,
            progress_s=3600.0,
        )

        def publish() -> None:
            try:
                self.parts.sim_stats = run_publisher(
                    settings, self.sim_stop, on_fault=self._on_fault
                )
            except PublishError as exc:
                self.parts.sim_error = str(exc)

        self.parts.sim = threading.Thread(target=publish, name="iotad-demo-simulator")
        self.live_since = time.monotonic()
        self.parts.sim.start()

    def _on_fault(self, fault: Fault) -> None:
        self.parts.faults.append(fault)
        self.say(fault_line(fault, self.t0))

    def _on_alert(self, payload: bytes) -> None:
        try:
            alert = AlertSeen.from_message(json.loads(payload))
        except (ValueError, KeyError, TypeError):
            return  # not an alert of ours
        if self.alerts.add(alert):
            self.say(alert.line(self.t0))

    def _watch(self) -> int:
        """Report every `report_s` until the duration is over, a stop, or a part failed."""
        s, p = self.s, self.parts
        assert self.live_since is not None and p.worker is not None
        next_report = self.live_since + s.report_s
        last_count, last_at = float(self.backfill_readings), self.live_since
        end = self.live_since + s.duration_s if s.duration_s else math.inf
        while True:
            if not p.worker.alive:
                return self.fail("the worker stopped unexpectedly")
            if p.sim is not None and not p.sim.is_alive():
                return self.fail(f"the simulator stopped: {p.sim_error}")
            if self.stop.wait(max(0.0, min(next_report, end) - time.monotonic())):
                return 0
            now = time.monotonic()
            if now >= next_report:
                count = p.worker.sample("iotad_readings_total")
                rate = max(0.0, count - last_count) / max(now - last_at, 1e-9)
                last_count, last_at = count, now
                active = p.worker.sample("iotad_series_active")
                warming = p.worker.sample("iotad_series_warming")
                elapsed = now - self.live_since
                self.say(status_line(elapsed, count, rate, active, warming, self.alerts))
                next_report += s.report_s
            if now >= end:
                return 0

    # -- stopping ----------------------------------------------------------------------------

    def _stop_all(self) -> RunTotals | None:
        """Stop every part that was started, in reverse order; the totals if the live run
        began."""
        p = self.parts
        live_s = time.monotonic() - self.live_since if self.live_since is not None else 0.0
        if p.sim is not None:
            self.sim_stop.set()
            p.sim.join(JOIN_S)
        totals = None
        if p.worker is not None and p.worker.service is not None:
            if p.worker.alive:
                self._drain(p.worker)
            if self.live_since is not None:
                totals = RunTotals(
                    elapsed_s=live_s,
                    processed=p.worker.sample("iotad_readings_total"),
                    published=p.sim_stats.readings if p.sim_stats else 0,
                    backfill=self.backfill_readings,
                    fired=p.worker.sample("iotad_alert_events_total", state="firing"),
                    resolved=p.worker.sample("iotad_alert_events_total", state="resolved"),
                )
        if p.worker is not None:
            p.worker.stop()
        if p.feed is not None:
            with contextlib.suppress(Exception):  # nothing to do about a failed disconnect
                p.feed.close()
        if p.broker is not None:
            p.broker.stop()
            p.broker_note = _gone(p.broker)
        return totals

    def _drain(self, worker: DemoWorker) -> None:
        """Let the worker process what was published, and its alerts reach the feed."""
        published = self.parts.sim_stats.readings if self.parts.sim_stats else 0
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            events = worker.sample("iotad_alert_events_total", state="firing")
            events += worker.sample("iotad_alert_events_total", state="resolved")
            done = worker.sample("iotad_readings_total") >= published
            if done and len(self.alerts.snapshot()) >= events:
                return
            time.sleep(0.05)

    def _cleanup_lines(self) -> list[str]:
        p = self.parts
        notes = [p.broker_note] if p.broker is not None else []
        threads = {
            "worker": p.worker.thread if p.worker is not None else None,
            "simulator": p.sim,
        }
        started = {name: t for name, t in threads.items() if t is not None and t.ident}
        alive = [name for name, t in started.items() if t.is_alive()]
        if alive:
            notes.append(f"{' and '.join(alive)} thread still running")
        elif started:
            notes.append(f"{' and '.join(started)} thread{'s' * (len(started) > 1)} joined")
        lines = [f"stopped: {'; '.join(notes)}"] if notes else []
        if self.model_path is not None and self.s.model is None:
            lines.append(f"model kept for the next run: {self.model_path}")
        return lines


def _gone(broker: DemoBroker) -> str:
    """One line on the stopped broker: its process is gone (checked), or its thread ended."""
    if broker.pid is None:
        return f"{broker.kind} broker shut down"
    try:
        os.kill(broker.pid, 0)
    except ProcessLookupError:
        return f"{broker.kind} broker (pid {broker.pid}) terminated"
    except PermissionError:
        pass
    return f"{broker.kind} broker (pid {broker.pid}) may still be running"
