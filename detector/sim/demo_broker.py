"""The demo's MQTT broker: a private mosquitto when one is installed, else amqtt in-process.

`start_broker("auto" | "mosquitto" | "embedded")` returns a started `DemoBroker`; `stop()`
ends it and removes what it wrote. Neither ever touches a system broker: mosquitto gets a
temporary config with one loopback listener on a free port, and amqtt listens on loopback
in a thread of this process. amqtt speaks MQTT 3.1.1 only, so `mqtt_version` tells the
worker and the simulator which protocol to use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

BROKER_CHOICES = ("auto", "mosquitto", "embedded")
# Where distributions put mosquitto when /usr/sbin is not on a user's PATH.
_MOSQUITTO_PATHS = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class BrokerError(RuntimeError):
    """The broker could not be started; the message says why in one line."""


class DemoBroker(Protocol):
    """A started broker the demo owns."""

    kind: str
    host: str
    port: int
    mqtt_version: str
    pid: int | None
    version: str

    def stop(self) -> None: ...


def find_mosquitto() -> str | None:
    """The mosquitto executable, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in _MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound on `host` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class MosquittoBroker:
    """A mosquitto process of our own: temp config, one loopback listener, no persistence."""

    executable: str
    host: str = "127.0.0.1"
    port: int = 0
    kind: str = "mosquitto"
    mqtt_version: str = "5"
    version: str = ""
    workdir: Path | None = None
    pid: int | None = None
    """The process id, kept after `stop` (to check that it is gone)."""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> MosquittoBroker:
        self.port = self.port or free_port(self.host)
        self.workdir = Path(tempfile.mkdtemp(prefix="iotad-demo-mosquitto-"))
        conf = self.workdir / "mosquitto.conf"
        # Log to stderr (a file we opened): as root, mosquitto drops to its own user, who
        # could not write into our 0700 temp dir.
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        self.version = _mosquitto_version(self.executable)
        with open(self.workdir / "mosquitto.log", "wb") as log:
            # Its own session: a Ctrl-C in the terminal reaches the demo, which stops the
            # broker last (alerts still in flight must get through).
            self._proc = subprocess.Popen(
                [self.executable, "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # the demo starts it before other threads
            )
        self.pid = self._proc.pid
        deadline = time.monotonic() + timeout_s
        while not _accepts(self.host, self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                why = self._log_tail() or f"exit code {self._proc.poll()}"
                self.stop()
                raise BrokerError(f"mosquitto did not start on {self.host}:{self.port}: {why}")
            time.sleep(0.05)
        return self

    def _log_tail(self) -> str:
        path = self.workdir / "mosquitto.log" if self.workdir else None
        if path is None or not path.exists():
            return ""
        lines = path.read_text(errors="replace").strip().splitlines()
        return " / ".join(lines[-3:])

    def stop(self) -> None:
        """Terminate the process (kill after a grace period) and remove the temp dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the demo dies, even by SIGKILL,
    so a killed demo never leaves its broker behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _mosquitto_version(executable: str) -> str:
    # `mosquitto -h` prints "mosquitto version 2.0.18" first (and exits non-zero).
    try:
        out = subprocess.run(
            [executable, "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    first = out.splitlines()[0] if out else ""
    return first.rsplit(" ", 1)[-1] if "version" in first else ""


class EmbeddedBroker:
    """amqtt (pure Python, MQTT 3.1.1 only) on its own event loop in a daemon thread."""

    kind = "embedded"
    mqtt_version = "3.1.1"
    pid: int | None = None

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.version = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> EmbeddedBroker:
        try:
            import amqtt
            from amqtt.broker import Broker  # noqa: F401 (fail here, not in the thread)
        except ImportError as exc:
            raise BrokerError(
                f"the embedded broker needs amqtt ({exc}); pip install 'iotad[demo]', "
                "or install mosquitto"
            ) from None
        self.version = getattr(amqtt, "__version__", "")
        # amqtt logs every connection at INFO and some shutdown races as errors.
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        self.port = self.port or free_port(self.host)
        self._thread = threading.Thread(target=self._run, name="iotad-demo-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            self.stop()
            raise BrokerError(f"amqtt did not start on {self.host}:{self.port}: {self._error}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start() or ignored while stopping
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from amqtt.broker import Broker

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only anonymous auth: no $SYS publisher, no packet logger.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = Broker(config)
        await broker.start()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await broker.shutdown()

    def stop(self) -> None:
        """Shut the broker down and join its thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S * 2)
            self._thread = None


def start_broker(choice: str = "auto", host: str = "127.0.0.1") -> DemoBroker:
    """Start the broker `choice` asks for; "auto" prefers an installed mosquitto.

    Raises `BrokerError` when the asked-for broker is missing or does not come up (with
    "auto", a mosquitto that fails falls back to the embedded broker).
    """
    if choice not in BROKER_CHOICES:
        raise ValueError(f"broker must be one of {', '.join(BROKER_CHOICES)}")
    if choice in ("auto", "mosquitto"):
        executable = find_mosquitto()
        if executable is None:
            if choice == "mosquitto":
                raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        else:
            try:
                return MosquittoBroker(executable, host).start()
            except BrokerError:
                if choice == "mosquitto":
                    raise
    return EmbeddedBroker(host).start()
