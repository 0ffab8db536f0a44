"""deploy/nats: the cluster config, checked by running it.

`nats-server -t` parses the file as the containers run it; then three real nodes start from
it on loopback ports, and devices, a worker and a reader use it as the scale-out stack does:
MQTT 3.1.1 readings land in the partition their device hashes to, the worker user can run
the stream, its consumers and the checkpoint bucket at 3 replicas, and every user may do only
what it needs. The issue 12 contract (docs/scale-out.md) fixes the subjects and names.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.deploy.nats_cluster import (
    MAKE_AUTH,
    NATS_CONF,
    NATS_SERVER,
    SECRET_OF_USER,
    DeployNatsCluster,
    NodePorts,
    make_auth,
    make_secrets,
    node_config,
)
from tests.deploy.services import wait_for

nats = pytest.importorskip("nats")
from nats.js.api import (  # noqa: E402
    AckPolicy,
    ConsumerConfig,
    KeyValueConfig,
    StorageType,
    StreamConfig,
)

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="needs nats-server (Debian nats-server)"
)

PARTITIONS = 64  # the contract's P: IOTAD_NATS__PARTITIONS and the server mapping
STREAM = "SENSORS"
BUCKET = "iotad-checkpoints"


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bits: the hash of NATS's partition() mapping function."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def partition_of(device: str) -> int:
    return fnv1a_32(device.encode()) % PARTITIONS


def test_fnv1a_reference_values() -> None:
    # Published test vectors of FNV-1a 32 (Fowler/Noll/Vo): "" and "a".
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C


# --- static checks -------------------------------------------------------------------------


def test_mapping_is_the_contracts() -> None:
    conf = NATS_CONF.read_text()
    assert (
        '"sensors.*.*": "part.{{partition(64,1)}}.sensors.{{wildcard(1)}}.{{wildcard(2)}}"' in conf
    )
    assert '"sensors.*": "part.{{partition(64,1)}}.sensors.{{wildcard(1)}}"' in conf
    assert not re.search(r"(?m)^\s*no_auth_user", conf)  # no anonymous access
    assert re.search(r"(?m)^\s*stream_replicas: 3$", conf)


def test_make_auth_reads_the_secrets_init_secrets_makes(tmp_path: Path) -> None:
    script = MAKE_AUTH.read_text()
    init = (NATS_CONF.parents[1] / "init-secrets.sh").read_text()
    for secret in [*SECRET_OF_USER.values(), "nats_route_password"]:
        assert re.search(rf":{secret}\b", script), secret
        assert re.search(rf"\b{secret}\b", init), secret
    secrets, passwords = make_secrets(tmp_path)
    out = tmp_path / "auth.conf"
    made = make_auth(secrets, out, ["n1:6222", "n2:6222"])
    assert made.returncode == 0, made.stderr
    text = out.read_text()
    assert f'IOTAD_PASSWORD: "{passwords["iotad"]}"' in text
    route_pw = (secrets / "nats_route_password").read_text()
    assert f'"nats-route://route:{route_pw}@n2:6222"' in text
    assert out.stat().st_mode & 0o007 == 0  # no access for others


def test_make_auth_refuses_missing_or_unsafe_secrets(tmp_path: Path) -> None:
    secrets, _ = make_secrets(tmp_path)
    (secrets / "nats_route_password").write_text('pa"ss')
    made = make_auth(secrets, tmp_path / "auth.conf", ["n1:6222"])
    assert made.returncode != 0 and "nats_route_password" in made.stderr
    (secrets / "nats_route_password").unlink()
    made = make_auth(secrets, tmp_path / "auth.conf", ["n1:6222"])
    assert made.returncode != 0 and "missing" in made.stderr
    assert not (tmp_path / "auth.conf").exists()


def nats_test(conf: Path, name: str = "nats-1") -> subprocess.CompletedProcess[str]:
    assert NATS_SERVER
    return subprocess.run(
        [NATS_SERVER, "-t", "-c", str(conf)],
        env={"NATS_SERVER_NAME": name}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_config_as_shipped_passes_nats_server_t(tmp_path: Path) -> None:
    """The file itself, with the auth file make-auth.sh writes next to it."""
    secrets, _ = make_secrets(tmp_path)
    (tmp_path / "auth").mkdir()
    made = make_auth(secrets, tmp_path / "auth" / "auth.conf", ["nats-1:6222", "nats-2:6222"])
    assert made.returncode == 0, made.stderr
    (tmp_path / "nats.conf").write_text(NATS_CONF.read_text())
    checked = nats_test(tmp_path / "nats.conf")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # ... and the check can fail: a misspelt field is an error, not a warning.
    (tmp_path / "nats.conf").write_text(
        NATS_CONF.read_text().replace("stream_replicas", "stream_replica")
    )
    checked = nats_test(tmp_path / "nats.conf")
    assert checked.returncode != 0 and "stream_replica" in checked.stdout + checked.stderr


def test_node_config_only_rewrites_listeners(tmp_path: Path) -> None:
    conf = node_config(NodePorts(1, 2, 3, 4), tmp_path)
    changed = [
        (a, b)
        for a, b in zip(NATS_CONF.read_text().splitlines(), conf.splitlines(), strict=True)
        if a != b
    ]
    assert len(changed) == 5  # four listeners and the JetStream directory


# --- a running cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployNatsCluster]:
    c = DeployNatsCluster(tmp_path_factory.mktemp("nats"))
    try:
        yield c
    finally:
        c.stop()


async def connect(cluster: DeployNatsCluster, user: str | None, **kw: Any) -> Any:
    errors: list[Exception] = []

    async def on_error(e: Exception) -> None:
        errors.append(e)

    creds = {"user": user, "password": cluster.passwords[user]} if user else {}
    nc = await nats.connect(
        servers=cluster.urls, error_cb=on_error, allow_reconnect=False,
        max_reconnect_attempts=0, connect_timeout=5, **creds, **kw,
    )  # fmt: skip
    nc.test_errors = errors
    return nc


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class MqttClient:
    """paho on MQTT 3.1.1 (NATS refuses v5), connected to one node's MQTT listener."""

    def __init__(self, port: int, user: str | None, password: str | None, cid: str) -> None:
        self.connected = threading.Event()
        self.rc: Any = None
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311
        )
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self.rc = rc
        self.connected.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_anonymous_clients_are_refused(cluster: DeployNatsCluster) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization"):
        run(connect(cluster, None))
    anon = MqttClient(cluster.mqtt_port(), None, None, "anon")
    try:
        assert anon.connected.wait(10)
        assert anon.rc.is_failure
    finally:
        anon.close()


