"""A real mosquitto broker in a temp dir, and publishing to it with acknowledgements."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from support.ports import free_port, wait_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    """A mosquitto broker in a temp dir, on 127.0.0.1:`port`.

    Args:
        workdir: where the config and log go.
        port: the port (default: a free one, kept across restarts).
        conf: extra config lines (e.g. ``["max_queued_messages 300000"]``).
    """

    BASE_CONF = (
        "persistence false",
        "allow_anonymous true",
        "max_queued_messages 100000",
        "log_type error",
        "log_type warning",
    )

    def __init__(self, workdir: Path, port: int | None = None, conf: Sequence[str] = ()) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = list(conf)
        self.host = "127.0.0.1"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def write_config(self) -> None:
        lines = [f"listener {self.port} {self.host}", *self.BASE_CONF]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root mosquitto drops to user "mosquitto", who cannot read pytest's 0700 tmp
            # dirs (password files, certificates, its own log).
            lines.append("user root")
        lines.extend(self.conf)
        lines.append(f"log_dest file {self.log_path}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        if self.running:
            return self
        self.write_config()
        with open(self.workdir / "mosquitto.out", "ab") as out:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_port(self.port, timeout_s)
        except TimeoutError:
            self.stop()
            logs = [
                p.read_text(errors="replace")
                for p in (self.log_path, self.workdir / "mosquitto.out")
                if p.exists()
            ]
            raise RuntimeError(
                f"mosquitto did not start on port {self.port}: {' '.join(logs)}"
            ) from None
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def restart(self, conf: Sequence[str] | None = None) -> Mosquitto:
        """Stop and start again on the same port; `conf` replaces the extra lines if given."""
        self.stop()
        if conf is not None:
            self.conf = list(conf)
        return self.start()


def publish_all(
    port: int,
    messages: Sequence[tuple[str, bytes | str]],
    qos: int = 1,
    host: str = "127.0.0.1",
    timeout_s: float = 30.0,
    retain: bool = False,
) -> None:
    """Publish `messages` in order and return once the broker acknowledged all of them."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    try:
        infos = []
        for topic, payload in messages:
            infos.append(client.publish(topic, payload, qos=qos, retain=retain))
            # paho stalls past 65,535 outstanding QoS 1 messages: keep the window bounded.
            if qos and len(infos) % 10_000 == 0:
                infos[-10_000].wait_for_publish(timeout_s)
        for info in infos:
            info.wait_for_publish(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
