"""`iotad demo` as a new user runs it: a subprocess that exits 0, shows an alert for the
fault it injected, serves the /metrics and the alert topic it prints, and leaves nothing
running (its broker process and every child it started are gone after it exits).

The demo trains its model once (~30-60 s) into pytest's cache directory; later sessions
reuse it until the training code changes (the demo keys its cached models by that code).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from detector.sim.demo_broker import find_mosquitto
from detector.sim.demo_console import AlertSeen, match_faults
from detector.sim.simulate_publish import PublishSettings, run_publisher
from detector.sim.simulation import FactoryConfig, Fault, FaultSpec
from tests.conftest import Collector, Mosquitto

REPO = Path(__file__).resolve().parents[2]
# A first run trains the model; later ones start in a few seconds.
START_TIMEOUT_S = 300.0

psutil = pytest.importorskip("psutil")


class DemoProcess:
    """``python -m detector demo ARGS``: output collected live, process tree watched."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOTAD_")}
        env.update(PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "detector", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self.children: dict[tuple[int, float], str] = {}  # (pid, create time) -> command
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _watch(self) -> None:
        try:
            parent = psutil.Process(self.proc.pid)
            while self.proc.poll() is None:
                for child in parent.children(recursive=True):
                    with_time = (child.pid, child.create_time())
                    if with_time not in self.children:
                        self.children[with_time] = " ".join(child.cmdline()[:4])
                time.sleep(0.05)
        except psutil.Error:
            pass  # the demo ended meanwhile

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """The first output line matching `pattern` (fails with the output if none comes)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        pytest.fail(f"no line matching {pattern!r}; output:\n{self.output}")

    def wait(self, timeout_s: float) -> int:
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"iotad demo still running after {timeout_s} s:\n{self.output}")
        self._reader.join(10)
        self._watcher.join(10)
        return code

    def leftovers(self) -> list[str]:
        """Children seen while it ran that still exist now."""
        alive = []
        for (pid, created), cmd in self.children.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {cmd}")
            except psutil.NoSuchProcess:
                continue
        return alive

    def kill(self) -> None:
        """Cleanup after a failed test: the demo and whatever it started."""
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            child.kill()
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def demo_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    if cache is None:
        return tmp_path_factory.mktemp("iotad_demo_cache")
    return Path(cache.mkdir("iotad_demo_cache"))


@pytest.fixture
def run_demo(demo_cache: Path, tmp_path: Path) -> Iterator[Callable[..., DemoProcess]]:
    made: list[DemoProcess] = []

    def start(*args: str) -> DemoProcess:
        demo = DemoProcess([*args, "--cache-dir", str(demo_cache), "--metrics-port", "0"], tmp_path)
        made.append(demo)
        return demo

    yield start
    for demo in made:
        if demo.proc.poll() is None:
            demo.kill()


def _broker_pid(demo: DemoProcess) -> int:
    return int(demo.wait_for(r"^  broker .*pid (\d+)\)", 30).group(1))


def _assert_spike_detected(demo: DemoProcess) -> tuple[str, str]:
    """The injected spike is in the output as a fault, an alert and a DETECTED line."""
    fault = demo.wait_for(r"FAULT injected: spike on ([\w.-]+)/(\w+)", 1)
    device, metric = fault.group(1), fault.group(2)
    demo.wait_for(rf"ALERT firing +{re.escape(device)}/{metric} ", 1)
    demo.wait_for(rf"DETECTED +spike +{re.escape(device)}/{metric} ", 1)
    return device, metric


@pytest.mark.integration
@pytest.mark.slow
def test_demo_with_mosquitto_alerts_on_the_injected_fault_and_leaves_nothing(run_demo) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    demo: DemoProcess = run_demo("--duration", "30", "--broker", "mosquitto")
    pid = _broker_pid(demo)
    assert psutil.pid_exists(pid)
    # What the console tells a user to look at is there: /metrics and the alerts topic.
    url = demo.wait_for(r"metrics +(http://\S+/metrics)", START_TIMEOUT_S).group(1)
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = resp.read().decode()
    assert "iotad_readings_total" in body and "iotad_series_active" in body
    watch = demo.wait_for(r"mosquitto_sub -h (\S+) -p (\d+) -t 'alerts/#'", 10)
    subscriber = Collector(int(watch.group(2)), ["alerts/#"], host=watch.group(1))
    try:
        code = demo.wait(30 + 60)
    finally:
        subscriber.close()
    assert code == 0, demo.output
    device, metric = _assert_spike_detected(demo)
    demo.wait_for(r"FAULT injected: level_shift on [\w.-]+/temperature, \+10 ", 1)
    demo.wait_for(r"DETECTED +level_shift +[\w.-]+/temperature ", 1)
    demo.wait_for(r"faults +2 injected \(ground truth\), 2 detected", 1)
    seen = subscriber.json("alerts/")
    assert any(
        a["state"] == "firing" and (a["device"], a["metric"]) == (device, metric) for a in seen
    ), seen
    # Nothing left running: the broker it started, and any other child it had.
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert any(p == pid for p, _ in demo.children), demo.children
    assert demo.leftovers() == []
    demo.wait_for(rf"stopped: mosquitto broker \(pid {pid}\) terminated; worker and simulator", 1)
    demo.wait_for(r"model kept for the next run: ", 1)


@pytest.mark.integration
@pytest.mark.slow
def test_demo_with_the_embedded_broker_speaks_mqtt_311(run_demo) -> None:
    pytest.importorskip("amqtt")
    demo: DemoProcess = run_demo("--duration", "18", "--broker", "embedded")
    demo.wait_for(r"^  broker +embedded .*MQTT 3\.1\.1, in this process", 30)
    assert demo.wait(START_TIMEOUT_S + 18 + 30) == 0, demo.output
    demo.wait_for(r"worker +in this process.*MQTT 3\.1\.1", 1)
    _assert_spike_detected(demo)
    assert demo.leftovers() == []


@pytest.mark.integration
@pytest.mark.slow
def test_demo_stops_cleanly_on_sigterm(run_demo) -> None:
    demo: DemoProcess = run_demo("--report-s", "2", "--no-faults")
    pid = _broker_pid(demo) if find_mosquitto() else None
    demo.wait_for(r"^ +\+\d+s +[\d.]+ readings/s", START_TIMEOUT_S)
    demo.proc.send_signal(signal.SIGTERM)
    assert demo.wait(30) == 0, demo.output
    demo.wait_for(r"SIGTERM: stopping", 1)
    demo.wait_for(r"^summary after \d+ s", 1)
    demo.wait_for(r"faults +none injected", 1)
    if pid is not None:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert demo.leftovers() == []


def test_demo_refuses_bad_flags_before_starting_anything(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "detector", "demo", "--devices", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--devices must be at least 1" in out.stderr


@pytest.mark.integration
def test_backfill_publishes_history_before_the_start(mosquitto: Mosquitto) -> None:
    """The demo's warm start: `backfill_s` of history at once, then the paced run; fault
    offsets still count from the start."""
    start = 1_800_000_000.0
    collector = Collector(mosquitto.port, ["backfill/#"])
    faults: list[Fault] = []
    try:
        settings = PublishSettings(
            factory=FactoryConfig(n_devices=1, metrics=("current",), interval_s=1.0),
            faults=(FaultSpec("line1-press01", "current", "spike", offset_s=0.0),),
            host=mosquitto.host,
            port=mosquitto.port,
            topic_prefix="backfill",
            start_ts=start,
            backfill_s=5.0,
            duration_s=0.5,  # the backfill and the first paced tick, nothing more
        )
        stop = _WaitRecorder()
        stats = run_publisher(settings, stop, on_fault=faults.append)
        # The history was not paced: the publisher never waited (pacing waits on the stop
        # event, one interval of 1 s per tick).
        assert stop.waits == []
        collector.wait_for(lambda msgs: len(msgs) >= 6)
    finally:
        collector.close()
    ts = [doc["ts"] for doc in collector.json("backfill/")]
    assert ts == [start - 5, start - 4, start - 3, start - 2, start - 1, start]
    assert (stats.readings, stats.first_ts, stats.last_ts) == (6, start - 5, start)
    assert [f.start_ts for f in faults] == [start]


class _WaitRecorder(threading.Event):
    """A stop event that records every timed wait made on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return super().wait(timeout)


def _fault(device: str, metric: str, start: float, end: float) -> Fault:
    return Fault("spike", device, metric, start, end, 10.0)


def _alert(device: str, metric: str, ts: float, state: str = "firing") -> AlertSeen:
    return AlertSeen(
        id=f"{device}{metric}{ts}{state}",
        state=state,
        device=device,
        metric=metric,
        ts=ts,
        value=0,
        expected=0,
        lower=0,
        upper=0,
        score=9,
        threshold=0.5,
        signal="forecast",
        model="m",
        worker="w",
    )


def test_faults_match_firing_alerts_on_their_series_within_the_grace() -> None:
    faults = [
        _fault("a", "current", 100.0, 101.0),
        _fault("b", "*", 200.0, 210.0),  # a silent device: any of its metrics
        _fault("c", "pressure", 300.0, 301.0),
    ]
    alerts = [
        _alert("a", "current", 99.0),  # before the fault: not it
        _alert("a", "current", 106.0),  # within 5 s after the end: it
        _alert("a", "current", 107.0, "resolved"),  # resolving is no detection
        _alert("b", "vibration", 205.0),
        _alert("c", "current", 300.0),  # another metric of the device
        _alert("c", "pressure", 306.5),  # past the grace
    ]
    outcomes, other = match_faults(faults, alerts, grace_s=5.0)
    assert [o.alert.ts if o.alert else None for o in outcomes] == [106.0, 205.0, None]
    assert [(a.device, a.metric, a.ts) for a in other] == [
        ("a", "current", 99.0),
        ("c", "current", 300.0),
        ("c", "pressure", 306.5),
    ]
