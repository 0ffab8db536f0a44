"""The Alertmanager sink as a plant runs it, against real Alertmanager binaries: basic auth
and TLS (Alertmanager's ``--web.config.file``), a client certificate, static labels, and an
HA pair posted to in parallel. Settings go through `AlertmanagerSettings`, as the worker's do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from detector.config.alertmanager_settings import AlertmanagerSettings
from detector.worker.alertmanager import AlertmanagerSink
from tests.deploy.services import ALERTMANAGER, RealAlertmanager, wait_for
from tests.integration.test_alertmanager_real import event, ours
from tests.pki import make_ca, make_cert

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not ALERTMANAGER, reason="alertmanager not found (scripts/system-deps.sh installs it)"
    ),
]

PASSWORD = "am-test-password"
# bcrypt (cost 4, fast) of PASSWORD, as Alertmanager's web config wants it; made with
# `htpasswd -nbBC 4 iotad am-test-password` (or Python's crypt module with METHOD_BLOWFISH).
PASSWORD_HASH = "$2b$04$tFKFJymupDyWs9gcKREJVe5dThZ4ZDkq50x6GbyrKAc6gYLrj4KSG"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("am-pki")
    ca = make_ca(d, "am-test-ca")
    srv = make_cert(d, "alertmanager", ca, "subjectAltName=DNS:localhost,IP:127.0.0.1")
    client = make_cert(d, "iotad-worker", ca, "extendedKeyUsage=clientAuth")
    return {
        "ca": ca[1],
        "server_key": srv[0],
        "server_cert": srv[1],
        "client_key": client[0],
        "client_cert": client[1],
    }


def web_config(pki: dict[str, Path], *, basic_auth: bool, client_certs: bool = False) -> str:
    lines = [
        "tls_server_config:",
        f"  cert_file: {pki['server_cert']}",
        f"  key_file: {pki['server_key']}",
    ]
    if client_certs:
        lines += [
            "  client_auth_type: RequireAndVerifyClientCert",
            f"  client_ca_file: {pki['ca']}",
        ]
    if basic_auth:
        lines += ["basic_auth_users:", f"  iotad: {PASSWORD_HASH}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def secured(tmp_path: Path, pki: dict[str, Path]) -> Iterator[RealAlertmanager]:
    """Alertmanager over TLS with basic auth (user iotad, PASSWORD)."""
    am = RealAlertmanager(
        tmp_path / "am",
        web=web_config(pki, basic_auth=True),
        auth=("iotad", PASSWORD),
        ca_file=pki["ca"],
    )
    yield am
    am.stop()


def errors(registry: CollectorRegistry, url: str) -> float:
    value = registry.get_sample_value("iotad_alertmanager_errors_total", {"url": url})
    assert value is not None, f"no error counter for {url}"
    return value


def sent(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("iotad_alertmanager_sent_total") or 0.0


def test_basic_auth_over_tls_delivers_with_static_labels(
    secured: RealAlertmanager, pki: dict[str, Path], tmp_path: Path
) -> None:
    password_file = tmp_path / "am-password"
    password_file.write_text(PASSWORD + "\n")  # a trailing newline, as `echo` leaves it
    settings = AlertmanagerSettings(
        url=secured.url,
        username="iotad",
        password_file=password_file,
        ca_file=pki["ca"],
        labels="plant=north, line=2",
    )
    registry = CollectorRegistry()
    sink = AlertmanagerSink.from_settings(settings, registry=registry)
    assert sink is not None
    sink.send(event("firing", time.time()))

    (alert,) = wait_for(lambda: ours(secured.alerts()))
    assert alert["labels"] == {
        "alertname": "SensorAnomaly",
        "device": "press-7",
        "metric": "temp",
        "severity": "warning",
        "plant": "north",
        "line": "2",
    }
    assert sink.close()
    assert sent(registry) == 1
    assert errors(registry, secured.url) == 0


def test_wrong_password_is_counted_and_a_fixed_file_delivers_without_restart(
    secured: RealAlertmanager,
    pki: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "not-the-" + PASSWORD
    password_file = tmp_path / "am-password"
    password_file.write_text(wrong)
    settings = AlertmanagerSettings(
        url=[secured.url],
        username="iotad",
        password_file=password_file,
        ca_file=pki["ca"],
        backoff_max_s=0.2,
    )
    registry = CollectorRegistry()
    caplog.set_level(logging.DEBUG)
    sink = AlertmanagerSink.from_settings(settings, registry=registry)
    assert sink is not None
    sink.send(event("firing", time.time()))

    wait_for(lambda: errors(registry, secured.url) >= 2, what="two refused attempts")
    assert sent(registry) == 0
    assert ours(secured.alerts()) == []
    assert "401" in caplog.text

    # The secret is rotated in place (a Kubernetes secret volume): the next retry reads it.
    password_file.write_text(PASSWORD)
    wait_for(lambda: ours(secured.alerts()), what="the alert in Alertmanager")
    assert sink.close()
    assert sent(registry) == 1
    assert (
        registry.get_sample_value("iotad_alertmanager_dropped_total", {"reason": "rejected"}) == 0
    )
    assert wrong not in caplog.text and PASSWORD not in caplog.text


def test_https_without_the_ca_is_counted_as_a_failure(
    secured: RealAlertmanager, tmp_path: Path
) -> None:
    # The server's certificate is signed by a private CA the system does not trust.
    registry = CollectorRegistry()
    sink = AlertmanagerSink(secured.url, "http://w/", registry=registry, backoff_max_s=0.2)
    sink.send(event("firing", time.time()))
    wait_for(lambda: errors(registry, secured.url) >= 1)
    assert not sink.close(timeout_s=0.2)
    assert sent(registry) == 0


def test_client_certificate_is_required_and_accepted(pki: dict[str, Path], tmp_path: Path) -> None:
    am = RealAlertmanager(
        tmp_path / "am",
        web=web_config(pki, basic_auth=False, client_certs=True),
        ca_file=pki["ca"],
        client_cert=(pki["client_cert"], pki["client_key"]),
    )
    try:
        without = CollectorRegistry()
        anonymous = AlertmanagerSink.from_settings(
            AlertmanagerSettings(url=am.url, ca_file=pki["ca"], backoff_max_s=0.2),
            registry=without,
        )
        assert anonymous is not None
        anonymous.send(event("firing", time.time(), device="anonymous"))
        wait_for(lambda: errors(without, am.url) >= 1)
        assert not anonymous.close(timeout_s=0.2)

        with_cert = CollectorRegistry()
        settings = AlertmanagerSettings(
            url=am.url, ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"]
        )
        sink = AlertmanagerSink.from_settings(settings, registry=with_cert)
        assert sink is not None
        sink.send(event("firing", time.time(), device="with-cert"))
        wait_for(lambda: ours(am.alerts(), "with-cert"))
        assert sink.close()
        assert errors(with_cert, am.url) == 0
        assert ours(am.alerts(), "anonymous") == []
    finally:
        am.stop()


def test_an_ha_pair_gets_every_alert_and_one_peer_down_loses_nothing(tmp_path: Path) -> None:
    a = RealAlertmanager(tmp_path / "a")
    b = RealAlertmanager(tmp_path / "b")
    try:
        registry = CollectorRegistry()
        settings = AlertmanagerSettings(url=f"{a.url},{b.url}", backoff_max_s=0.2)
        sink = AlertmanagerSink.from_settings(settings, registry=registry)
        assert sink is not None
        sink.send(event("firing", time.time(), device="both"))
        wait_for(lambda: ours(a.alerts(), "both"), what="the alert on the first peer")
        wait_for(lambda: ours(b.alerts(), "both"), what="the alert on the second peer")
        wait_for(lambda: sent(registry) == 1)

        b.stop()
        sink.send(event("firing", time.time(), device="one-left"))
        wait_for(lambda: ours(a.alerts(), "one-left"))
        wait_for(lambda: errors(registry, b.url) >= 1)
        assert sink.close()
        # Delivered once to the peer still up: sent, and nothing retried or dropped for it.
        assert sent(registry) == 2
        assert errors(registry, a.url) == 0
        for reason in ("queue_full", "rejected", "shutdown"):
            dropped = {"reason": reason}
            assert registry.get_sample_value("iotad_alertmanager_dropped_total", dropped) == 0
    finally:
        a.stop()
        b.stop()
