"""The NATS source over mutual TLS with user and password against a real nats-server: it
connects and consumes; a wrong password or an unknown CA is one clear line and exit 1, and
the password is never logged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.nats_servers import PARTITIONS, NatsNode
from tests.conftest import WorkerProcess
from tests.integration.conftest import _need_nats
from tests.pki import make_ca, make_cert

pytestmark = pytest.mark.integration
PASSWORD = "s3cret-nats-pw"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "pki"
    ca = make_ca(d, "ca")
    rogue = make_ca(d, "rogue")
    srv = make_cert(d, "localhost", ca, "subjectAltName=DNS:localhost,IP:127.0.0.1")
    client = make_cert(d, "iotad-worker", ca, "extendedKeyUsage=clientAuth")
    return {
        "ca": ca[1],
        "rogue": rogue[1],
        "srv.key": srv[0],
        "srv.pem": srv[1],
        "client.key": client[0],
        "client.pem": client[1],
    }


@pytest.fixture
def tls_server(tmp_path: Path, pki: dict[str, Path]) -> Iterator[NatsNode]:
    _need_nats()
    (tmp_path / "nats").mkdir()
    node = NatsNode(tmp_path / "nats", "tls0", PARTITIONS)
    node.extra_conf = (
        f'tls {{ cert_file: "{pki["srv.pem"]}", key_file: "{pki["srv.key"]}", '
        f'ca_file: "{pki["ca"]}", verify: true }}\n'
        f'authorization {{ user: iotad, password: "{PASSWORD}" }}\n'
    )
    yield node.start()
    node.stop()


def worker(
    node: NatsNode, artifact: Path, workdir: Path, pki: dict[str, Path], **env: str
) -> WorkerProcess:
    base = {
        "IOTAD_SOURCE": "nats",
        "IOTAD_NATS__URLS": f"tls://127.0.0.1:{node.port}",
        "IOTAD_NATS__PARTITIONS": str(PARTITIONS),
        "IOTAD_NATS__USER": "iotad",
        "IOTAD_NATS__PASSWORD": PASSWORD,
        "IOTAD_NATS__CA_FILE": str(pki["ca"]),
        "IOTAD_NATS__CERT_FILE": str(pki["client.pem"]),
        "IOTAD_NATS__KEY_FILE": str(pki["client.key"]),
        "IOTAD_NATS__CONNECT_TIMEOUT_S": "3",
    }
    base.update(env)
    return WorkerProcess(node, artifact, workdir, "w-tls", base)  # type: ignore[arg-type]


def test_mutual_tls_and_password(
    tls_server: NatsNode, tiny_artifact: Path, tmp_path: Path, pki: dict[str, Path]
) -> None:
    w = worker(tls_server, tiny_artifact, tmp_path, pki).start()
    try:
        w.wait_ready(timeout_s=120)
        assert w.sample("iotad_partitions_owned") == PARTITIONS
        assert w.sample("iotad_nats_connected") == 1
    finally:
        w.stop()
    assert PASSWORD not in w.log()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"IOTAD_NATS__PASSWORD": "wrong"}, "uthorization"),
        ({"IOTAD_NATS__CA_FILE": "rogue"}, "certificate verif"),
    ],
)
def test_refused_connections_say_why_and_exit_1(
    tls_server: NatsNode,
    tiny_artifact: Path,
    tmp_path: Path,
    pki: dict[str, Path],
    env: dict[str, str],
    says: str,
) -> None:
    env = {k: str(pki["rogue"]) if v == "rogue" else v for k, v in env.items()}
    w = worker(tls_server, tiny_artifact, tmp_path, pki, **env).start()
    try:
        code = w.wait(120)
    finally:
        w.stop()
    log = w.log()
    assert code == 1, log[-2000:]
    final = [ln for ln in log.splitlines() if "ERROR iotad.run" in ln]
    assert final and says in final[-1], log[-2000:]  # the line that ends the run says why
    assert PASSWORD not in log and "wrong" not in log.replace("wrong_", "")
