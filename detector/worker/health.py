"""The worker's HTTP endpoint: /metrics, /healthz (alive) and /readyz (ready to work).

A small ``ThreadingHTTPServer`` on its own daemon thread; Prometheus scrapes and Kubernetes
probes never touch the detection thread.

/readyz answers what the worker's `ready()` says (`detector.worker.run_cli.Service.ready`): 503
while the model is not loaded, start-up has not finished, the detection thread is dead, or
the source (MQTT broker, NATS) is not connected. A saturated ingest queue is deliberately
not a readiness failure: it is backpressure under a burst or a reconnect backlog, and a
probe failing on it would flap with the load and take the pod out of its Service (and of
endpoint discovery) when it is busiest. A worker that falls behind shows as lag instead
(``iotad_lag_seconds``, the `IotadLagHigh` rule). ``iotad_ready`` exports the same answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("iotad.http")


class HealthServer:
    """Serves `registry` on /metrics and `ready()` on /readyz; /healthz is 200 while alive.

    Args:
        registry: what /metrics exposes.
        ready: returns ``(is_ready, reason)``; /readyz answers 200 or 503 with the reason.
        host, port: where to listen; port 0 picks a free one (see `port` after `start`).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, str]],
        host: str = "0.0.0.0",
        port: int = 9108,
    ) -> None:
        self.registry = registry
        self.ready = ready
        self.host = host
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises OSError if the port is taken."""
        handler = _make_handler(self.registry, self.ready)
        server = ThreadingHTTPServer((self.host, self._requested_port), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="iotad-http",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _make_handler(
    registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "iotad"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, encoder(registry), content_type)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                try:
                    ok, reason = ready()
                except Exception as exc:  # a probe must answer, whatever went wrong
                    ok, reason = False, f"readiness check failed: {exc}"
                self._send(
                    200 if ok else 503,
                    (reason or ("ready" if ok else "not ready")).encode() + b"\n",
                )
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def do_HEAD(self) -> None:
            self.do_GET()

        def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Scrapes every few seconds would fill the log; errors still go through log_error.
            pass

        def log_error(self, format: str, *args: object) -> None:
            log.debug("http: " + format, *args)

    return Handler
