"""Sparkplug B decoding (`detector.worker.sparkplug`) through the worker's `PayloadDecoder`: BIRTH
names, DATA by alias, DEATH ends series, what is skipped and why, bounds."""

from __future__ import annotations

import pytest

from detector.engine.readings import Reading
from detector.worker.payloads import PayloadDecoder, PayloadLimits
from detector.worker.sparkplug_schema import DataType
from tests.sparkplug_payloads import birth, data, death, payload

T0_MS = 1_764_320_400_000  # 2025-11-28 09:00 UTC
T0 = T0_MS / 1000
ARRIVAL = T0 + 5


def decoder(**limits: object) -> PayloadDecoder:
    return PayloadDecoder(
        limits=PayloadLimits(formats={"spBv1.0/#": "sparkplug"}, **limits),  # type: ignore[arg-type]
        clock=lambda: ARRIVAL,
    )


NODE_METRICS = [
    ("Oil Temp", 1, DataType.Double, 41.5),
    ("rpm", 2, DataType.Int32, 1480),
    ("mode", 3, DataType.String, "auto"),
    ("running", 4, DataType.Boolean, True),
]


def reasons(decoded: object) -> list[str]:
    return sorted(r.reason for r in decoded.rejections)  # type: ignore[attr-defined]


def test_birth_names_the_metrics_and_its_values_are_readings() -> None:
    dec = decoder()
    out = dec.decode("spBv1.0/plant/NBIRTH/gw1", birth(NODE_METRICS, bdseq=3, ts_ms=T0_MS))
    assert out.readings == [Reading("gw1", "Oil_Temp", T0, 41.5), Reading("gw1", "rpm", T0, 1480)]
    # bdSeq (a session number), the string and the Boolean are no measurements
    assert reasons(out) == ["not_a_measurement"] * 3
    assert out.ended is None


def test_data_by_alias_takes_the_names_of_the_birth() -> None:
    dec = decoder()
    dec.decode("spBv1.0/plant/NBIRTH/gw1", birth(NODE_METRICS, bdseq=0, ts_ms=T0_MS))
    out = dec.decode(
        "spBv1.0/plant/NDATA/gw1", data([(1, 42.25)], DataType.Double, ts_ms=T0_MS + 1000)
    )
    assert out.readings == [Reading("gw1", "Oil_Temp", T0 + 1, 42.25)]
    assert out.rejections == []
    # by name too (a DATA may carry names), and the metric's own timestamp wins
    named = payload([("rpm", None, DataType.Int32, 1500, T0_MS + 2500)], ts_ms=T0_MS + 2000)
    out = dec.decode("spBv1.0/plant/NDATA/gw1", named)
    assert out.readings == [Reading("gw1", "rpm", T0 + 2.5, 1500)]


def test_device_series_are_named_node_slash_device_made_safe() -> None:
    dec = decoder()
    dec.decode("spBv1.0/plant/NBIRTH/gw1", birth([], bdseq=0))
    dbirth = birth([("Pressure (bar)", 7, DataType.Float, 2.5)], ts_ms=T0_MS)
    out = dec.decode("spBv1.0/plant/DBIRTH/gw1/press 4", dbirth)
    assert out.readings == [Reading("gw1_press_4", "Pressure_bar_", T0, 2.5)]
    out = dec.decode(
        "spBv1.0/plant/DDATA/gw1/press 4", data([(7, 2.75)], DataType.Float, ts_ms=T0_MS + 1)
    )
    assert out.readings == [Reading("gw1_press_4", "Pressure_bar_", T0 + 0.001, 2.75)]


def test_data_without_a_birth_is_unknown_alias_one_per_metric() -> None:
    dec = decoder()
    out = dec.decode(
        "spBv1.0/plant/DDATA/gw1/press4", data([(1, 1.0), (2, 2.0)], DataType.Double, ts_ms=T0_MS)
    )
    assert out.readings == []
    assert reasons(out) == ["unknown_alias", "unknown_alias"]
    assert "none seen since the worker started" in out.rejections[0].detail
    # after a BIRTH, an alias it did not define is unknown too
    dec.decode("spBv1.0/plant/DBIRTH/gw1/press4", birth([("a", 1, DataType.Double, 0.5)]))
    out = dec.decode(
        "spBv1.0/plant/DDATA/gw1/press4", data([(1, 1.0), (9, 2.0)], DataType.Double, ts_ms=T0_MS)
    )
    assert [r.value for r in out.readings] == [1.0]
    assert reasons(out) == ["unknown_alias"]


