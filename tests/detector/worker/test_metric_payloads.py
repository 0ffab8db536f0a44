"""Telegraf JSON and InfluxDB line protocol through the decoder: the samples Telegraf and
InfluxDB document, the names and times they carry, and every problem counted per field."""

from __future__ import annotations

import json

import pytest

from detector.engine.readings import Reading
from detector.worker.payloads import Decoded, PayloadDecoder, PayloadLimits

ARRIVAL = 1_700_000_000.0
FORMATS = {"telegraf/#": "telegraf", "influx/#": "influx"}


def decoder(**limits: object) -> PayloadDecoder:
    limits.setdefault("formats", FORMATS)
    return PayloadDecoder(
        ("sensors/{device}/{metric}", "sensors/{device}", "telegraf/{device}", "influx/{device}"),
        PayloadLimits(**limits),  # type: ignore[arg-type]
        clock=lambda: ARRIVAL,
    )


def decode(topic: str, payload: bytes | str | dict | list, **limits: object) -> Decoded:
    if isinstance(payload, (dict, list)):
        payload = json.dumps(payload)
    raw = payload.encode() if isinstance(payload, str) else payload
    return decoder(**limits).decode(topic, raw, arrival=ARRIVAL)


def reasons(out: Decoded) -> list[str]:
    return [r.reason for r in out.rejections]


# The example of Telegraf's JSON serializer (docs/DATA_FORMATS_OUTPUT, plugins/serializers/json).
TELEGRAF_DOC = {
    "fields": {"field_1": 30, "field_2": 4, "field_N": 59, "n_images": 660},
    "name": "docker",
    "tags": {"host": "raynor"},
    "timestamp": 1458229140,
}


# -- Telegraf JSON ----------------------------------------------------------------------------


def test_telegraf_documented_metric() -> None:
    out = decode("telegraf/gw", TELEGRAF_DOC)
    assert out.rejections == []
    assert out.readings == [
        Reading("raynor", "docker_field_1", 1458229140.0, 30.0),
        Reading("raynor", "docker_field_2", 1458229140.0, 4.0),
        Reading("raynor", "docker_field_N", 1458229140.0, 59.0),
        Reading("raynor", "docker_n_images", 1458229140.0, 660.0),
    ]


def test_telegraf_batch_counts_every_field() -> None:
    second = {"name": "plc", "tags": {"device": "press-1"}, "fields": {"temp": 21.5, "mode": "run"}}
    batch = {"metrics": [TELEGRAF_DOC, second, "junk"]}
    out = decode("telegraf/gw", batch)
    assert [(r.device, r.metric, r.ts) for r in out.readings][-1] == (
        "press-1",
        "plc_temp",
        ARRIVAL,
    )
    assert len(out.readings) == 5
    assert reasons(out) == ["not_a_number", "not_an_object"]
    assert out.rejections[0].detail.startswith("metrics[1]: field 'mode'")
    assert json.loads(out.rejections[0].payload) == second  # the element, not the batch
    assert out.n_readings == 4 + 2 + 1


@pytest.mark.parametrize(
    ("timestamp", "unit"),
    [
        (1458229140, "auto"),
        (1458229140_250, "auto"),
        (1458229140_250_000, "auto"),
        (1458229140_250_000_000, "auto"),
        (1458229140_250, "ms"),
        (1458229140_250_000, "us"),
        (1458229140_250_000_000, "ns"),
        (1458229140.25, "s"),
        ("2016-03-17T15:39:00.25Z", "auto"),
    ],
)
def test_telegraf_timestamp_units(timestamp: object, unit: str) -> None:
    doc = {**TELEGRAF_DOC, "timestamp": timestamp}
    out = decode("telegraf/gw", doc, telegraf_ts_unit=unit)
    assert out.rejections == []
    expected = 1458229140.25 if timestamp != 1458229140 else 1458229140.0
    assert [r.ts for r in out.readings] == [pytest.approx(expected, abs=1e-6)] * 4


@pytest.mark.parametrize(
    ("timestamp", "unit", "reason"),
    [
        (1458229140, "ms", "bad_ts"),  # seconds read as milliseconds: 1970
        (1458229140_000, "s", "future_ts"),  # milliseconds read as seconds
        ("yesterday", "auto", "bad_ts"),
        (True, "auto", "bad_ts"),
        (None, "auto", "bad_ts"),
        (-5, "auto", "bad_ts"),
        (1e300, "auto", "future_ts"),
    ],
)
def test_telegraf_bad_time_rejects_every_field(timestamp: object, unit: str, reason: str) -> None:
    out = decode("telegraf/gw", {**TELEGRAF_DOC, "timestamp": timestamp}, telegraf_ts_unit=unit)
    assert out.readings == []
    assert reasons(out) == [reason] * 4


