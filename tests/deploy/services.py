"""Real mosquitto, Alertmanager and Prometheus processes running the configs in deploy/.

The configs are the ones the compose stack mounts; only what ties them to containers is
rewritten (paths, listen addresses, the hosts of scrape targets), so a test exercises what
production runs. Each service listens on a free loopback port and keeps its state in a
temp directory.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
# Upstream names the binary `alertmanager`, Debian `prometheus-alertmanager`.
ALERTMANAGER = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
PROMETHEUS = shutil.which("prometheus")

# The worker's secret is named like its setting; the others like the compose secrets.
SECRET_OF_USER = {
    "iotad": "iotad_mqtt__password",
    "simulator": "mqtt_simulator_password",
    "reader": "mqtt_reader_password",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll `cond` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = cond()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        time.sleep(0.05)


def http_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.load(resp)


def service_secrets(service: dict[str, Any], secrets_dir: Path, out: Path) -> Path:
    """`out` holding the secrets a compose service mounts (and no others), copied from the
    directory init-secrets.sh filled: what the service sees as /run/secrets."""
    out.mkdir(parents=True, exist_ok=True)
    for name in service.get("secrets", []):
        shutil.copy(secrets_dir / name, out / name)
    return out


class _Process:
    """A child process with its log in a file; `stop` terminates it (kill after 10 s)."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_http(
        self,
        url: str,
        timeout_s: float = 15.0,
        opener: Callable[[str, float], Any] = lambda url, t: urllib.request.urlopen(url, timeout=t),
    ) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with opener(url, 1.0) as resp:
                    return resp.status == 200
            except (urllib.error.URLError, OSError):
                return False

        try:
            wait_for(up, timeout_s, f"{url} answering")
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class DeployBroker(_Process):
    """mosquitto with deploy/mosquitto/* and secrets made by deploy's own scripts."""

    host = "127.0.0.1"

    def __init__(self, tmp: Path) -> None:
        assert MOSQUITTO and MOSQUITTO_PASSWD
        self.secrets_dir = tmp / "secrets"
        env = {**os.environ, "SECRETS_OUT": str(self.secrets_dir)}
        env["SECRETS_DIR"] = str(self.secrets_dir)
        for script, args in (
            ("init-secrets.sh", []),
            ("mosquitto/make-passwd.sh", [str(tmp / "passwd")]),
        ):
            subprocess.run(
                ["sh", str(DEPLOY / script), *args],
                env=env,
                check=True,
                timeout=30,
                capture_output=True,
            )
        self.password_file = tmp / "passwd"
        self.passwords = {
            user: (self.secrets_dir / name).read_text() for user, name in SECRET_OF_USER.items()
        }
        self.port = free_port()
        conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
        for old, new in {
            "/mosquitto/auth/passwd": str(self.password_file),
            "/mosquitto/config/acl": str(DEPLOY / "mosquitto" / "acl"),
            "/mosquitto/data/": f"{tmp}/",
            "listener 1883": f"listener {self.port} 127.0.0.1",
        }.items():
            assert old in conf, old
            conf = conf.replace(old, new)
        # As root mosquitto would drop to the `mosquitto` user, which cannot enter tmp_path.
        conf += f"\nuser {getpass.getuser()}\n"
        (tmp / "mosquitto.conf").write_text(conf)
        super().__init__([MOSQUITTO, "-c", str(tmp / "mosquitto.conf")], tmp / "mosquitto.log")

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited:\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(listening, 10, "mosquitto listening")


TEST_ALERTMANAGER_CONFIG = """\
route:
  receiver: blackhole
  group_wait: 1s
receivers:
  - name: blackhole
"""