def test_mqtt_v5_is_refused(cluster: DeployNatsCluster) -> None:
    """NATS's MQTT listener speaks 3.1.1 only (docs/scale-out.md, DESIGN pitfalls)."""
    connected = threading.Event()
    result: list[Any] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set("simulator", cluster.passwords["simulator"])
    client.on_connect = lambda _c, _u, _f, rc, _p=None: (result.append(rc), connected.set())
    client.on_disconnect = lambda *_a: connected.set()
    client.connect("127.0.0.1", cluster.mqtt_port())
    client.loop_start()
    try:
        connected.wait(10)
        assert not result or result[0].is_failure
    finally:
        client.disconnect()
        client.loop_stop()


async def create_stream_and_bucket(cluster: DeployNatsCluster) -> None:
    """What the worker does at start (IOTAD_NATS__REPLICAS=3), as the worker's user."""
    nc = await connect(cluster, "iotad")
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=STREAM, subjects=["part.*.sensors.>"], storage=StorageType.FILE,
                num_replicas=3,
            )
        )  # fmt: skip
        await js.create_key_value(KeyValueConfig(bucket=BUCKET, replicas=3))
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def stream(cluster: DeployNatsCluster) -> DeployNatsCluster:
    run(create_stream_and_bucket(cluster))
    return cluster


DEVICES = [f"press-{i}" for i in range(12)]
METRICS = ["temp", "rpm"]


def test_mqtt_readings_land_in_their_devices_partition(stream: DeployNatsCluster) -> None:
    """Devices publish MQTT to any node; each reading is stored under part.<p>.sensors...,
    p the FNV-1a hash of the device mod 64, the same p for all of a device's metrics."""
    sim = MqttClient(stream.mqtt_port(1), "simulator", stream.passwords["simulator"], "gw-1")
    try:
        assert sim.connected.wait(10) and not sim.rc.is_failure, sim.rc
        infos = [
            sim.client.publish(f"sensors/{d}/{m}", b'{"ts": 1, "value": 2.5}', qos=1)
            for d in DEVICES
            for m in METRICS
        ]
        infos.append(sim.client.publish("sensors/press-0", b'{"ts": 1, "temp": 3}', qos=1))
        for info in infos:
            info.wait_for_publish(10)
    finally:
        sim.close()

    async def stored() -> list[str]:
        nc = await connect(stream, "iotad")
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe("part.*.sensors.>", durable=None, stream=STREAM)
            msgs = await sub.fetch(len(infos), timeout=10)
            return [m.subject for m in msgs]
        finally:
            await nc.close()

    subjects = run(stored())
    expected = [f"part.{partition_of(d)}.sensors.{d}.{m}" for d in DEVICES for m in METRICS]
    expected.append(f"part.{partition_of('press-0')}.sensors.press-0")
    assert sorted(subjects) == sorted(expected)
    assert len({partition_of(d) for d in DEVICES}) > 1  # the devices do spread