def test_telegraf_without_timestamp_takes_the_arrival_time() -> None:
    doc = {k: v for k, v in TELEGRAF_DOC.items() if k != "timestamp"}
    assert {r.ts for r in decode("telegraf/gw", doc).readings} == {ARRIVAL}


def test_telegraf_names_and_tags() -> None:
    doc = {
        "name": "modbus",
        "tags": {"slave_id": "7", "host": "gw 1", "name": "Press #4"},
        "fields": {"Temperature (°C)": 80.5, "x" * 70: 1, "ok": 2},
    }
    out = decode("telegraf/gw", doc)
    assert [(r.device, r.metric) for r in out.readings] == [
        ("gw_1", "modbus_Temperature_C_"),
        ("gw_1", "modbus_ok"),
    ]
    assert reasons(out) == ["bad_name"]
    out = decode("telegraf/gw", doc, device_tags=("slave_id",), measurement_prefix=False)
    assert [(r.device, r.metric) for r in out.readings] == [("7", "Temperature_C_"), ("7", "ok")]


def test_telegraf_device_from_the_topic_else_missing() -> None:
    doc = {"name": "m", "tags": {}, "fields": {"a": 1, "b": 2}}
    assert {r.device for r in decode("telegraf/press-9", doc).readings} == {"press-9"}
    out = decode("telegraf/a/b/c", doc)  # no pattern: the device can only come from the tags
    assert reasons(out) == ["missing_field", "missing_field"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("{", ["malformed_json"]),
        ("[]", ["missing_field"]),
        ('{"metrics": []}', ["missing_field"]),
        ('{"metrics": 3}', ["not_an_object"]),
        ("3", ["not_an_object"]),
        ('{"name": "m", "fields": {}}', ["missing_field"]),
        ('{"name": "m", "fields": [1, 2]}', ["not_an_object"]),
        ('{"fields": {"a": 1, "b": 2}}', ["missing_field", "missing_field"]),
        (
            '{"name": "m", "fields": {"a": NaN, "b": "x", "c": true, "d": null}}',
            ["non_finite", "not_a_number", "not_a_number", "not_a_number"],
        ),
        ('{"name": "m", "fields": {"a": 1e400}}', ["non_finite"]),
    ],
)
def test_telegraf_rejections(payload: str, expected: list[str]) -> None:
    out = decode("telegraf/gw", payload)
    assert out.readings == []
    assert reasons(out) == expected
    assert all(r.detail and r.topic == "telegraf/gw" for r in out.rejections)


def test_telegraf_too_many_fields() -> None:
    doc = {"name": "m", "fields": {f"f{i}": i for i in range(4)}}
    assert len(decode("telegraf/gw", doc, max_readings=4).readings) == 4
    assert reasons(decode("telegraf/gw", doc, max_readings=3)) == ["too_many_readings"]
    batch = {"metrics": [doc, doc]}
    assert reasons(decode("telegraf/gw", batch, max_readings=5)) == ["too_many_readings"]


# -- InfluxDB line protocol -------------------------------------------------------------------


def test_influx_lines_as_telegraf_writes_them() -> None:
    payload = (
        "# comment\n"
        "cpu,cpu=cpu0,host=raynor usage_idle=98.5,usage_user=1i 1458229140000000000\n"
        "\n"
        'plc,device=press\\ 4 temp=80.5,state="run",on=t,count=3u 1458229141000000000\r\n'
    )
    out = decode("influx/gw", payload)
    assert out.readings == [
        Reading("raynor", "cpu_usage_idle", 1458229140.0, 98.5),
        Reading("raynor", "cpu_usage_user", 1458229140.0, 1.0),
        Reading("press_4", "plc_temp", 1458229141.0, 80.5),
        Reading("press_4", "plc_count", 1458229141.0, 3.0),
    ]
    assert reasons(out) == ["not_a_number", "not_a_number"]
    assert out.rejections[0].detail == "line 2: field 'state' is a string, not a number"
    assert out.rejections[0].payload.startswith(b"plc,device=")  # that line, not the message


@pytest.mark.parametrize(
    ("precision", "ts"), [("s", 1458229140), ("ms", 1458229140000), ("us", 1458229140000000)]
)
def test_influx_precision(precision: str, ts: int) -> None:
    out = decode("influx/gw", f"m,host=h v=1 {ts}", influx_precision=precision)
    assert [r.ts for r in out.readings] == [1458229140.0]


