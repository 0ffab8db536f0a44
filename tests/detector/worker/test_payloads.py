"""The input contract: every accepted payload form and every rejection reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.engine.readings import Reading
from detector.worker.payloads import DECODER_REASONS, PayloadDecoder, PayloadLimits
from detector.worker.topics import TopicPattern

ARRIVAL = 1_700_000_000.0


@pytest.fixture
def decoder() -> PayloadDecoder:
    return PayloadDecoder(clock=lambda: ARRIVAL)


def readings(decoder: PayloadDecoder, topic: str, payload: bytes | str) -> list[Reading]:
    raw = payload.encode() if isinstance(payload, str) else payload
    out = decoder.decode(topic, raw, arrival=ARRIVAL)
    assert not out.rejections, out.rejections
    return out.readings


def reasons(decoder: PayloadDecoder, topic: str, payload: bytes | str) -> list[str]:
    raw = payload.encode() if isinstance(payload, str) else payload
    out = decoder.decode(topic, raw, arrival=ARRIVAL)
    assert not out.readings, out.readings
    return [r.reason for r in out.rejections]


# -- accepted forms ---------------------------------------------------------------------------


@pytest.mark.parametrize("payload", ["23.4", " 23.4\n", "2.34e1"])
def test_bare_number_takes_the_arrival_time(decoder: PayloadDecoder, payload: str) -> None:
    assert readings(decoder, "sensors/press-4/temperature", payload) == [
        Reading("press-4", "temperature", ARRIVAL, 23.4)
    ]


def test_bare_integer(decoder: PayloadDecoder) -> None:
    assert readings(decoder, "sensors/d/m", "-7") == [Reading("d", "m", ARRIVAL, -7.0)]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1_699_999_000, 1_699_999_000.0),  # epoch seconds
        (1_699_999_000.5, 1_699_999_000.5),
        (1_699_999_000_250, 1_699_999_000.25),  # epoch milliseconds (> 1e11)
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20", 1_700_000_000.0),  # naive = UTC
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
        ("2023-11-14 22:13:20.5", 1_700_000_000.5),
    ],
)
def test_object_with_ts(decoder: PayloadDecoder, ts: object, expected: float) -> None:
    payload = json.dumps({"ts": ts, "value": 23.4})
    assert readings(decoder, "sensors/d1/temp", payload) == [Reading("d1", "temp", expected, 23.4)]


def test_object_without_ts_takes_the_arrival_time(decoder: PayloadDecoder) -> None:
    assert readings(decoder, "sensors/d1/temp", '{"value": 1}') == [
        Reading("d1", "temp", ARRIVAL, 1.0)
    ]


def test_values_map_on_device_topic(decoder: PayloadDecoder) -> None:
    payload = '{"ts": 1699999000, "values": {"temperature": 23.4, "vibration": 0.02}}'
    assert readings(decoder, "sensors/press-4", payload) == [
        Reading("press-4", "temperature", 1_699_999_000.0, 23.4),
        Reading("press-4", "vibration", 1_699_999_000.0, 0.02),
    ]


def test_array_with_device_and_metric_fields(decoder: PayloadDecoder) -> None:
    payload = json.dumps(
        [
            {"ts": 1699999000, "value": 1.5},  # device and metric from the topic
            {"ts": 1699999001, "metric": "rpm", "value": 1200},
            {"ts": 1699999002, "device": "pump-2", "metric": "rpm", "value": 900},
            {"ts": 1699999003, "device": "pump-3", "values": {"a": 1, "b": 2}},
        ]
    )
    assert readings(decoder, "sensors/gw/flow", payload) == [
        Reading("gw", "flow", 1_699_999_000.0, 1.5),
        Reading("gw", "rpm", 1_699_999_001.0, 1200.0),
        Reading("pump-2", "rpm", 1_699_999_002.0, 900.0),
        Reading("pump-3", "a", 1_699_999_003.0, 1.0),
        Reading("pump-3", "b", 1_699_999_003.0, 2.0),
    ]


def test_custom_topic_patterns() -> None:
    dec = PayloadDecoder(["plant/+/{device}/{metric}/raw"], clock=lambda: ARRIVAL)
    assert readings(dec, "plant/north/m1/speed/raw", "3") == [Reading("m1", "speed", ARRIVAL, 3)]
    assert reasons(dec, "plant/north/m1/speed", "3") == ["bad_topic"]


def test_bare_numbers_of_one_series_never_share_a_timestamp() -> None:
    dec = PayloadDecoder(clock=lambda: ARRIVAL)  # a clock that does not move
    a = dec.decode("sensors/d/m", b"1").readings[0]
    b = dec.decode("sensors/d/m", b"2").readings[0]
    assert b.ts > a.ts


# -- rejections -------------------------------------------------------------------------------

REJECTIONS = [
    # (topic, payload, reasons)
    ("sensors/d/m", b"", ["empty_payload"]),
    ("sensors/d/m", b"{not json", ["malformed_json"]),
    ("sensors/d/m", b'{"value": 1,}', ["malformed_json"]),
    ("sensors/d/m", b"abc", ["malformed_json"]),
    ("sensors/d/m", b"12abc", ["not_a_number"]),
    ("sensors/d/m", b'"23.4"', ["not_a_number"]),
    ("sensors/d/m", b"true", ["not_a_number"]),
    ("sensors/d/m", b"null", ["not_a_number"]),
    ("sensors/d/m", b'{"value": "hot"}', ["not_a_number"]),
    ("sensors/d/m", b'{"value": true}', ["not_a_number"]),
    ("sensors/d/m", b'{"value": null}', ["not_a_number"]),
    ("sensors/d/m", b'{"value": [1]}', ["not_a_number"]),
    ("sensors/d/m", b"NaN", ["non_finite"]),
    ("sensors/d/m", b"-Infinity", ["non_finite"]),
    ("sensors/d/m", b"inf", ["non_finite"]),
    ("sensors/d/m", b"1e400", ["non_finite"]),
    ("sensors/d/m", b'{"value": NaN}', ["non_finite"]),
    ("sensors/d/m", b'{"value": 1e999}', ["non_finite"]),
    ("sensors/d/m", b'{"value": "nan"}', ["non_finite"]),
    ("sensors/d/m", b'{"ts": 1699999000}', ["missing_field"]),
    ("sensors/d", b"23.4", ["missing_field"]),  # a bare number needs the metric in the topic
    ("sensors/d", b'{"value": 1}', ["missing_field"]),  # no metric anywhere
    ("sensors/d", b'{"values": {}}', ["missing_field"]),
    ("sensors/d", b'{"value": 1, "values": {"a": 1}}', ["missing_field"]),
    # an object-level problem rejects each reading of its values map
    ("sensors/d", b'{"ts": "x", "values": {"a": 1, "b": 2}}', ["bad_ts", "bad_ts"]),
    ("sensors/d/m", b"[]", ["missing_field"]),
    ("sensors/d/m", b'{"ts": "yesterday", "value": 1}', ["bad_ts"]),
    ("sensors/d/m", b'{"ts": -5, "value": 1}', ["bad_ts"]),
    ("sensors/d/m", b'{"ts": true, "value": 1}', ["bad_ts"]),
    ("sensors/d/m", b'{"ts": null, "value": 1}', ["bad_ts"]),
    ("sensors/d/m", b'{"ts": [1], "value": 1}', ["bad_ts"]),
    ("sensors/d/m", b'{"ts": "1699999000", "value": 1}', ["bad_ts"]),
    ("sensors/d/m", b'{"ts": 1700000301, "value": 1}', ["future_ts"]),  # 301 s ahead
    ("sensors/d/m", b'{"ts": "2100-01-01T00:00:00Z", "value": 1}', ["future_ts"]),
    ("sensors/d/m/x", b"1", ["bad_topic"]),
    ("other/d/m", b"1", ["bad_topic"]),
    ("sensors", b"1", ["bad_topic"]),
    ("sensors/bad name/m", b"1", ["bad_name"]),
    ("sensors//m", b"1", ["bad_name"]),
    ("sensors/" + "d" * 65 + "/m", b"1", ["bad_name"]),
    ("sensors/d/m", b'{"device": "a/b", "value": 1}', ["bad_name"]),
    ("sensors/d/m", b'{"device": "a+", "value": 1}', ["bad_name"]),
    ("sensors/d/m", b'{"metric": "#", "value": 1}', ["bad_name"]),
    ("sensors/d/m", b'{"device": 7, "value": 1}', ["bad_name"]),
    ("sensors/d", b'{"values": {"ok": 1, "bad name": 2}}', None),  # mixed, checked below
    ("sensors/d/m", b"[" * 5000 + b"]" * 5000, ["too_deep"]),
    ("sensors/d/m", b"[[1]]", ["too_deep"]),
    ("sensors/d/m", b"[1, 2]", ["not_an_object", "not_an_object"]),
    ("sensors/d", b'{"values": [1, 2]}', ["not_an_object"]),
]


@pytest.mark.parametrize(("topic", "payload", "expected"), [r for r in REJECTIONS if r[2]])
def test_rejections(
    decoder: PayloadDecoder, topic: str, payload: bytes, expected: list[str]
) -> None:
    out = decoder.decode(topic, payload, arrival=ARRIVAL)
    assert out.readings == []
    assert [r.reason for r in out.rejections] == expected
    for rej in out.rejections:
        assert rej.detail
        assert rej.topic == topic


def test_every_decoder_reason_is_exercised() -> None:
    covered = {reason for *_, rs in REJECTIONS if rs for reason in rs}
    covered |= {"oversize", "too_many_readings", "decoder_error"}  # tested separately below
    covered |= {"malformed_line"}  # line protocol: tests/detector/worker/test_metric_payloads.py
    # Sparkplug B: tests/detector/worker/test_sparkplug.py
    covered |= {"malformed_protobuf", "unknown_alias", "alias_table_full", "not_a_measurement"}
    assert covered == set(DECODER_REASONS)


def test_oversize_is_checked_before_parsing() -> None:
    dec = PayloadDecoder(limits=PayloadLimits(max_bytes=10), clock=lambda: ARRIVAL)
    out = dec.decode("no/such/topic/at/all", b"x" * 11)
    assert [r.reason for r in out.rejections] == ["oversize"]
    assert dec.decode("sensors/d/m", b"1234567890").readings


def test_too_many_readings() -> None:
    dec = PayloadDecoder(limits=PayloadLimits(max_readings=3), clock=lambda: ARRIVAL)
    ok = json.dumps([{"value": i} for i in range(3)]).encode()
    assert len(dec.decode("sensors/d/m", ok).readings) == 3
    too_many = json.dumps([{"value": i} for i in range(4)]).encode()
    assert [r.reason for r in dec.decode("sensors/d/m", too_many).rejections] == [
        "too_many_readings"
    ]
    values = json.dumps({"values": {f"m{i}": i for i in range(4)}}).encode()
    assert [r.reason for r in dec.decode("sensors/d", values).rejections] == ["too_many_readings"]
    nested = json.dumps([{"values": {"a": 1, "b": 2}}, {"values": {"c": 1, "d": 2}}]).encode()
    assert [r.reason for r in dec.decode("sensors/d", nested).rejections] == ["too_many_readings"]


def test_decoder_error_is_caught(decoder: PayloadDecoder, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(decoder, "_decode", boom)
    out = decoder.decode("sensors/d/m", b"1")
    assert [r.reason for r in out.rejections] == ["decoder_error"]


def test_invalid_utf8_topic(decoder: PayloadDecoder) -> None:
    assert reasons(decoder, b"sensors/\xff/m", b"1") == ["bad_topic"]  # type: ignore[arg-type]


def test_partial_array_counts_every_reading(decoder: PayloadDecoder) -> None:
    payload = json.dumps(
        [
            {"ts": 1699999000, "value": 1},
            {"ts": 1699999001, "value": "x"},
            {"ts": "nope", "values": {"a": 1, "b": 2}},
            5,
            {"ts": 1699999002, "values": {"ok": 1, "bad name": 2, "nan": "NaN"}},
        ]
    ).encode()
    out = decoder.decode("sensors/d/m", payload, arrival=ARRIVAL)
    assert [(r.metric, r.value) for r in out.readings] == [("m", 1.0), ("ok", 1.0)]
    assert [r.reason for r in out.rejections] == [
        "not_a_number",
        "bad_ts",
        "bad_ts",  # one per value of the element
        "not_an_object",
        "bad_name",
        "non_finite",
    ]
    assert out.n_readings == 8
    # Each rejection carries the offending element, not the whole batch.
    assert json.loads(out.rejections[0].payload) == {"ts": 1699999001, "value": "x"}
    assert out.rejections[0].detail.startswith("[1]: ")


def test_whole_message_rejection_carries_the_raw_payload(decoder: PayloadDecoder) -> None:
    out = decoder.decode("sensors/d/m", b"{oops", arrival=ARRIVAL)
    assert out.rejections[0].payload == b"{oops"
    assert out.n_readings == 1


def test_future_limit_is_configurable() -> None:
    dec = PayloadDecoder(limits=PayloadLimits(max_future_s=0), clock=lambda: ARRIVAL)
    assert reasons(dec, "sensors/d/m", '{"ts": 1700000001, "value": 1}') == ["future_ts"]


@pytest.mark.parametrize(
    "pattern", ["sensors/{device}/#", "a/{device}x", "a//{device}", "{device}/{device}"]
)
def test_bad_topic_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        TopicPattern(pattern)


@settings(max_examples=300, deadline=None)
@given(topic=st.text(max_size=40), payload=st.binary(max_size=200))
def test_never_raises_on_random_bytes(topic: str, payload: bytes) -> None:
    out = PayloadDecoder(clock=lambda: ARRIVAL).decode(topic, payload)
    assert out.n_readings >= 1


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["ts", "value", "values", "device", "metric", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(doc=json_values)
def test_never_raises_on_random_json(doc: object) -> None:
    out = PayloadDecoder(clock=lambda: ARRIVAL).decode("sensors/d", json.dumps(doc).encode())
    assert out.n_readings >= 1
    for r in out.readings:
        assert isinstance(r.value, float)


# -- times under other keys, clocks never set, huge times (hardening, issue 11) ---------------


@pytest.mark.parametrize("key", ["ts", "timestamp", "time"])
@pytest.mark.parametrize(
    "raw", [1_699_999_000, 1_699_999_000_000, "2023-11-14T21:56:40Z", 1_699_999_000.0]
)
def test_the_time_may_come_under_ts_timestamp_or_time(
    decoder: PayloadDecoder, key: str, raw: object
) -> None:
    # {"timestamp": ...} used to be accepted with the arrival time: replayed data scored at
    # the wrong time.
    payload = json.dumps({key: raw, "value": 1.5})
    assert readings(decoder, "sensors/d/m", payload) == [Reading("d", "m", 1_699_999_000.0, 1.5)]


def test_the_time_keys_work_in_values_maps_and_arrays(decoder: PayloadDecoder) -> None:
    got = readings(
        decoder,
        "sensors/gw",
        json.dumps(
            [
                {"device": "a", "timestamp": 1_699_999_001, "values": {"t": 1.0}},
                {"device": "b", "metric": "t", "time": 1_699_999_002, "value": 2.0},
            ]
        ),
    )
    assert [(r.device, r.ts) for r in got] == [("a", 1_699_999_001.0), ("b", 1_699_999_002.0)]


def test_two_times_in_one_object_are_rejected_not_guessed(decoder: PayloadDecoder) -> None:
    out = decoder.decode(
        "sensors/d/m", b'{"ts": 1699999000, "timestamp": 1699999500, "value": 1}', ARRIVAL
    )
    assert [r.reason for r in out.rejections] == ["bad_ts"]
    assert "ts, timestamp" in out.rejections[0].detail


@pytest.mark.parametrize("ts", [0, 1000, 0.5, "1970-01-01T00:16:40Z", 946_684_799])
def test_a_clock_that_was_never_set_is_rejected(decoder: PayloadDecoder, ts: object) -> None:
    # Epoch 0 or 1000 was accepted and put decades of lag into the lag histogram.
    assert reasons(decoder, "sensors/d/m", json.dumps({"ts": ts, "value": 1.0})) == ["bad_ts"]


def test_the_earliest_time_is_configurable() -> None:
    dec = PayloadDecoder(limits=PayloadLimits(min_ts=0.0), clock=lambda: ARRIVAL)
    assert readings(dec, "sensors/d/m", '{"ts": 1000.0, "value": 1.0}')[0].ts == 1000.0
    dec = PayloadDecoder(limits=PayloadLimits(min_ts=1_699_999_999.0), clock=lambda: ARRIVAL)
    assert reasons(dec, "sensors/d/m", '{"ts": 1699999998.0, "value": 1.0}') == ["bad_ts"]


@pytest.mark.parametrize("ts", ["1e300", "-1e300", "1e308", "123456789012345678901234567890"])
def test_huge_times_give_short_details(decoder: PayloadDecoder, ts: str) -> None:
    out = decoder.decode("sensors/d/m", f'{{"ts": {ts}, "value": 1}}'.encode(), ARRIVAL)
    (rejection,) = out.rejections
    assert rejection.reason in ("future_ts", "bad_ts")
    # A 1e300 ts produced a detail with a 297-digit number.
    assert len(rejection.detail) < 120, rejection.detail