@pytest.mark.parametrize(
    ("datatype", "value", "expected"),
    [
        (DataType.Int8, -5, -5.0),
        (DataType.Int8, 127, 127.0),
        (DataType.Int16, -300, -300.0),
        (DataType.Int32, -70_000, -70_000.0),
        (DataType.Int64, -(2**40), float(-(2**40))),
        (DataType.UInt8, 255, 255.0),
        (DataType.UInt32, 4_000_000_000, 4_000_000_000.0),
        (DataType.UInt64, 2**63, float(2**63)),
        (DataType.Float, 0.5, 0.5),
        (DataType.Double, -1e-3, -1e-3),
    ],
)
def test_numeric_datatypes(datatype: DataType, value: float, expected: float) -> None:
    out = decoder().decode("spBv1.0/g/NBIRTH/n", birth([("x", 1, datatype, value)]))
    assert [r.value for r in out.readings] == [expected]


def test_a_negative_int8_sign_extended_to_32_bits_reads_the_same() -> None:
    # Writers differ: Tahu's Python adds 2**8, others store the 32-bit two's complement.
    msg = payload([("x", 1, DataType.Int8, 0)])
    dec = decoder()
    dec.decode("spBv1.0/g/NBIRTH/n", msg)
    from detector.worker.sparkplug_schema import Payload

    wide = Payload()
    wide.metrics.add(alias=1, int_value=0xFFFF_FFFB)  # -5 as 32 bits
    out = dec.decode("spBv1.0/g/NDATA/n", wide.SerializeToString())
    assert [r.value for r in out.readings] == [-5.0]


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (DataType.String, "on"),
        (DataType.Text, "long text"),
        (DataType.UUID, "4f0c"),
        (DataType.Bytes, b"\x00\x01"),
        (DataType.DataSet, 0),
        (DataType.DateTime, T0_MS),
        (DataType.Double, None),  # is_null
    ],
)
def test_values_that_are_no_measurement_are_skipped_with_a_reason(
    datatype: DataType, value: object
) -> None:
    out = decoder().decode("spBv1.0/g/NBIRTH/n", birth([("x", 1, datatype, value)]))
    assert out.readings == []
    assert reasons(out) == ["not_a_measurement"]


def test_booleans_as_numbers_when_asked() -> None:
    dec = decoder(sparkplug_booleans="number")
    specs = [("on", 1, DataType.Boolean, True), ("off", 2, DataType.Boolean, False)]
    out = dec.decode("spBv1.0/g/NBIRTH/n", birth(specs, ts_ms=T0_MS))
    assert [(r.metric, r.value) for r in out.readings] == [("on", 1.0), ("off", 0.0)]


def test_a_value_that_contradicts_its_datatype_is_not_a_number() -> None:
    dec = decoder()
    dec.decode("spBv1.0/g/NBIRTH/n", birth([("x", 1, DataType.Double, 1.0)]))
    out = dec.decode("spBv1.0/g/NDATA/n", data([(1, "text")], DataType.String, ts_ms=T0_MS))
    assert reasons(out) == ["not_a_number"]


def test_node_death_ends_the_node_and_its_devices_then_data_is_unknown() -> None:
    dec = decoder()
    dec.decode("spBv1.0/g/NBIRTH/gw1", birth([("t", 1, DataType.Double, 1.0)], bdseq=7))
    dec.decode("spBv1.0/g/DBIRTH/gw1/a", birth([("t", 1, DataType.Double, 1.0)]))
    dec.decode("spBv1.0/g/DBIRTH/gw1/b", birth([("t", 1, DataType.Double, 1.0)]))
    out = dec.decode("spBv1.0/g/NDEATH/gw1", death(bdseq=7))
    assert out.readings == [] and out.rejections == []
    assert out.ended is not None
    assert sorted(e.device for e in out.ended) == ["gw1", "gw1_a", "gw1_b"]
    assert all(e.ts == pytest.approx(ARRIVAL) for e in out.ended)  # an NDEATH has no time
    out = dec.decode("spBv1.0/g/DDATA/gw1/a", data([(1, 2.0)], DataType.Double, ts_ms=T0_MS))
    assert reasons(out) == ["unknown_alias"]


