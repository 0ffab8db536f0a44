"""TLS on the NATS cluster as docs/scale-out.md ("Security") tells an operator to turn it on:
the blocks printed there, added to deploy/nats/nats.conf, with a CA and a server certificate
made by openssl. Clients, MQTT devices and routes then speak TLS only."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.deploy.nats_cluster import NATS_SERVER, DeployNatsCluster

nats = pytest.importorskip("nats")

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(
    not (NATS_SERVER and OPENSSL), reason="needs nats-server and openssl"
)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "scale-out.md").read_text()
# The blocks of the doc, each a line of text to find there and where it goes in nats.conf.
CLIENT_TLS = 'tls { cert_file: "/etc/nats/tls/server.crt", key_file: "/etc/nats/tls/server.key" }'
MQTT_TLS = 'tls { cert_file: "/etc/nats/tls/server.crt", key_file: "/etc/nats/tls/server.key" }'
ROUTE_TLS = (
    'tls { cert_file: "/etc/nats/tls/server.crt", key_file: "/etc/nats/tls/server.key",'
    ' ca_file: "/etc/nats/tls/ca.crt", verify: true }'
)


def openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> None:
    """A CA, and a certificate for 127.0.0.1 signed by it, good for servers and clients
    (the routes use it both ways)."""
    d.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.crt", "-days", "1", "-subj", "/CN=iotad test CA", cwd=d)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=nats", cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf",
            cwd=d)  # fmt: skip


def test_the_blocks_are_the_docs() -> None:
    for block in (CLIENT_TLS, MQTT_TLS, ROUTE_TLS):
        assert block in DOC, block


def with_tls(certs: Path) -> Any:
    def transform(conf: str) -> str:
        def local(block: str) -> str:
            return block.replace("/etc/nats/tls", str(certs))

        conf = conf.replace("\nlisten: 127.0.0.1:", f"\n{local(CLIENT_TLS)}\nlisten: 127.0.0.1:", 1)
        conf = conf.replace("mqtt {\n", f"mqtt {{\n  {local(MQTT_TLS)}\n", 1)
        conf = conf.replace("cluster {\n", f"cluster {{\n  {local(ROUTE_TLS)}\n", 1)
        assert conf.count("tls { cert_file") == 3
        return conf

    return transform


@pytest.fixture(scope="module")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DeployNatsCluster, Path]]:
    tmp = tmp_path_factory.mktemp("nats-tls")
    make_certs(tmp / "certs")
    # DeployNatsCluster waits for the routes: they came up over TLS with verified certificates
    cluster = DeployNatsCluster(tmp / "cluster", transform=with_tls(tmp / "certs"))
    try:
        yield cluster, tmp / "certs"
    finally:
        cluster.stop()


async def connect(cluster: DeployNatsCluster, scheme: str, ctx: ssl.SSLContext | None) -> Any:
    urls = [u.replace("nats://", scheme) for u in cluster.urls]
    return await nats.connect(
        servers=urls, user="iotad", password=cluster.passwords["iotad"], tls=ctx,
        allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5,
    )  # fmt: skip


def test_clients_connect_over_tls_with_the_ca(tls_cluster: tuple[DeployNatsCluster, Path]) -> None:
    cluster, certs = tls_cluster
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))

    async def go() -> bool:
        nc = await connect(cluster, "tls://", ctx)
        try:
            return bool(nc.is_connected and nc._server_info.get("tls_required"))
        finally:
            await nc.close()

    assert asyncio.run(go())


def test_clients_without_the_ca_are_refused(tls_cluster: tuple[DeployNatsCluster, Path]) -> None:
    cluster, _ = tls_cluster
    with pytest.raises(Exception):  # noqa: B017 (nats-py raises several kinds)
        asyncio.run(connect(cluster, "tls://", ssl.create_default_context()))


def mqtt_connect(port: int, password: str, ca: Path | None) -> Any:
    done = threading.Event()
    result: list[Any] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set("simulator", password)
    if ca:
        client.tls_set(ca_certs=str(ca))
    client.on_connect = lambda _c, _u, _f, rc, _p=None: (result.append(rc), done.set())
    try:
        client.connect("127.0.0.1", port)
    except (OSError, ssl.SSLError) as exc:
        return exc
    client.loop_start()
    try:
        done.wait(10)
        return result[0] if result else None
    finally:
        client.disconnect()
        client.loop_stop()


def test_mqtt_devices_need_tls(tls_cluster: tuple[DeployNatsCluster, Path]) -> None:
    cluster, certs = tls_cluster
    rc = mqtt_connect(cluster.mqtt_port(), cluster.passwords["simulator"], certs / "ca.crt")
    assert rc is not None and not isinstance(rc, Exception) and not rc.is_failure, rc
    plain = mqtt_connect(cluster.mqtt_port(), cluster.passwords["simulator"], None)
    assert plain is None or isinstance(plain, Exception) or plain.is_failure
