"""`iotad run` as a subprocess, with its metrics read back over HTTP."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from support.mosquitto import Mosquitto, publish_all
from support.ports import free_port


class WorkerProcess:
    """`iotad run` as a subprocess against the test broker, with a free metrics port.

    Args:
        broker: the test broker.
        artifact: model artifact directory.
        workdir: where its log goes (``worker.log``).
        worker_id: stable id (the MQTT client id): reuse it to resume a session.
        env: extra IOTAD_* variables; args: extra flags.
    """

    def __init__(
        self,
        broker: Mosquitto,
        artifact: Path,
        workdir: Path,
        worker_id: str,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        import sys

        self.metrics_port = free_port()
        self.worker_id = worker_id
        self.log_path = Path(workdir) / f"{worker_id}.log"
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOTAD_")}
        base.update(
            {
                "IOTAD_MQTT__HOST": broker.host,
                "IOTAD_MQTT__PORT": str(broker.port),
                "IOTAD_MODEL__PATH": str(artifact),
                "IOTAD_METRICS__HOST": "127.0.0.1",
                "IOTAD_METRICS__PORT": str(self.metrics_port),
                "IOTAD_WORKER_ID": worker_id,
                # Test sessions expire soon after the worker goes: nothing piles up.
                "IOTAD_MQTT__SESSION_EXPIRY_S": "60",
                "IOTAD_MQTT__CONNECT_TIMEOUT_S": "10",
                "IOTAD_LOG__REJECT_INTERVAL_S": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        base.update(env or {})
        self.env = base
        self.args = [sys.executable, "-m", "detector", "run", "--env-file", "", *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> WorkerProcess:
        self.started_at = time.monotonic()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in wait/kill)
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.log_path.parent,
        )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def get(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def wait_ready(self, timeout_s: float = 30.0, poll_s: float = 0.05) -> float:
        """Seconds from start until /readyz said 200 (raises with the log if it never does)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            time.sleep(poll_s)
        raise TimeoutError(f"worker not ready after {timeout_s} s:\n{self.log()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Samples of /metrics as ``{(name, sorted labels): value}``."""
        from prometheus_client.parser import text_string_to_metric_families

        _, text = self.get("/metrics")
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_metric(
        self, name: str, predicate: Callable[[float], bool], timeout_s: float = 20.0, **labels: str
    ) -> float:
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.sample(name, **labels)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}{labels} = {value}:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def settle(self, port: int) -> None:
        """Return once the worker has fully handled every message delivered to it so far.

        A barrier, twice: a message it rejects as ``bad_topic`` (``sensors/settle/x/y``),
        and a wait for that count. Deliveries reach the worker in order (on reconnect,
        redeliveries first) and batches run one after another; the second barrier is
        published after the first was counted, so it lands in a later batch, and the
        earlier batches have finished by then (alerts and dead letters published). Each
        call adds two ``bad_topic`` rejections and two dead letters.
        """
        for _ in range(2):
            before = self.sample("iotad_readings_rejected_total", reason="bad_topic")
            publish_all(port, [("sensors/settle/x/y", b"1")])
            self.wait_metric(
                "iotad_readings_rejected_total",
                lambda v, before=before: v >= before + 1,
                reason="bad_topic",
            )

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout_s: float = 20.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout_s)
        self._log.close()
        return code

    def stop(self) -> None:
        """Kill if still running (cleanup)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
