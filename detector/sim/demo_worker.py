"""The demo's worker and alert subscriber, both in this process.

`DemoWorker` runs `detector.worker.run_cli.serve` (the very worker `iotad run` runs) in a thread,
with settings built from the demo's values only, and reads its counters straight from its
Prometheus registry. `AlertFeed` subscribes to ``alerts/#`` like any consumer would.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from detector.sim.demo_broker import BrokerError, DemoBroker

WORKER_ID = "iotad-demo"
START_TIMEOUT_S = 30.0
JOIN_TIMEOUT_S = 15.0


class AlertFeed:
    """Subscribes to ``alerts/#`` (a clean session) and passes each payload to `on_alert`
    (on paho's network thread: it must be quick)."""

    def __init__(self, broker: DemoBroker, on_alert: Callable[[bytes], None]) -> None:
        import paho.mqtt.client as mqtt

        v5 = broker.mqtt_version == "5"
        self._ready = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"iotad-demo-alerts-{os.getpid()}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        self.client.on_connect = lambda c, *_: c.subscribe("alerts/#", qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = lambda _c, _u, msg: on_alert(bytes(msg.payload))
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._ready.wait(10):
            self.close()
            raise BrokerError("could not subscribe to alerts/# on the demo broker")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def stderr_held() -> Iterator[list[str]]:
    """Hold what is written to file descriptor 2 (LiteRT's native notices, start-up logs)
    and hand it back as lines, to be shown only if something failed."""
    held: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            held.extend(sink.read().decode(errors="replace").splitlines())


def worker_settings(
    broker: DemoBroker, model: Path, metrics_host: str, metrics_port: int, devices: list[str]
) -> Any:
    """The worker's settings for the demo: from these values only, never from ``IOTAD_*``
    variables or a ``.env`` file, which may well point at a production broker."""
    from detector.config.settings import WorkerSettings

    class _DemoWorkerSettings(WorkerSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: Any,
            init_settings: Any,
            env_settings: Any,
            dotenv_settings: Any,
            file_secret_settings: Any,
        ) -> tuple[Any, ...]:
            return (init_settings,)

    values: dict[str, Any] = {
        "worker_id": WORKER_ID,
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "version": broker.mqtt_version,
            # Unique per run, and a short session: nothing is queued for a demo that is gone.
            "client_id": f"{WORKER_ID}-{os.getpid()}",
            "session_expiry_s": 60,
            "connect_timeout_s": 10,
        },
        # Per-series gauges (value, expected, score) for every demo device.
        "metrics": {"host": metrics_host, "port": metrics_port, "series_devices": devices},
        "model": {"path": str(model)},
        "output": {"scores": True},
        "log": {"level": "WARNING"},
    }
    with warnings.catch_warnings():
        # pydantic-settings notes that the secrets-dir option of WorkerSettings goes unused.
        warnings.filterwarnings("ignore", message=".*secrets_dir_missing", category=UserWarning)
        return _DemoWorkerSettings(**values)


class DemoWorker:
    """`serve(settings)` on a thread; `start` waits until it is connected and ready."""

    def __init__(self, settings: Any) -> None:
        from prometheus_client import CollectorRegistry, disable_created_metrics

        # As in `iotad run`: the *_created series double the scrape and nothing reads them.
        disable_created_metrics()
        self.settings = settings
        self.registry = CollectorRegistry()
        self.service: Any = None
        self.code: int | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="iotad-demo-worker")

    def start(self, interrupt: threading.Event) -> list[str] | None:
        """Start and wait until ready; None when ready, else what it wrote to stderr.

        Raises `InterruptedError` when `interrupt` is set meanwhile.
        """
        with stderr_held() as held:
            self.thread.start()
            deadline = time.monotonic() + START_TIMEOUT_S
            while not self._ready.wait(0.1):
                if not self.thread.is_alive() or time.monotonic() > deadline:
                    break
                if interrupt.is_set():
                    raise InterruptedError
        return None if self._ready.is_set() else held

    def _main(self) -> None:
        from detector.worker.run_cli import serve

        def started(service: Any) -> None:
            self.service = service
            self._ready.set()

        try:
            self.code = serve(
                self.settings, stop=self._stop, registry=self.registry, started=started
            )
        except Exception as exc:  # the demo's watch loop sees the thread end and reports
            from detector.worker.log_setup import stderr_line

            stderr_line("iotad demo", f"worker failed: {type(exc).__name__}: {exc}")
            self.code = 1

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def metrics_port(self) -> int:
        return int(self.service.http.port)

    def sample(self, name: str, **labels: str) -> float:
        """A sample of the worker's registry (0 before the first observation)."""
        return float(self.registry.get_sample_value(name, labels or None) or 0.0)

    def stop(self) -> None:
        """Finish the batch in flight, publish the offline status, join the thread."""
        self._stop.set()
        if self.thread.ident is not None:
            self.thread.join(JOIN_TIMEOUT_S)
