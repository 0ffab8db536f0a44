"""detector/worker/health.py: /healthz, /readyz and /metrics on the real server, on a free port."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from detector.worker.health import HealthServer
from tests.conftest import free_port


class Readiness:
    """What the worker's `ready()` answers, changed by the test between requests."""

    def __init__(self) -> None:
        self.answer: tuple[bool, str] = (False, "model not loaded")
        self.error: Exception | None = None

    def __call__(self) -> tuple[bool, str]:
        if self.error is not None:
            raise self.error
        return self.answer


def request(
    server: HealthServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def serve(
    registry: CollectorRegistry, readiness: Readiness
) -> Iterator[Callable[[], HealthServer]]:
    started: list[HealthServer] = []

    def start() -> HealthServer:
        server = HealthServer(registry, readiness, host="127.0.0.1", port=0)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_healthz_is_ok_whatever_readiness_says(serve: Callable[[], HealthServer]) -> None:
    server = serve()
    assert request(server, "/healthz")[0::2] == (200, b"ok\n")


def test_readyz_follows_ready_both_ways(
    serve: Callable[[], HealthServer], readiness: Readiness
) -> None:
    server = serve()
    assert request(server, "/readyz")[0::2] == (503, b"model not loaded\n")
    readiness.answer = (True, "")
    assert request(server, "/readyz")[0::2] == (200, b"ready\n")
    readiness.answer = (False, "mqtt disconnected")
    assert request(server, "/readyz")[0::2] == (503, b"mqtt disconnected\n")
    readiness.answer = (False, "")
    assert request(server, "/readyz")[0::2] == (503, b"not ready\n")
    readiness.answer = (True, "ready")
    # A query string (some probes add one) does not change the path.
    assert request(server, "/readyz?verbose=1")[0::2] == (200, b"ready\n")


def test_readyz_answers_503_when_the_check_itself_fails(
    serve: Callable[[], HealthServer], readiness: Readiness
) -> None:
    server = serve()
    readiness.error = RuntimeError("detection thread gone")
    status, _, body = request(server, "/readyz")
    assert (status, body) == (503, b"readiness check failed: detection thread gone\n")
    assert request(server, "/healthz")[0] == 200  # the server itself carries on


def test_metrics_exposes_the_registry_in_both_formats(
    serve: Callable[[], HealthServer], registry: CollectorRegistry
) -> None:
    Counter("iotad_test_events", "Events seen by the test.", registry=registry).inc(3)
    server = serve()
    status, headers, body = request(server, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert "iotad_test_events_total 3.0" in body.decode().splitlines()
    status, headers, body = request(
        server, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.decode().rstrip().endswith("# EOF")


def test_head_sends_the_headers_without_a_body(
    serve: Callable[[], HealthServer], readiness: Readiness
) -> None:
    readiness.answer = (True, "ready")
    server = serve()
    status, headers, body = request(server, "/readyz", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(len(b"ready\n"))


def test_an_unknown_path_is_404_naming_the_endpoints(serve: Callable[[], HealthServer]) -> None:
    status, _, body = request(serve(), "/nope")
    assert status == 404
    assert all(p in body.decode() for p in ("/metrics", "/healthz", "/readyz"))


def test_port_zero_reports_the_bound_port_and_stop_closes_it(
    registry: CollectorRegistry, readiness: Readiness
) -> None:
    server = HealthServer(registry, readiness, host="127.0.0.1", port=0)
    assert server.port == 0
    server.start()
    port = server.port
    assert port != 0
    assert request(server, "/healthz")[0] == 200
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_taken_port_raises_at_start(registry: CollectorRegistry, readiness: Readiness) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        server = HealthServer(registry, readiness, host="127.0.0.1", port=port)
        with pytest.raises(OSError):
            server.start()
