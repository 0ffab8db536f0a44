"""Sparkplug B turned on in the compose stack, run for real: the worker with the compose
environment and its commented Sparkplug lines uncommented, on a mosquitto with the shipped
ACL, as user `iotad`; an edge node as user `simulator`. The worker asks the node for a
rebirth when it cannot read its DATA, the request reaches the node, and the node's BIRTH
and DATA become readings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from detector.worker.sparkplug_schema import DataType, Payload
from tests.conftest import TINY_START_TS, WorkerProcess
from tests.deploy.services import MOSQUITTO, MOSQUITTO_PASSWD, DeployBroker, service_secrets
from tests.deploy.test_compose import COMPOSE_FILE, commented_env, expand, rules_source
from tests.deploy.test_mosquitto_acl import Client, wait_until
from tests.sparkplug_payloads import birth, data

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (MOSQUITTO and MOSQUITTO_PASSWD),
        reason="mosquitto / mosquitto_passwd not found (scripts/system-deps.sh installs them)",
    ),
]

NODE = "spBv1.0/plant1/{}/gw1"
DEVICE = "spBv1.0/plant1/{}/gw1/press4"
T0_MS = int((TINY_START_TS + 30_000_000) * 1000)  # recent enough for the time checks


@pytest.fixture
def stack(tiny_artifact: Path, tmp_path: Path) -> Iterator[tuple[DeployBroker, WorkerProcess]]:
    (tmp_path / "mosquitto").mkdir()
    broker = DeployBroker(tmp_path / "mosquitto")
    worker: WorkerProcess | None = None
    try:
        compose = yaml.safe_load(COMPOSE_FILE.read_text())
        service = compose["services"]["worker"]
        env = {k: expand(str(v)) for k, v in service["environment"].items()}
        env.update(commented_env("worker"))  # the Sparkplug lines, uncommented
        # What ties the compose environment to containers: host names and mount points.
        for key in ("IOTAD_MQTT__HOST", "IOTAD_MODEL__PATH", "IOTAD_WORKER_ID"):
            env.pop(key)
        env.pop("IOTAD_ALERTMANAGER__URL")
        env.pop("IOTAD_ALERTMANAGER__EXTERNAL_URL")
        env["IOTAD_CHECKPOINT__PATH"] = str(tmp_path / "state.npz")
        env["IOTAD_RULES__PATH"] = str(rules_source(service))
        secrets = service_secrets(service, broker.secrets_dir, tmp_path / "run")
        env["IOTAD_SECRETS_DIR"] = str(secrets)
        worker = WorkerProcess(broker, tiny_artifact, tmp_path, "iotad-sparkplug", env)  # type: ignore[arg-type]
        worker.start()
        worker.wait_ready(60)
        yield broker, worker
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def test_rebirth_request_reaches_the_edge_node(stack: tuple[DeployBroker, WorkerProcess]) -> None:
    broker, worker = stack
    assert worker.env["IOTAD_PAYLOAD__SPARKPLUG_REBIRTH"] == "true"
    assert json.loads(worker.env["IOTAD_PAYLOAD__FORMATS"]) == {"spBv1.0/#": "sparkplug"}
    edge = Client(broker, "simulator", broker.passwords["simulator"])
    try:
        assert edge.ok
        edge.subscribe(NODE.format("NCMD"))
        # The worker started after the node's BIRTH: it cannot read this DATA, and asks.
        edge.publish(DEVICE.format("DDATA"), data([(1, 41.0)], DataType.Double, ts_ms=T0_MS))
        worker.wait_metric(
            "iotad_readings_rejected_total", lambda v: v >= 1, reason="unknown_alias"
        )
        edge.wait_for(NODE.format("NCMD"), timeout_s=20)
        ((_topic, request),) = edge.received
        (metric,) = Payload.FromString(request).metrics
        assert (metric.name, metric.boolean_value) == ("Node Control/Rebirth", True)
        assert worker.sample("iotad_sparkplug_rebirth_requests_total") == 1
        # The node answers with its BIRTHs; its DATA is read again.
        edge.publish(NODE.format("NBIRTH"), birth([], bdseq=1, ts_ms=T0_MS + 1000))
        edge.publish(
            DEVICE.format("DBIRTH"), birth([("temp", 1, DataType.Double, 40.5)], ts_ms=T0_MS + 1000)
        )
        edge.publish(DEVICE.format("DDATA"), data([(1, 41.0)], DataType.Double, ts_ms=T0_MS + 2000))
        worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= 2)
        wait_until(lambda: worker.sample("iotad_sparkplug_nodes") == 1)
    finally:
        edge.close()
