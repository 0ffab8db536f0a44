"""The compose profile scale-out without Docker: the same configs and wiring, as processes.

Three NATS nodes run deploy/nats/nats.conf (passwords and routes from deploy's scripts),
three workers run with the environment of the compose services iotad-shard-<i> (only the
server URLs, ports and mount points are local), Prometheus runs deploy/prometheus with the
rules and finds the workers as its DNS job would, and Alertmanager runs the stack's config.
Readings go in over MQTT 3.1.1 as the `simulator` user; each device must be scored by the
worker whose shard owns its partition, the anomaly must reach Alertmanager and an MQTT
reader, and every metric and dashboard query must exist.

Needs the NATS worker of issue 12 (IOTAD_SOURCE=nats): before the nats branch is merged the
workers refuse these settings and the fixture fails.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_SERIES, TINY_START_TS, TINY_STEP_S, WorkerProcess, tiny_value
from tests.deploy.nats_cluster import NATS_SERVER, DeployNatsCluster
from tests.deploy.promql_names import metric_names_in_deploy
from tests.deploy.services import (
    ALERTMANAGER,
    DEPLOY,
    PROMETHEUS,
    DeployPrometheus,
    RealAlertmanager,
    service_secrets,
    wait_for,
)
from tests.deploy.test_compose import expand, rules_source
from tests.deploy.test_nats_config import MqttClient, partition_of
from tests.deploy.test_stack_local import dashboard_queries_answer, exported_names

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (NATS_SERVER and ALERTMANAGER and PROMETHEUS),
        reason="needs nats-server, alertmanager and prometheus (scripts/system-deps.sh)",
    ),
]

ROOT = DEPLOY.parent
SHIFT_AT = 60  # line2/temperature: +20 from this step on
STEPS = 100
FIRST_STEP = 1500  # where the tiny artifact's training data ends


class Stack:
    def __init__(self, cluster: DeployNatsCluster, am: RealAlertmanager) -> None:
        self.cluster, self.am = cluster, am
        self.workers: dict[str, WorkerProcess] = {}  # by shard "i/N"
        self.prometheus: DeployPrometheus | None = None
        self.reader: MqttClient | None = None


def shard_services() -> dict[str, dict[str, Any]]:
    """Compose service name -> the service (environment defaults expanded)."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return {
        name: {**svc, "environment": {k: expand(str(v)) for k, v in svc["environment"].items()}}
        for name, svc in compose["services"].items()
        if "IOTAD_SHARD" in svc.get("environment", {})
    }


