"""What /readyz answers, on the worker's real HTTP endpoint.

/readyz fails while the worker cannot do its work at all: the model is not loaded, start-up
has not finished, the detection thread is dead, or the source (broker, NATS) is not
connected. A full ingest queue is not among them, on purpose: it is backpressure under a
burst or a backlog after a reconnect (the broker holds the rest), and a readiness probe that
failed on it would flap with the load, take the pod out of its Service (and out of
Prometheus' endpoints discovery) exactly when it is busiest, and stall a rolling update. A
worker that stays behind shows as lag (`IotadLagHigh`) and queue depth instead.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import TINY_START_TS, Mosquitto, publish_all
from tests.deploy.services import wait_for

pytestmark = pytest.mark.integration

QUEUE_SIZE = 4


class HeldWorker:
    """`serve()` on a thread (the code `iotad run` runs) whose detection thread can be held
    in the middle of a batch, so that its ingest queue fills up."""

    def __init__(self, mosquitto: Mosquitto, artifact: Path) -> None:
        from detector.config.settings import load_settings
        from detector.worker.run_cli import serve

        settings = load_settings(
            {
                "worker_id": "w-readiness",
                "queue_size": QUEUE_SIZE,
                "mqtt": {
                    "host": mosquitto.host,
                    "port": mosquitto.port,
                    "session_expiry_s": 60,
                    "connect_timeout_s": 10,
                },
                "metrics": {"host": "127.0.0.1", "port": 0},
                "model": {"path": str(artifact)},
            },
            env_file=None,
            secrets_dir=None,
        )
        self.release = threading.Event()
        self.held = threading.Event()
        self.stop = threading.Event()
        self.service: Any = None
        up = threading.Event()

        def started(service: Any) -> None:
            process = service.worker.process

            def held_process(items: Any) -> Any:
                self.held.set()
                self.release.wait(60)
                return process(items)

            service.worker.process = held_process
            self.service = service
            up.set()

        def run() -> None:
            serve(settings, stop=self.stop, registry=CollectorRegistry(), started=started)
            up.set()

        self.thread = threading.Thread(target=run, name="readiness-worker", daemon=True)
        self.thread.start()
        assert up.wait(60) and self.service is not None

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.service.http.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def close(self) -> None:
        self.release.set()
        self.stop.set()
        self.thread.join(60)


@pytest.fixture
def held_worker(mosquitto: Mosquitto, tiny_artifact: Path) -> Iterator[HeldWorker]:
    w = HeldWorker(mosquitto, tiny_artifact)
    yield w
    w.close()


def test_a_full_ingest_queue_does_not_fail_readiness(
    held_worker: HeldWorker, mosquitto: Mosquitto
) -> None:
    messages = [
        ("sensors/ready/temp", json.dumps({"ts": TINY_START_TS + 60 * i, "value": 20.0}))
        for i in range(3 * QUEUE_SIZE)
    ]
    publish_all(mosquitto.port, messages)
    assert held_worker.held.wait(30), "the detection thread never took a batch"
    queue = held_worker.service.worker.queue
    wait_for(lambda: len(queue) >= QUEUE_SIZE, what="a full ingest queue")

    assert held_worker.get("/readyz") == (200, "ready\n")

    held_worker.release.set()
    wait_for(lambda: len(queue) == 0, what="the queue drained")
    assert held_worker.get("/readyz") == (200, "ready\n")