def test_a_late_will_of_an_older_session_is_ignored() -> None:
    dec = decoder()
    dec.decode("spBv1.0/g/NBIRTH/gw1", birth([("t", 1, DataType.Double, 1.0)], bdseq=8))
    out = dec.decode("spBv1.0/g/NDEATH/gw1", death(bdseq=7))
    assert out.ended is None
    out = dec.decode("spBv1.0/g/NDATA/gw1", data([(1, 2.0)], DataType.Double, ts_ms=T0_MS))
    assert [r.value for r in out.readings] == [2.0]


def test_device_death_ends_that_device_only() -> None:
    dec = decoder()
    dec.decode("spBv1.0/g/NBIRTH/gw1", birth([("t", 1, DataType.Double, 1.0)], bdseq=1))
    dec.decode("spBv1.0/g/DBIRTH/gw1/a", birth([("t", 1, DataType.Double, 1.0)]))
    out = dec.decode("spBv1.0/g/DDEATH/gw1/a", payload([], ts_ms=T0_MS))
    assert out.ended is not None
    assert [(e.device, e.ts) for e in out.ended] == [("gw1_a", T0)]
    out = dec.decode("spBv1.0/g/NDATA/gw1", data([(1, 2.0)], DataType.Double, ts_ms=T0_MS))
    assert len(out.readings) == 1


def test_a_node_death_after_a_restart_still_ends_the_devices_seen_since() -> None:
    dec = decoder()  # no BIRTH seen: DATA is unknown, but the device is remembered
    dec.decode("spBv1.0/g/DDATA/gw1/a", data([(1, 2.0)], DataType.Double, ts_ms=T0_MS))
    out = dec.decode("spBv1.0/g/NDEATH/gw1", death(bdseq=3))
    assert out.ended is not None
    assert sorted(e.device for e in out.ended) == ["gw1", "gw1_a"]


def test_commands_and_host_state_are_not_input() -> None:
    dec = decoder()
    for topic in ("spBv1.0/g/NCMD/gw1", "spBv1.0/g/DCMD/gw1/a", "spBv1.0/STATE/scada"):
        out = dec.decode(topic, b'{"online": true}')
        assert out.readings == [] and out.rejections == [] and out.ended is None


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        ("spBv1.0/g/NDATA/gw1", b"\xff\xff\xff", "malformed_protobuf"),
        ("spBv1.0/g/NDATA", b"", "bad_topic"),
        ("spBv1.0/g/DDATA/gw1", b"", "bad_topic"),
        ("spBv1.0/g/NOPE/gw1", b"", "bad_topic"),
    ],
)
def test_bad_messages_are_one_rejection(topic: str, body: bytes, reason: str) -> None:
    out = decoder().decode(topic, body)
    assert reasons(out) == [reason]


def test_too_many_metrics_is_one_rejection() -> None:
    specs = [(f"m{i}", i, DataType.Double, 1.0) for i in range(11)]
    out = decoder(max_readings=10).decode("spBv1.0/g/NBIRTH/n", birth(specs))
    assert out.readings == [] and reasons(out) == ["too_many_readings"]


def test_alias_table_bound_per_node_counts_every_metric_once() -> None:
    # 1 entry for the node itself, 2 (name and alias) per metric: 2 metrics fit in 5
    dec = decoder(sparkplug_max_aliases=5)
    specs = [(f"m{i}", i, DataType.Double, float(i)) for i in range(4)]
    out = dec.decode("spBv1.0/g/NBIRTH/n", birth(specs, ts_ms=T0_MS))
    assert [r.metric for r in out.readings] == ["m0", "m1"]
    assert reasons(out) == ["alias_table_full", "alias_table_full"]
    out = dec.decode("spBv1.0/g/NDATA/n", data([(0, 5.0), (3, 6.0)], DataType.Double, ts_ms=T0_MS))
    assert [r.value for r in out.readings] == [5.0]
    assert reasons(out) == ["unknown_alias"]
    assert dec.sparkplug is not None and dec.sparkplug.aliases == 5


def test_nodes_beyond_the_bound_forget_the_oldest() -> None:
    dec = decoder(sparkplug_max_nodes=2)
    for node in ("a", "b", "c"):
        dec.decode(f"spBv1.0/g/NBIRTH/{node}", birth([("t", 1, DataType.Double, 1.0)]))
    assert dec.sparkplug is not None
    assert dec.sparkplug.nodes == 2 and dec.sparkplug.evicted_nodes == 1
    out = dec.decode("spBv1.0/g/NDATA/a", data([(1, 2.0)], DataType.Double, ts_ms=T0_MS))
    assert reasons(out) == ["unknown_alias"]
    out = dec.decode("spBv1.0/g/NDATA/c", data([(1, 2.0)], DataType.Double, ts_ms=T0_MS))
    assert len(out.readings) == 1