class RealAlertmanager(_Process):
    """An Alertmanager on a free port (or `port`), clustering off, state in `tmp`.

    `config` defaults to a minimal one; pass deploy/alertmanager/alertmanager.yml's text to
    run the stack's. `web` is the text of a ``--web.config.file`` (TLS, basic auth): then
    `url` is https when it names a certificate, and the test's own calls (readiness,
    `alerts`) authenticate with `auth` (user, password) and trust `ca_file`.
    """

    def __init__(
        self,
        tmp: Path,
        port: int | None = None,
        config: str | None = None,
        *,
        web: str | None = None,
        auth: tuple[str, str] | None = None,
        ca_file: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
    ) -> None:
        assert ALERTMANAGER
        self.port = port or free_port()
        tls = web is not None and "tls_server_config" in web
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._auth = auth
        self._context: ssl.SSLContext | None = None
        if tls:
            self._context = ssl.create_default_context(cafile=ca_file)
            if client_cert is not None:
                self._context.load_cert_chain(*client_cert)
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "alertmanager.yml"
        path.write_text(config or TEST_ALERTMANAGER_CONFIG)
        args = [
            ALERTMANAGER,
            f"--config.file={path}",
            f"--storage.path={tmp / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no gossip port, no peers
        ]
        if web is not None:
            (tmp / "web.yml").write_text(web)
            args.append(f"--web.config.file={tmp / 'web.yml'}")
        super().__init__(args, tmp / "alertmanager.log")
        self._wait_http(self.url + "/-/ready", opener=self._get)

    def _get(self, url: str, timeout_s: float) -> Any:
        req = urllib.request.Request(url)
        if self._auth is not None:
            pair = f"{self._auth[0]}:{self._auth[1]}".encode()
            req.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
        return urllib.request.urlopen(req, timeout=timeout_s, context=self._context)

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode(params)
        with self._get(f"{self.url}/api/v2/alerts?{query}", 5.0) as resp:
            return json.load(resp)


class DeployPrometheus(_Process):
    """Prometheus with deploy/prometheus/prometheus.yml and its rules, every 1 s.

    `targets` maps the compose service names in the config (``worker``, ``alertmanager``)
    to ``host:port`` here; jobs whose targets are not mapped are dropped.
    """

    def __init__(self, tmp: Path, targets: dict[str, str]) -> None:
        assert PROMETHEUS
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started_at = time.time()
        config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "*.yml")]

        def local(target: str) -> str | None:
            host = target.rsplit(":", 1)[0]
            if host == "localhost":
                return f"127.0.0.1:{self.port}"
            return targets.get(host)

        jobs = []
        for job in config["scrape_configs"]:
            job["scrape_interval"] = "1s"
            for dns in job.pop("dns_sd_configs", []):
                # DNS names as static targets, with the label the relabelling reads.
                job.setdefault("static_configs", []).extend(
                    {"targets": [f"{name}:{dns['port']}"], "labels": {"__meta_dns_name": name}}
                    for name in dns["names"]
                )
            for static in job["static_configs"]:
                static["targets"] = [t for t in map(local, static["targets"]) if t]
            if all(static["targets"] for static in job["static_configs"]):
                jobs.append(job)
        config["scrape_configs"] = jobs
        for am in config["alerting"]["alertmanagers"]:
            for static in am["static_configs"]:
                static["targets"] = [t for t in map(local, static["targets"]) if t]
        path = tmp / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        super().__init__(
            [
                PROMETHEUS,
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            tmp / "prometheus.log",
        )
        self._wait_http(self.url + "/-/ready", timeout_s=30)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = http_json(url)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def ever(self, expr: str) -> list[dict[str, Any]]:
        """Range query over this Prometheus's whole life, every second: the series `expr`
        returned at any time. A panel shows a time range, and an anomaly or a rejection
        rate can be over by the time a test looks."""
        args = {"query": expr, "start": self.started_at, "end": time.time(), "step": 1}
        url = f"{self.url}/api/v1/query_range?" + urllib.parse.urlencode(args)
        body = http_json(url)
        assert body["status"] == "success", body
        return body["data"]["result"]