def test_worker_user_runs_partition_consumers_and_checkpoints(stream: DeployNatsCluster) -> None:
    """A durable pull consumer per owned partition with explicit acks, and the checkpoint
    bucket, at 3 replicas, through any node (the worker's view of the contract)."""
    device = "mill-3"
    p = partition_of(device)

    async def go() -> tuple[list[str], int, bytes]:
        feeder = await connect(stream, "simulator")
        await feeder.publish(f"sensors.{device}.temp", b"{}")  # a device on NATS
        await feeder.flush()
        await feeder.close()
        nc = await connect(stream, "iotad")
        try:
            js = nc.jetstream()
            await js.add_consumer(
                STREAM,
                ConsumerConfig(
                    durable_name=f"iotad-p{p:02d}", filter_subject=f"part.{p}.sensors.>",
                    ack_policy=AckPolicy.EXPLICIT, num_replicas=3,
                ),
            )  # fmt: skip
            sub = await js.pull_subscribe_bind(f"iotad-p{p:02d}", STREAM)
            msgs = await sub.fetch(100, timeout=5)
            for msg in msgs:
                await msg.ack_sync()
            info = await js.consumer_info(STREAM, f"iotad-p{p:02d}")
            kv = await js.key_value(BUCKET)
            await kv.put(f"p{p:02d}", b"checkpoint")
            entry = await kv.get(f"p{p:02d}")
            # and its outputs: alerts, scores, dead letters, status
            for subject in ("alerts.mill-3.temp", "scores.mill-3.temp", "iotad.deadletter"):
                await nc.publish(subject, b"{}")
            await nc.flush()
            assert nc.test_errors == []
            return [m.subject for m in msgs], info.num_ack_pending, entry.value
        finally:
            await nc.close()

    subjects, ack_pending, value = run(go())
    assert f"part.{p}.sensors.{device}.temp" in subjects
    assert all(s.startswith(f"part.{p}.") for s in subjects)
    assert ack_pending == 0
    assert value == b"checkpoint"


def test_worker_user_can_probe_the_mapping(stream: DeployNatsCluster) -> None:
    """At start a worker publishes sensors.<probe device>.iotad-probe and reads back the
    partition the server mapped each to (detector/worker/nats_source.py, the P check)."""
    probes = [f"iotad-probe-iotad-0-{i}" for i in range(8)]

    async def go() -> dict[str, int]:
        nc = await connect(stream, "iotad")
        seen: dict[str, int] = {}
        try:
            sub = await nc.subscribe("part.*.sensors.*.iotad-probe")
            await nc.flush()
            for device in probes:
                await nc.publish(f"sensors.{device}.iotad-probe", b"")
            for _ in probes:
                msg = await sub.next_msg(timeout=10)
                seen[msg.subject.split(".")[3]] = int(msg.subject.split(".")[1])
            assert nc.test_errors == []
            return seen
        finally:
            await nc.close()

    assert run(go()) == {d: partition_of(d) for d in probes}


def test_each_user_may_only_do_its_job(stream: DeployNatsCluster) -> None:
    async def violations(user: str, publish: list[str], subscribe: list[str]) -> list[str]:
        nc = await connect(stream, user)
        try:
            for subject in subscribe:
                await nc.subscribe(subject)
            for subject in publish:
                await nc.publish(subject, b"x")
            await nc.flush()
            await asyncio.sleep(0.2)  # async -ERR lines arrive after the PONG at the latest
            await nc.flush()
            return [str(e) for e in nc.test_errors]
        finally:
            await nc.close()

    errors = run(violations("simulator", ["alerts.a.b", "$JS.API.STREAM.LIST"], ["part.>"]))
    assert len(errors) == 3 and all("permissions violation" in e.lower() for e in errors), errors
    errors = run(violations("reader", ["sensors.a.b"], ["part.>"]))
    assert len(errors) == 2 and all("permissions violation" in e.lower() for e in errors), errors
    errors = run(violations("iotad", ["sensors.a.b"], ["part.>"]))
    assert len(errors) == 2 and all("permissions violation" in e.lower() for e in errors), errors
    assert run(violations("simulator", ["sensors.a.b", "sensors.a"], [])) == []


def test_mqtt_reader_sees_the_workers_alerts(stream: DeployNatsCluster) -> None:
    """Workers publish NATS alerts.{device}.{metric}; MQTT readers get alerts/{device}/..."""
    reader = MqttClient(stream.mqtt_port(2), "reader", stream.passwords["reader"], "alert-router")
    try:
        assert reader.connected.wait(10) and not reader.rc.is_failure, reader.rc
        subscribed = threading.Event()
        reader.client.on_subscribe = lambda *_a: subscribed.set()
        reader.client.subscribe("alerts/#", qos=1)
        assert subscribed.wait(10)

        async def alert() -> None:
            nc = await connect(stream, "iotad")
            try:
                await nc.publish("alerts.press-7.temp", b'{"state": "firing"}')
                await nc.flush()
            finally:
                await nc.close()

        run(alert())
        wait_for(lambda: reader.messages, 10, "the alert over MQTT")
        assert reader.messages == [("alerts/press-7/temp", b'{"state": "firing"}')]
    finally:
        reader.close()
