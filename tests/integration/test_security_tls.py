"""Mutual TLS: a broker that requires client certificates lets the worker in with its own
certificate and key, and refuses it clearly (one line, exit 1, no traceback) with a
certificate from another CA or with none.

test_worker_lifecycle.py already covers server-only TLS (the right CA connects, another CA
fails verification); this adds client certificates (``require_certificate true``).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mosquitto, WorkerProcess, free_port, publish_all
from tests.integration.test_reliability_broker import numbered
from tests.pki import make_ca, make_cert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA with a server and a client certificate, and a rogue CA's client."""
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "test-ca")
    rogue = make_ca(d, "rogue-ca")
    srv = make_cert(d, "localhost", ca, "subjectAltName=DNS:localhost,IP:127.0.0.1")
    client = make_cert(d, "iotad-worker", ca, "extendedKeyUsage=clientAuth")
    stranger = make_cert(d, "stranger", rogue, "extendedKeyUsage=clientAuth")
    return {
        "ca": ca[1],
        "srv.pem": srv[1],
        "srv.key": srv[0],
        "client.pem": client[1],
        "client.key": client[0],
        "rogue.pem": stranger[1],
        "rogue.key": stranger[0],
    }


@pytest.fixture
def mtls_broker(tmp_path: Path, pki: dict[str, Path]) -> Iterator[tuple[Mosquitto, int]]:
    """mosquitto with a TLS listener that requires a client certificate from the test CA
    (and its usual plain loopback listener, which the test publishes through)."""
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "mtls",
        conf=[
            f"listener {tls_port} 127.0.0.1",
            f"cafile {pki['ca']}",
            f"certfile {pki['srv.pem']}",
            f"keyfile {pki['srv.key']}",
            "require_certificate true",
        ],
    ).start()
    yield broker, tls_port
    broker.stop()


def tls_env(tls_port: int, pki: dict[str, Path], cert: str | None) -> dict[str, str]:
    env = {
        "IOTAD_MQTT__PORT": str(tls_port),
        "IOTAD_MQTT__CONNECT_TIMEOUT_S": "2",
        "IOTAD_MQTT__TLS__CA_FILE": str(pki["ca"]),
    }
    if cert is not None:
        env["IOTAD_MQTT__TLS__CERT_FILE"] = str(pki[f"{cert}.pem"])
        env["IOTAD_MQTT__TLS__KEY_FILE"] = str(pki[f"{cert}.key"])
    return env


def test_worker_connects_with_its_client_certificate(
    mtls_broker: tuple[Mosquitto, int], pki: dict[str, Path], tiny_artifact: Path, tmp_path: Path
) -> None:
    broker, tls_port = mtls_broker
    w = WorkerProcess(broker, tiny_artifact, tmp_path, "w-mtls", tls_env(tls_port, pki, "client"))
    w.start()
    try:
        w.wait_ready()
        assert f"connected to mqtts://127.0.0.1:{tls_port}" in w.log()
        publish_all(broker.port, numbered(20))
        w.wait_metric("iotad_readings_accepted_total", lambda v: v >= 20)
        w.signal(signal.SIGTERM)
        assert w.wait() == 0
    finally:
        w.stop()


@pytest.mark.parametrize("cert", ["rogue", None], ids=["other-ca-certificate", "no-certificate"])
def test_worker_without_an_accepted_certificate_fails_in_one_line(
    mtls_broker: tuple[Mosquitto, int],
    pki: dict[str, Path],
    tiny_artifact: Path,
    tmp_path: Path,
    cert: str | None,
) -> None:
    broker, tls_port = mtls_broker
    env = tls_env(tls_port, pki, cert)
    w = WorkerProcess(broker, tiny_artifact, tmp_path, f"w-mtls-{cert}", env)
    w.start()
    try:
        code = w.wait(timeout_s=30)
    finally:
        w.stop()
    log = w.log()
    assert code == 1, log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    assert f"cannot connect to mqtts://127.0.0.1:{tls_port}" in errors[0]
    assert "gave up after 2 s" in errors[0]
    assert "Traceback" not in log
    print(errors[0])  # shown with -s: what an operator reads