@pytest.fixture(scope="module")
def stack(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("nats-stack")
    started: list[Any] = []
    try:
        for sub in ("nats", "am", "workers", "prometheus"):
            (tmp / sub).mkdir()
        cluster = DeployNatsCluster(tmp / "nats")
        started.append(cluster)
        am = RealAlertmanager(
            tmp / "am", config=(DEPLOY / "alertmanager" / "alertmanager.yml").read_text()
        )
        started.append(am)
        s = Stack(cluster, am)
        targets = {"alertmanager": f"127.0.0.1:{am.port}"}
        for name, svc in shard_services().items():
            env = svc["environment"]
            # What ties the compose environment to containers: host names and mount points.
            env.pop("IOTAD_MODEL__PATH")
            env["IOTAD_RULES__PATH"] = str(rules_source(svc))  # the shipped rules file
            env["IOTAD_NATS__URLS"] = ",".join(cluster.urls)
            # The secrets made by deploy/init-secrets.sh that compose mounts into the worker.
            secrets = service_secrets(svc, cluster.secrets_dir, tmp / "workers" / f"{name}-run")
            env["IOTAD_SECRETS_DIR"] = str(secrets)
            env["IOTAD_ALERTMANAGER__URL"] = am.url
            env["IOTAD_METRICS__SERIES_DEVICES"] = "line1,line2"
            no_mqtt: Any = SimpleNamespace(host="127.0.0.1", port=1)  # IOTAD_SOURCE=nats
            worker = WorkerProcess(
                no_mqtt, tiny_artifact, tmp / "workers", env["IOTAD_WORKER_ID"], env
            )
            started.append(worker)
            worker.start()
            s.workers[env["IOTAD_SHARD"]] = worker
            targets[name] = f"127.0.0.1:{worker.metrics_port}"
        for worker in s.workers.values():
            worker.wait_ready(120)
        s.prometheus = DeployPrometheus(tmp / "prometheus", targets)
        started.append(s.prometheus)
        prom = s.prometheus
        wait_for(lambda: len(prom.query("iotad_shard_info")) == 3, 30, "3 scraped")

        s.reader = MqttClient(cluster.mqtt_port(2), "reader", cluster.passwords["reader"], "r1")
        assert s.reader.connected.wait(10) and not s.reader.rc.is_failure, s.reader.rc
        subscribed = threading.Event()
        s.reader.client.on_subscribe = lambda *_a: subscribed.set()
        s.reader.client.subscribe("alerts/#", qos=1)
        assert subscribed.wait(10)

        publish_as_device(cluster, readings())
        total = STEPS * len(TINY_SERIES) + 1
        wait_for(
            lambda: sum(w.sample("iotad_readings_total") for w in s.workers.values()) >= total,
            120,
            "every reading received",
        )
        # The malformed message came last: rates need two scrapes of its counter.
        wait_for(
            lambda: prom.query("count_over_time(iotad_readings_rejected_total[1m]) > 1"),
            30,
            "two scrapes after the last reading",
        )
        yield s
    finally:
        if "s" in locals() and s.reader is not None:
            s.reader.close()
        for proc in reversed(started):
            proc.stop()


def readings() -> list[tuple[str, bytes]]:
    """The tiny artifact's series continued, a level shift injected, one malformed message."""
    rng = np.random.default_rng(3)
    out = []
    for step in range(STEPS):
        i = FIRST_STEP + step
        for key in TINY_SERIES:
            value = tiny_value(key, i) + rng.normal(0.0, 0.1)
            if key == "line2/temperature" and step >= SHIFT_AT:
                value += 20.0
            ts = TINY_START_TS + i * TINY_STEP_S
            out.append((f"sensors/{key}", json.dumps({"ts": ts, "value": value}).encode()))
    out.append(("sensors/line1/temperature", b"{not json"))
    return out


def publish_as_device(cluster: DeployNatsCluster, messages: list[tuple[str, bytes]]) -> None:
    sim = MqttClient(cluster.mqtt_port(0), "simulator", cluster.passwords["simulator"], "gw")
    try:
        assert sim.connected.wait(10) and not sim.rc.is_failure, sim.rc
        infos = [sim.client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        sim.close()


def owner(device: str, n: int) -> str:
    return f"{partition_of(device) % n}/{n}"


def test_each_device_is_scored_by_the_shard_owning_its_partition(stack: Stack) -> None:
    n = len(stack.workers)
    per_device = {"line1": 2 * STEPS + 1, "line2": STEPS}  # + the malformed message
    expected = dict.fromkeys(stack.workers, 0.0)
    for device, count in per_device.items():
        expected[owner(device, n)] += count
    got = {shard: w.sample("iotad_readings_total") for shard, w in stack.workers.items()}
    assert got == expected
    for shard, worker in stack.workers.items():
        assert worker.sample("iotad_shard_info", shard=shard, source="nats") == 1
        owned = worker.sample("iotad_partitions_owned")
        i = int(shard.split("/")[0])
        assert owned == len([p for p in range(64) if p % n == i])


def test_anomaly_reaches_alertmanager_and_mqtt_readers(stack: Stack) -> None:
    def shifted() -> list[dict[str, Any]]:
        return [
            a
            for a in stack.am.alerts()
            if a["labels"].get("device") == "line2" and a["labels"].get("metric") == "temperature"
        ]

    (alert,) = wait_for(shifted, 30, "SensorAnomaly for line2/temperature")
    assert alert["labels"]["alertname"] == "SensorAnomaly"
    env = next(iter(shard_services().values()))["environment"]
    assert alert["generatorURL"] == env["IOTAD_ALERTMANAGER__EXTERNAL_URL"]
    assert stack.reader is not None
    topics = wait_for(lambda: {t for t, _ in stack.reader.messages}, 30, "an MQTT alert")  # type: ignore[union-attr]
    assert "alerts/line2/temperature" in topics


def test_every_metric_in_dashboards_and_rules_is_exported(stack: Stack) -> None:
    exported: set[str] = set()
    for worker in stack.workers.values():
        exported |= exported_names(worker)
    assert metric_names_in_deploy(ROOT) - exported - {"up"} == set()


def test_prometheus_sees_every_shard_and_no_shard_alert(stack: Stack) -> None:
    prom = stack.prometheus
    assert prom is not None
    up = wait_for(lambda: prom.query('up{job="iotad"} == 1'), 30, "the shards scraped")
    assert len(up) == 3
    assert {r["metric"]["instance"] for r in up} == {f"{n}:9108" for n in shard_services()}
    n = len(stack.workers)
    owners = {owner("line1", n), owner("line2", n)}

    def shards_reading() -> set[str]:
        return {r["metric"]["shard"] for r in prom.query("job_shard:iotad_readings:rate5m > 0")}

    # A shard's rate needs two of its samples in the recording rule's window: the shards
    # appear one after another, so wait for the set, not for the first of them.
    wait_for(lambda: shards_reading() >= owners, 120, "a rate on both owning shards")
    assert shards_reading() == owners
    pending = wait_for(lambda: prom.query("job_partition:iotad_nats_pending_messages:max"), 30)
    assert len(pending) == 64  # every partition has an owner reporting it
    assert not prom.query('ALERTS{alertname=~"IotadShard.*|IotadWorkerDown"}')


def test_every_dashboard_query_runs(stack: Stack) -> None:
    prom = stack.prometheus
    assert prom is not None
    wait_for(lambda: prom.query("iotad_nats_redelivered_total"), 30, "a scrape")
    # the MQTT workers' connection (those of NATS workers are shown beside it)
    empty, checked = dashboard_queries_answer(prom, {"iotad_mqtt_connected"})
    assert checked >= 30
    assert empty == []
