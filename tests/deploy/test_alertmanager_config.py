"""The compose stack's Alertmanager config: `amtool check-config`, and where alerts route."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"
AMTOOL = shutil.which("amtool")

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


@pytest.mark.parametrize(
    "labels",
    [
        ["alertname=SensorAnomaly", "device=press-7", "metric=temp", "severity=warning"],
        ["alertname=IotadWorkerDown", "job=iotad", "severity=critical"],
        ["alertname=Watchdog"],
    ],
)
def test_every_alert_reaches_a_receiver(labels: list[str]) -> None:
    out = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert out.strip() == "blackhole"