def test_a_rebirth_replaces_the_aliases() -> None:
    dec = decoder()
    dec.decode("spBv1.0/g/NBIRTH/n", birth([("a", 1, DataType.Double, 1.0)], bdseq=0))
    dec.decode("spBv1.0/g/NBIRTH/n", birth([("b", 1, DataType.Double, 1.0)], bdseq=1))
    out = dec.decode("spBv1.0/g/NDATA/n", data([(1, 3.0)], DataType.Double, ts_ms=T0_MS))
    assert [r.metric for r in out.readings] == ["b"]


def test_time_checks_apply_as_for_every_format() -> None:
    dec = decoder()
    out = dec.decode("spBv1.0/g/NBIRTH/n", birth([("a", 1, DataType.Double, 1.0)], ts_ms=1000))
    assert reasons(out) == ["bad_ts"]  # 1970: a clock never set


def test_unknown_aliases_ask_the_node_to_rebirth_at_most_once_per_interval() -> None:
    from detector.worker.sparkplug import REBIRTH_METRIC
    from detector.worker.sparkplug_schema import Payload

    dec = decoder()
    assert dec.sparkplug is not None
    sent: list[tuple[str, bytes]] = []
    dec.sparkplug.commands = lambda topic, body: sent.append((topic, body))
    for _ in range(3):  # a burst of DATA from a node whose BIRTH the worker never saw
        dec.decode("spBv1.0/g/DDATA/gw1/a", data([(1, 2.0)], DataType.Double, ts_ms=T0_MS))
    assert [t for t, _ in sent] == ["spBv1.0/g/NCMD/gw1"]
    (metric,) = Payload.FromString(sent[0][1]).metrics
    assert (metric.name, metric.datatype, metric.boolean_value) == (
        REBIRTH_METRIC,
        DataType.Boolean,
        True,
    )
    # another node is asked on its own; a node whose aliases are known is not asked
    dec.decode("spBv1.0/g/NDATA/gw2", data([(1, 2.0)], DataType.Double, ts_ms=T0_MS))
    dec.decode("spBv1.0/g/NBIRTH/gw3", birth([("t", 1, DataType.Double, 1.0)], bdseq=0))
    dec.decode("spBv1.0/g/NDATA/gw3", data([(1, 2.0)], DataType.Double, ts_ms=T0_MS))
    assert [t for t, _ in sent] == ["spBv1.0/g/NCMD/gw1", "spBv1.0/g/NCMD/gw2"]
    assert dec.sparkplug.rebirths_requested == 2


def test_no_rebirth_request_unless_asked() -> None:
    dec = decoder()
    out = dec.decode("spBv1.0/g/NDATA/gw1", data([(1, 2.0)], DataType.Double, ts_ms=T0_MS))
    assert reasons(out) == ["unknown_alias"]
    assert dec.sparkplug is not None and dec.sparkplug.rebirths_requested == 0


def test_a_bad_payload_time_rejects_its_metrics_but_the_birth_is_learnt() -> None:
    dec = decoder()
    specs = [("a", 1, DataType.Double, 1.0), ("b", 2, DataType.Double, 2.0, T0_MS)]
    out = dec.decode("spBv1.0/g/NBIRTH/n", birth(specs, bdseq=0, ts_ms=1000))
    # a takes the payload's 1970 (bad_ts), b has a time of its own; bdSeq is no measurement
    assert reasons(out) == ["bad_ts", "not_a_measurement"]
    assert [(r.metric, r.ts) for r in out.readings] == [("b", T0)]
    out = dec.decode("spBv1.0/g/NDATA/n", data([(1, 5.0)], DataType.Double, ts_ms=T0_MS))
    assert [(r.metric, r.value) for r in out.readings] == [("a", 5.0)]
    # a DEATH with a bad time still ends its series, at the arrival time
    out = dec.decode("spBv1.0/g/DDEATH/n/d", payload([], ts_ms=1000))
    assert out.ended is not None and out.ended[0].ts == pytest.approx(ARRIVAL)
