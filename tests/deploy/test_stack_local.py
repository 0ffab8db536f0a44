"""The compose stack without Docker: the same configs and wiring, as local processes.

mosquitto runs deploy/mosquitto (ACL, password file from deploy's scripts), the worker runs
with the compose file's environment and reads its broker password from the secrets
directory, Alertmanager runs deploy/alertmanager/alertmanager.yml and Prometheus runs
deploy/prometheus/prometheus.yml with the rules. Readings go in as the `simulator` user and
must come out as a SensorAnomaly alert in Alertmanager and as series in Prometheus; every
metric the dashboards and rules use must exist, and every dashboard query must run.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml

from tests.conftest import (
    TINY_SERIES,
    TINY_START_TS,
    TINY_STEP_S,
    WorkerProcess,
    tiny_value,
)
from tests.deploy.promql_names import (
    HISTOGRAM_SUFFIXES,
    exprs_in_deploy,
    metric_names_in_deploy,
    metric_names_in_promql,
)
from tests.deploy.services import (
    ALERTMANAGER,
    DEPLOY,
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    PROMETHEUS,
    DeployBroker,
    DeployPrometheus,
    RealAlertmanager,
    service_secrets,
    wait_for,
)
from tests.deploy.test_compose import expand, rules_source

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (MOSQUITTO and MOSQUITTO_PASSWD and ALERTMANAGER and PROMETHEUS),
        reason="needs mosquitto, alertmanager and prometheus (scripts/system-deps.sh)",
    ),
]

ROOT = DEPLOY.parent
SHIFT_AT = 60  # line2/temperature: +20 from this step on; the alert stays firing
STEPS = 100
FIRST_STEP = 1500  # where the tiny artifact's training data ends


class Stack:
    def __init__(self, broker: DeployBroker, am: RealAlertmanager, worker: WorkerProcess) -> None:
        self.broker, self.am, self.worker = broker, am, worker
        self.prometheus: DeployPrometheus | None = None


@pytest.fixture(scope="module")
def stack(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    started: list[Any] = []
    try:
        for sub in ("mosquitto", "am", "worker", "prometheus"):
            (tmp / sub).mkdir()
        broker = DeployBroker(tmp / "mosquitto")
        started.append(broker)
        am = RealAlertmanager(
            tmp / "am", config=(DEPLOY / "alertmanager" / "alertmanager.yml").read_text()
        )
        started.append(am)

        compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
        env = {k: str(v) for k, v in compose["services"]["worker"]["environment"].items()}
        env = {k: expand(v) for k, v in env.items()}
        # What ties the compose environment to containers: host names and mount points.
        for key in ("IOTAD_MQTT__HOST", "IOTAD_MODEL__PATH", "IOTAD_WORKER_ID"):
            env.pop(key)
        env["IOTAD_ALERTMANAGER__URL"] = am.url
        # The secrets made by deploy/init-secrets.sh that compose mounts into the worker.
        secrets = service_secrets(compose["services"]["worker"], broker.secrets_dir, tmp / "run")
        env["IOTAD_SECRETS_DIR"] = str(secrets)
        env["IOTAD_METRICS__SERIES_DEVICES"] = "line1,line2"
        # The checkpoint's directory is the container's state volume: here a temp directory.
        (tmp / "state").mkdir()
        env["IOTAD_CHECKPOINT__PATH"] = str(tmp / "state" / "state.npz")
        # The rules file the compose stack mounts: the one shipped in deploy/rules.
        env["IOTAD_RULES__PATH"] = str(rules_source(compose["services"]["worker"]))
        worker = WorkerProcess(broker, tiny_artifact, tmp / "worker", "iotad-stack-test", env)  # type: ignore[arg-type]
        started.append(worker)
        worker.start()
        worker.wait_ready(60)

        s = Stack(broker, am, worker)
        s.prometheus = DeployPrometheus(
            tmp / "prometheus",
            {"worker": f"127.0.0.1:{worker.metrics_port}", "alertmanager": f"127.0.0.1:{am.port}"},
        )
        started.append(s.prometheus)
        # A first scrape before the readings, so that rate() sees them arrive.
        wait_for(lambda: s.prometheus.query("iotad_readings_total"), 20, "first scrape")  # type: ignore[union-attr]
        publish_as_simulator(broker, readings())
        worker.wait_metric("iotad_readings_total", lambda v: v >= STEPS * len(TINY_SERIES) + 1)
        yield s
    finally:
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


def publish_as_simulator(broker: DeployBroker, messages: list[tuple[str, bytes]]) -> None:
    connected = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set("simulator", broker.passwords["simulator"])
    client.on_connect = lambda *_a: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(5)
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_worker_authenticates_with_the_generated_secret(stack: Stack) -> None:
    assert stack.worker.sample("iotad_mqtt_connected") == 1
    assert stack.worker.sample("iotad_readings_accepted_total") == STEPS * len(TINY_SERIES)
    assert stack.worker.sample("iotad_readings_rejected_total", reason="malformed_json") == 1


def test_anomaly_reaches_alertmanager(stack: Stack) -> None:
    def shifted() -> list[dict[str, Any]]:
        return [
            a
            for a in stack.am.alerts()
            if a["labels"].get("device") == "line2" and a["labels"].get("metric") == "temperature"
        ]

    (alert,) = wait_for(shifted, 20, "SensorAnomaly for line2/temperature")
    assert alert["labels"]["alertname"] == "SensorAnomaly"
    assert alert["status"]["state"] == "active"
    assert alert["receivers"] == [{"name": "plant-maintenance"}]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    env = compose["services"]["worker"]["environment"]
    assert alert["generatorURL"] == env["IOTAD_ALERTMANAGER__EXTERNAL_URL"]
    assert stack.worker.sample("iotad_alertmanager_sent_total") >= 1


def test_prometheus_scrapes_and_records(stack: Stack) -> None:
    prom = stack.prometheus
    assert prom is not None
    wait_for(lambda: prom.query('up{job="iotad"} == 1'), 20, "worker scraped")
    rate = wait_for(lambda: prom.query("job:iotad_readings:rate5m > 0"), 20, "recording rule")
    assert rate[0]["metric"] == {"__name__": "job:iotad_readings:rate5m", "job": "iotad"}
    wait_for(
        lambda: prom.query('job_reason:iotad_readings_rejected:rate5m{reason="malformed_json"}'),
        20,
        "rejected by reason",
    )
    assert not prom.query('ALERTS{alertname="IotadWorkerDown"}')


def exported_names(worker: WorkerProcess) -> set[str]:
    names = set()
    for name, _labels in worker.metrics():
        for suffix in HISTOGRAM_SUFFIXES:
            name = name.removesuffix(suffix) if name.endswith(suffix) else name
        names.add(name)
    return names


def test_every_metric_in_dashboards_and_rules_is_exported(stack: Stack) -> None:
    assert stack.prometheus is not None
    wait_for(
        lambda: stack.worker.sample("iotad_series_value", device="line1", metric="temperature"), 10
    )
    missing = metric_names_in_deploy(ROOT) - exported_names(stack.worker) - {"up"}
    assert missing == NATS_ONLY  # those: test_stack_nats_local.py


# Exported by NATS workers only (the issue 12 contract); the MQTT worker exports the rest.
NATS_ONLY = {
    "iotad_nats_pending_messages",
    "iotad_nats_ack_pending",
    "iotad_nats_redelivered_total",
    "iotad_nats_connected",
    "iotad_nats_reconnects_total",
}

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$instance": ".*",
    # the series dashboard takes one series; line2/temperature fires (SHIFT_AT)
    "$device": "line2",
    "$metric": "temperature",
}


def empty_dashboard_queries(prom: DeployPrometheus, skip: set[str]) -> tuple[list[str], int]:
    """Dashboard queries that return nothing (a syntax error raises), and how many ran;
    queries reading a metric in `skip` are left out."""
    empty, checked = [], 0
    for where, expr in exprs_in_deploy(ROOT):
        if ".json:" not in where:
            continue  # rules: promtool checks them
        if metric_names_in_promql(expr) & skip:
            continue
        checked += 1
        if expr.startswith("label_values("):
            expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        if not prom.ever(expr):  # raises on a syntax error
            empty.append(f"{where}: {expr}")
    return empty, checked


def dashboard_queries_answer(
    prom: DeployPrometheus, skip: set[str], patience_s: float = 120.0
) -> tuple[list[str], int]:
    """`empty_dashboard_queries`, asked again until every query has answered or
    `patience_s` has passed: the anomaly and the rejections the panels show are made by
    readings the worker may still be processing."""
    deadline = time.monotonic() + patience_s
    while True:
        empty, checked = empty_dashboard_queries(prom, skip)
        if not empty or time.monotonic() > deadline:
            return empty, checked
        time.sleep(0.5)


def test_every_dashboard_query_runs(stack: Stack) -> None:
    prom = stack.prometheus
    assert prom is not None
    wait_for(lambda: prom.query("iotad_lag_seconds_bucket"), 20, "a scrape")
    empty, checked = dashboard_queries_answer(prom, NATS_ONLY)
    assert checked >= 25
    assert empty == []


def test_image_healthcheck_and_k8s_probes_pass(stack: Stack) -> None:
    """The Dockerfile's HEALTHCHECK command and the worker pod's probe paths, on the worker."""
    import subprocess
    import sys

    dockerfile = pytest.importorskip("dockerfile")
    (health,) = [
        c for c in dockerfile.parse_file(str(DEPLOY / "Dockerfile")) if c.cmd == "HEALTHCHECK"
    ]
    _cmd, _python, flag, code = health.value
    env = {"IOTAD_METRICS__PORT": str(stack.worker.metrics_port), "PATH": ""}
    subprocess.run([sys.executable, flag, code], env=env, check=True, timeout=10)

    deployment = yaml.safe_load((DEPLOY / "k8s" / "worker.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        status, _ = stack.worker.get(container[probe]["httpGet"]["path"])
        assert status == 200, probe
