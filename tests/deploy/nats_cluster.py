"""A real 3-node NATS cluster running deploy/nats/nats.conf, on free loopback ports.

What ties the config to containers is rewritten (listen addresses, the JetStream directory);
the users, permissions, subject mapping, cluster and MQTT settings are the file's own, and the
passwords and routes come from deploy's own scripts (init-secrets.sh, nats/make-auth.sh).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.services import DEPLOY, _Process, free_port, http_json, wait_for

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None
)
NATS_CONF = DEPLOY / "nats" / "nats.conf"
MAKE_AUTH = DEPLOY / "nats" / "make-auth.sh"
# user -> secret file (make-auth.sh's table, checked against it by the tests)
SECRET_OF_USER = {
    "iotad": "iotad_nats__password",
    "simulator": "mqtt_simulator_password",
    "reader": "mqtt_reader_password",
}
# The container addresses in nats.conf, and what a node on this host listens on instead.
CONTAINER_LISTENERS = {
    "client": "listen: 0.0.0.0:4222",
    "http": "http: 0.0.0.0:8222",
    "cluster": "  listen: 0.0.0.0:6222",
    "mqtt": "  listen: 0.0.0.0:1883",
}


@dataclass
class NodePorts:
    client: int
    http: int
    cluster: int
    mqtt: int


def make_secrets(tmp: Path) -> tuple[Path, dict[str, str]]:
    """Secrets as deploy/init-secrets.sh makes them; (directory, user -> password)."""
    secrets = tmp / "secrets"
    env = {**os.environ, "SECRETS_OUT": str(secrets)}
    subprocess.run(
        ["sh", str(DEPLOY / "init-secrets.sh")], env=env, check=True, timeout=30,
        capture_output=True,
    )  # fmt: skip
    return secrets, {u: (secrets / f).read_text() for u, f in SECRET_OF_USER.items()}


def make_auth(secrets: Path, out: Path, routes: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SECRETS_DIR": str(secrets)}
    return subprocess.run(
        ["sh", str(MAKE_AUTH), str(out), *routes],
        env=env, timeout=30, capture_output=True, text=True, check=False,
    )  # fmt: skip


def node_config(ports: NodePorts, store_dir: Path) -> str:
    """deploy/nats/nats.conf with this host's listeners and JetStream directory."""
    conf = NATS_CONF.read_text()
    for kind, old in CONTAINER_LISTENERS.items():
        assert conf.count(old + "\n") == 1, old
        new = old.replace("0.0.0.0", "127.0.0.1").rsplit(":", 1)[0]
        conf = conf.replace(old + "\n", f"{new}:{getattr(ports, kind)}\n")
    assert "store_dir: /data/jetstream" in conf
    return conf.replace("store_dir: /data/jetstream", f'store_dir: "{store_dir}"')


class NatsNode(_Process):
    def __init__(self, name: str, conf: Path, ports: NodePorts, log: Path) -> None:
        assert NATS_SERVER
        self.name, self.ports = name, ports
        self.url = f"nats://127.0.0.1:{ports.client}"
        self.monitor = f"http://127.0.0.1:{ports.http}"
        # The node's name comes from the environment, as in the containers.
        env = {**os.environ, "NATS_SERVER_NAME": name}
        super().__init__([NATS_SERVER, "-c", str(conf)], log, env)

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"{self.monitor}/healthz", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def routes(self) -> int:
        return http_json(f"{self.monitor}/routez")["num_routes"]


class DeployNatsCluster:
    """Three nodes of deploy/nats/nats.conf, routed to each other, JetStream meta leader up."""

    size = 3

    def __init__(self, tmp: Path, transform: Callable[[str], str] | None = None) -> None:
        """`transform` edits each node's config after the listeners are rewritten."""
        assert NATS_SERVER
        self.secrets_dir, self.passwords = make_secrets(tmp)
        ports = [NodePorts(free_port(), free_port(), free_port(), free_port()) for _ in "abc"]
        routes = [f"127.0.0.1:{p.cluster}" for p in ports]
        auth = tmp / "auth.conf"
        made = make_auth(self.secrets_dir, auth, routes)
        assert made.returncode == 0, made.stderr
        self.nodes: list[NatsNode] = []
        try:
            for i, p in enumerate(ports, start=1):
                node_dir = tmp / f"nats-{i}"
                (node_dir / "auth").mkdir(parents=True)
                shutil.copy(auth, node_dir / "auth" / "auth.conf")
                conf = node_config(p, node_dir / "jetstream")
                (node_dir / "nats.conf").write_text(transform(conf) if transform else conf)
                self.nodes.append(
                    NatsNode(f"nats-{i}", node_dir / "nats.conf", p, node_dir / "nats.log")
                )
            for node in self.nodes:
                wait_for(node.healthy, 30, f"{node.name} /healthz")
                wait_for(lambda n=node: n.routes() == self.size - 1, 30, f"{node.name} routes")
            # /healthz answers before the JetStream meta group has a leader.
            wait_for(self.meta_leader, 30, "a JetStream meta leader")
        except BaseException:
            self.stop()
            raise

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def meta_leader(self) -> str | None:
        for node in self.nodes:
            info = http_json(f"{node.monitor}/jsz").get("meta_cluster") or {}
            if info.get("leader"):
                return info["leader"]
        return None

    def mqtt_port(self, i: int = 0) -> int:
        return self.nodes[i].ports.mqtt

    def listening(self, port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
