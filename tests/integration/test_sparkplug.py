"""Sparkplug B through a real mosquitto into `iotad run`: BIRTH names the metrics, DATA by
alias becomes readings, an unknown alias is dead-lettered, DEATH ends the node's series and
a rebirth brings them back. Payloads are built with the protobuf library from the schema."""

from __future__ import annotations

import json

import pytest

from detector.worker.sparkplug_schema import DataType
from tests.conftest import TINY_START_TS, Mosquitto, publish_all
from tests.sparkplug_payloads import birth, data, death

pytestmark = pytest.mark.integration

ENV = {
    "IOTAD_MQTT__TOPICS": "sensors/#,spBv1.0/plant/#",
    "IOTAD_PAYLOAD__FORMATS": json.dumps({"spBv1.0/#": "sparkplug"}),
}
NODE = "spBv1.0/plant/{}/gw1"
DEVICE = "spBv1.0/plant/{}/gw1/press 1"
T0_MS = int((TINY_START_TS + 30_000_000) * 1000)  # recent enough for the ts checks


def test_birth_data_death_and_rebirth(mosquitto: Mosquitto, start_worker, collect) -> None:
    letters = collect("iotad/deadletter")
    worker = start_worker(env=ENV)
    node_birth = birth(
        [("Oil Temp", 1, DataType.Double, 40.0), ("mode", 2, DataType.String, "auto")],
        bdseq=0,
        ts_ms=T0_MS,
    )  # 3 readings: Oil Temp accepted; mode and bdSeq not_a_measurement
    device_birth = birth([("rpm", 1, DataType.Int32, 1400)], ts_ms=T0_MS)  # 1 reading
    steps = [
        (NODE.format("NDATA"), data([(1, 40.0 + k % 3)], DataType.Double, ts_ms=T0_MS + k * 1000))
        for k in range(1, 21)
    ] + [
        (DEVICE.format("DDATA"), data([(1, 1400 + k)], DataType.Int32, ts_ms=T0_MS + k * 1000))
        for k in range(1, 21)
    ]  # 40 readings
    unknown = data([(9, 1.0)], DataType.Double, ts_ms=T0_MS + 30_000)  # 1 unknown_alias
    publish_all(
        mosquitto.port,
        [
            (NODE.format("NBIRTH"), node_birth),
            (DEVICE.format("DBIRTH"), device_birth),
            *steps,
            (DEVICE.format("DDATA"), unknown),
        ],
    )
    worker.wait_metric("iotad_readings_total", lambda v: v >= 45)
    assert worker.sample("iotad_readings_accepted_total") == 1 + 1 + 40
    assert worker.sample("iotad_readings_rejected_total", reason="not_a_measurement") == 2
    assert worker.sample("iotad_readings_rejected_total", reason="unknown_alias") == 1
    worker.wait_metric("iotad_series_active", lambda v: v == 2)  # gw1/Oil_Temp, gw1_press_1/rpm
    dead = letters.wait_for(lambda ms: len(ms) >= 1)
    letter = json.loads(dead[0].payload)
    assert letter["reason"] == "unknown_alias"
    assert letter["topic"] == DEVICE.format("DDATA")
    assert letter["payload_encoding"] == "base64"  # protobuf, as it came
    assert letter["labels"] == {"sparkplug_group": "plant", "edge_node": "gw1"}

    # The node dies: its series and its device's end; DATA before the rebirth is unknown.
    late = data([(1, 41.0)], DataType.Double, ts_ms=T0_MS + 40_000)
    publish_all(
        mosquitto.port, [(NODE.format("NDEATH"), death(bdseq=0)), (NODE.format("NDATA"), late)]
    )
    worker.wait_metric("iotad_readings_rejected_total", lambda v: v >= 2, reason="unknown_alias")
    worker.wait_metric("iotad_series_active", lambda v: v == 0)
    assert worker.sample("iotad_messages_total") == 2 + 40 + 1 + 2

    # Rebirth: the aliases are learnt again (here another alias), the series come back.
    reborn = birth([("Oil Temp", 5, DataType.Double, 60.0)], bdseq=1, ts_ms=T0_MS + 50_000)
    after = data([(5, 61.0)], DataType.Double, ts_ms=T0_MS + 51_000)
    publish_all(mosquitto.port, [(NODE.format("NBIRTH"), reborn), (NODE.format("NDATA"), after)])
    worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= 42 + 2)
    worker.wait_metric("iotad_series_active", lambda v: v == 1)
    assert worker.sample("iotad_readings_rejected_total", reason="not_a_measurement") == 3
    # not_a_measurement is never dead-lettered: only the two unknown aliases were
    worker.settle(mosquitto.port)
    # settle's own second dead letter is published after the count it waits on: wait for it.
    got = letters.wait_for(lambda ms: len(ms) >= 4)
    reasons = sorted(json.loads(m.payload)["reason"] for m in got)
    assert reasons == ["bad_topic"] * 2 + ["unknown_alias"] * 2


def test_rebirth_is_requested_when_asked(mosquitto: Mosquitto, start_worker, collect) -> None:
    from detector.worker.sparkplug_schema import Payload

    commands = collect("spBv1.0/+/NCMD/#")
    worker = start_worker(env={**ENV, "IOTAD_PAYLOAD__SPARKPLUG_REBIRTH": "true"})
    # the worker started after the node's BIRTH: its DATA cannot be read
    unknown = data([(1, 41.0)], DataType.Double, ts_ms=T0_MS)
    publish_all(mosquitto.port, [(DEVICE.format("DDATA"), unknown)] * 3)
    worker.wait_metric("iotad_readings_rejected_total", lambda v: v >= 3, reason="unknown_alias")
    (cmd,) = commands.wait_for(lambda ms: len(ms) >= 1)
    assert cmd.topic == "spBv1.0/plant/NCMD/gw1" and not cmd.retain
    (metric,) = Payload.FromString(cmd.payload).metrics
    assert (metric.name, metric.boolean_value) == ("Node Control/Rebirth", True)
    assert worker.sample("iotad_sparkplug_rebirth_requests_total") == 1
    # the node answers with its BIRTHs; its DATA is read again
    publish_all(
        mosquitto.port,
        [
            (NODE.format("NBIRTH"), birth([], bdseq=4, ts_ms=T0_MS + 1000)),
            (DEVICE.format("DBIRTH"), birth([("t", 1, DataType.Double, 40.5)], ts_ms=T0_MS + 1000)),
            (DEVICE.format("DDATA"), data([(1, 41.0)], DataType.Double, ts_ms=T0_MS + 2000)),
        ],
    )
    worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= 2)
    assert len(commands.snapshot()) == 1
