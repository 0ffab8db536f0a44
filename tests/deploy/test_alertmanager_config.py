"""The compose stack's Alertmanager config: `amtool check-config` (also with the commented
e-mail receiver switched on), where alerts route, and a real Alertmanager running it that
delivers a worker's alert to the webhook receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.services import ALERTMANAGER, RealAlertmanager, wait_for

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"
AMTOOL = shutil.which("amtool")
GATEWAY = "http://alert-gateway:8080"

pytestmark = pytest.mark.skipif(
    AMTOOL is None, reason="amtool not found (scripts/system-deps.sh installs alertmanager)"
)


def amtool(*args: str) -> str:
    assert AMTOOL
    proc = subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"amtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_check_config() -> None:
    out = amtool("check-config", str(CONFIG))
    assert "SUCCESS" in out


def with_email_example() -> str:
    """The config with the commented e-mail receiver uncommented."""
    lines = CONFIG.read_text().splitlines()
    start = lines.index("  # e-mail example:start")
    end = lines.index("  # e-mail example:end")
    example = [line.replace("  # ", "  ", 1) for line in lines[start + 1 : end]]
    assert example and all(line.startswith("  ") for line in example)
    return "\n".join(lines[:start] + example + lines[end + 1 :]) + "\n"


def test_the_email_example_is_valid_once_uncommented(tmp_path: Path) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(with_email_example())
    out = amtool("check-config", str(config))
    assert "SUCCESS" in out and "plant-maintenance-email" in config.read_text()


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            ["alertname=SensorAnomaly", "device=press-7", "metric=temp", "plant=north"],
            "plant-maintenance",
        ),
        (["alertname=IotadWorkerDown", "job=iotad", "severity=critical"], "iotad-operators"),
        (["alertname=Watchdog"], "iotad-operators"),
    ],
)
def test_every_alert_reaches_a_receiver(labels: list[str], receiver: str) -> None:
    out = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert out.strip() == receiver


class Webhook:
    """Records the webhook notifications Alertmanager POSTs, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    w = Webhook()
    yield w
    w.stop()


@pytest.mark.integration
@pytest.mark.skipif(not ALERTMANAGER, reason="alertmanager binary not found")
def test_a_sensor_anomaly_reaches_the_webhook_receiver(webhook: Webhook, tmp_path: Path) -> None:
    # Only the gateway's host is rewritten, as the compose stack's services are.
    config = CONFIG.read_text()
    assert GATEWAY in config
    am = RealAlertmanager(tmp_path, config=config.replace(GATEWAY, webhook.url))
    try:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        alert = {
            "labels": {
                "alertname": "SensorAnomaly",
                "device": "press-7",
                "metric": "temp",
                "severity": "warning",
                "plant": "north",
            },
            "annotations": {"summary": "press-7/temp = 93.5 is outside its expected band"},
            "startsAt": now,
        }
        req = urllib.request.Request(
            am.url + "/api/v2/alerts",
            data=json.dumps([alert]).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=5).close()
        # group_wait of the SensorAnomaly route: 10 s.
        wait_for(lambda: webhook.received, timeout_s=30, what="a webhook notification")
    finally:
        am.stop()
    path, body = webhook.received[0]
    assert path == "/plant-maintenance"
    assert body["receiver"] == "plant-maintenance"
    assert body["status"] == "firing"
    assert body["groupLabels"] == {
        "alertname": "SensorAnomaly",
        "plant": "north",
        "device": "press-7",
    }
    assert body["alerts"][0]["labels"]["metric"] == "temp"