def test_influx_without_timestamp_takes_the_arrival_time() -> None:
    assert decode("influx/dev-2", "m v=1").readings == [Reading("dev-2", "m_v", ARRIVAL, 1.0)]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("m,host=h v=1\nnot line protocol\nm,host=h x", ["malformed_line", "malformed_line"]),
        ("m,host=h a=1,b=2 1458229140", ["bad_ts", "bad_ts"]),  # seconds read as ns: 1970
        ("m,host=h a=1,b=2 99999999999999999999999999", ["future_ts", "future_ts"]),
        ("m,host=h a=1e400,b=-1e400", ["non_finite", "non_finite"]),
        ("m a=1,b=2", ["missing_field", "missing_field"]),  # no device tag, topic names none
        (f"m,host={'h' * 65} a=1", ["bad_name"]),
        ("\n# only a comment\n", ["empty_payload"]),
        (b"m,host=h a=1\xff", ["malformed_line"]),
    ],
)
def test_influx_rejections(payload: str | bytes, expected: list[str]) -> None:
    out = decode("influx/a/b", payload)
    assert reasons(out) == expected
    assert out.n_readings == len(expected) + len(out.readings)
    assert all(r.detail for r in out.rejections)


def test_influx_too_many_lines_or_fields() -> None:
    assert len(decode("influx/gw", "m,host=h a=1\n" * 3, max_readings=3).readings) == 3
    assert reasons(decode("influx/gw", "m,host=h a=1\n" * 4, max_readings=3)) == [
        "too_many_readings"
    ]
    assert reasons(decode("influx/gw", "m,host=h a=1,b=2\n" * 2, max_readings=3)) == [
        "too_many_readings"
    ]


# -- format selection and JSON keys -----------------------------------------------------------


def test_format_by_topic_filter_first_match_wins() -> None:
    dec = PayloadDecoder(
        ("sensors/{device}/{metric}",),
        PayloadLimits(formats={"lines/special/#": "json", "lines/#": "influx"}),
        clock=lambda: ARRIVAL,
    )
    assert dec.decode("lines/a", b"m,host=h v=1").readings[0].metric == "m_v"
    # json: the topic must match a pattern
    assert [r.reason for r in dec.decode("lines/special/x", b"1").rejections] == ["bad_topic"]
    assert dec.decode("sensors/d/m", b"1").readings[0].value == 1.0


def test_format_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="filter"):
        PayloadLimits(formats={"a/#/b": "influx"})
    with pytest.raises(ValueError, match="none of"):
        PayloadLimits(formats={"a/#": "xml"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="both a time and a value"):
        PayloadLimits(time_keys=("ts", "value"))
    with pytest.raises(ValueError, match="twice"):
        PayloadLimits(value_keys=("v", "v"))
    with pytest.raises(ValueError, match="non-empty"):
        PayloadLimits(device_tags=())


@pytest.mark.parametrize("key", ["ts", "timestamp", "time"])
def test_each_default_time_key_is_read(key: str) -> None:
    out = decode("sensors/d/m", {key: 1_699_999_000, "value": 1})
    assert [r.ts for r in out.readings] == [1_699_999_000.0]


def test_configured_time_and_value_keys() -> None:
    limits = {"time_keys": ("t", "when"), "value_keys": ("v", "val")}
    out = decode("sensors/d/m", {"t": 1_699_999_000.5, "v": 2.5}, **limits)  # fast path
    assert out.readings == [Reading("d", "m", 1_699_999_000.5, 2.5)]
    out = decode("sensors/d/m", [{"when": "2023-11-14T22:13:20Z", "val": 3}], **limits)
    assert out.readings == [Reading("d", "m", ARRIVAL, 3.0)]
    assert reasons(decode("sensors/d/m", {"t": 1, "when": 2, "v": 1}, **limits)) == ["bad_ts"]
    assert reasons(decode("sensors/d/m", {"v": 1, "val": 2}, **limits)) == ["missing_field"]
    assert reasons(decode("sensors/d/m", {"value": 1}, **limits)) == ["missing_field"]
    # a given time that cannot be read is a rejection, never the arrival time
    assert reasons(decode("sensors/d/m", {"when": "soon", "v": 1}, **limits)) == ["bad_ts"]


def test_the_readme_examples_give_the_readings_it_says() -> None:
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("**Telegraf and InfluxDB line protocol.**", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    words = shlex.split(block, comments=True)
    env = dict(w.removeprefix("export ").split("=", 1) for w in words if w.startswith("IOTAD_"))
    formats = json.loads(env["IOTAD_PAYLOAD__FORMATS"])
    dec = PayloadDecoder(limits=PayloadLimits(formats=formats), clock=lambda: 1_764_320_500.0)
    found = []
    for i, word in enumerate(words):
        if word == "mosquitto_pub":
            topic, payload = words[i + 2], words[i + 4]
            assert (words[i + 1], words[i + 3]) == ("-t", "-m")
            out = dec.decode(topic, payload.encode())
            assert out.rejections == []
            found.append([tuple(r) for r in out.readings])
    at = 1_764_320_400.0  # 2025-11-28 09:00 UTC, as the README says
    press01 = [
        ("press01", "modbus_temperature", at, 23.4),
        ("press01", "modbus_current", at, 4.0),
    ]
    assert found[0] == press01
    assert found[1][:2] == press01 and [r[0] for r in found[1][2:]] == ["press02", "press02"]
    assert "2025-11-28 09:00 UTC" in section
