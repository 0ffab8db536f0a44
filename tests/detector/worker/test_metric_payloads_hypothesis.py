"""Telegraf JSON and line protocol under hypothesis: the decoder never raises, every field
counts exactly once, and generated valid input comes back as the readings it carries.

Follows tests/detector/worker/test_payloads_hypothesis.py (its `check` holds for every message).
"""

from __future__ import annotations

import json
import math
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.engine.readings import valid_name
from detector.worker.lineprotocol import LineError, format_line, format_value, parse_line
from detector.worker.payloads import PayloadDecoder, PayloadLimits
from tests.detector.worker.test_payloads_hypothesis import ARRIVAL, anything, check, hostile_names

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FORMATS = {"tg/#": "telegraf", "lp/#": "influx"}
TS_S = st.integers(min_value=1_000_000_000, max_value=int(ARRIVAL))


def decoder(**limits: object) -> PayloadDecoder:
    return PayloadDecoder(
        ("tg/{device}", "lp/{device}"),
        PayloadLimits(max_readings=50, formats=FORMATS, **limits),  # type: ignore[arg-type]
        clock=lambda: ARRIVAL,
    )


def sanitised(name: str) -> str | None:
    """Our name rules applied as the README says: runs of other characters become one _."""
    if valid_name(name):
        return name
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name)
    return safe if valid_name(safe) else None


# -- anything at all --------------------------------------------------------------------------


@FAST
@given(topic=st.sampled_from(["tg/d", "lp/d", "tg/a/b", "lp/a/b"]), payload=st.binary(max_size=300))
def test_random_bytes(topic: str, payload: bytes) -> None:
    check(decoder().decode(topic, payload))


line_chars = st.text(alphabet=st.sampled_from(list('ab=, "\\#1i.eu-tT\n\r')), max_size=60)


@FAST
@given(text=st.one_of(line_chars, st.text(max_size=80)))
def test_random_lines_count_once_per_field(text: str) -> None:
    out = decoder().decode("lp/d", text.encode())
    check(out)
    lines = [ln for ln in text.split("\n") if ln.strip() and not ln.lstrip().startswith("#")]
    expected = 0
    for ln in lines:
        ln = ln.rstrip("\r")
        if ln.endswith(" ") and not ln.endswith("\\ "):
            ln = ln.rstrip(" ")
        try:
            expected += len(parse_line(ln).fields)
        except LineError:
            expected += 1
    assert out.n_readings == (expected or 1)


# -- Telegraf JSON: every field counted -------------------------------------------------------

metric_obj = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(hostile_names, anything),
        "tags": st.one_of(
            st.dictionaries(st.sampled_from(["host", "device", "x"]), anything), anything
        ),
        "fields": st.one_of(
            st.dictionaries(hostile_names, st.one_of(st.floats(), anything), max_size=6), anything
        ),
        "timestamp": st.one_of(TS_S, st.integers(), st.floats(), anything),
    },
)
telegraf_message = st.one_of(
    metric_obj,
    st.lists(st.one_of(metric_obj, anything), max_size=5),
    st.fixed_dictionaries(
        {"metrics": st.one_of(st.lists(st.one_of(metric_obj, anything), max_size=5), anything)}
    ),
)


def carried(doc: object) -> int:
    def of_metric(obj: object) -> int:
        if isinstance(obj, dict):
            fields = obj.get("fields")
            return len(fields) if isinstance(fields, dict) and fields else 1
        return 1

    if isinstance(doc, dict) and "fields" not in doc and "metrics" in doc:
        doc = doc["metrics"]
        if not isinstance(doc, list):
            return 1
    if isinstance(doc, list):
        return sum(of_metric(m) for m in doc) or 1
    return of_metric(doc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=telegraf_message, topic=st.sampled_from(["tg/dev-1", "tg/a/b"]))
def test_telegraf_every_field_counted_exactly_once(doc: object, topic: str) -> None:
    out = decoder().decode(topic, json.dumps(doc).encode())
    check(out)
    assert out.n_readings == carried(doc)


# -- Telegraf JSON: valid metrics round-trip --------------------------------------------------

safe_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)


@FAST
@given(
    metrics=st.lists(
        st.tuples(
            safe_names,
            safe_names,
            st.dictionaries(safe_names, finite, min_size=1, max_size=5),
            TS_S,
        ),
        min_size=1,
        max_size=5,
    ),
    unit=st.sampled_from(["s", "ms", "us", "ns"]),
    declared=st.booleans(),
)
def test_telegraf_round_trip(
    metrics: list[tuple[str, str, dict[str, float], int]], unit: str, declared: bool
) -> None:
    scale = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    doc = {
        "metrics": [
            {"name": name, "tags": {"host": host}, "fields": fields, "timestamp": ts * scale}
            for name, host, fields, ts in metrics
        ]
    }
    out = decoder(telegraf_ts_unit=unit if declared else "auto").decode(
        "tg/gw", json.dumps(doc).encode()
    )
    expected = [
        (host, sanitised(f"{name}_{field}"), float(ts), value)
        for name, host, fields, ts in metrics
        for field, value in fields.items()
    ]
    assert [tuple(r) for r in out.readings] == [r for r in expected if r[1] is not None]
    assert len(out.rejections) == sum(r[1] is None for r in expected)
    assert {r.reason for r in out.rejections} <= {"bad_name"}


# -- line protocol: valid lines round-trip ----------------------------------------------------

# Any text but newlines (they separate lines); a measurement starting with '#' is a comment.
lp_names = st.text(
    st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
)
measurements = lp_names.filter(lambda s: not s.startswith("#"))
field_values = st.one_of(
    finite.map(lambda v: (v, "")),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: (v, "i")),
    st.integers(0, 2**64 - 1).map(lambda v: (v, "u")),
    st.booleans().map(lambda v: (v, "")),
    st.text(
        st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=10
    ).map(lambda v: (v, "")),
)


@FAST
@given(
    measurement=measurements,
    tags=st.dictionaries(lp_names, lp_names, max_size=3),
    fields=st.dictionaries(lp_names, field_values, min_size=1, max_size=5),
    ts=st.one_of(st.none(), TS_S),
)
def test_line_protocol_round_trip(
    measurement: str,
    tags: dict[str, str],
    fields: dict[str, tuple[object, str]],
    ts: int | None,
) -> None:
    formatted = {k: format_value(v, kind) for k, (v, kind) in fields.items()}  # type: ignore[arg-type]
    line = format_line(measurement, tags, formatted, None if ts is None else ts * 10**9)
    parsed = parse_line(line)
    assert parsed.measurement == measurement
    assert parsed.tags == tags
    assert [k for k, _ in parsed.fields] == list(fields)
    for (_, got), (want, _) in zip(parsed.fields, fields.values(), strict=True):
        assert (got == want and type(got) is type(want)) or (
            isinstance(want, int) and not isinstance(want, bool) and got == want
        )

    # Through the decoder: numbers are readings under sanitised names, the rest not_a_number.
    all_tags = {**tags, "host": "gw-1"} if "device" not in tags else tags
    out = decoder().decode(
        "lp/x",
        format_line(measurement, all_tags, formatted, None if ts is None else ts * 10**9).encode(),
    )
    check(out)
    device = sanitised(all_tags.get("device", all_tags.get("host", "")))
    expected_ts = ARRIVAL if ts is None else float(ts)
    accepted = []
    for name, (value, _) in fields.items():
        metric = sanitised(f"{measurement}_{name}")
        if isinstance(value, (bool, str)) or metric is None or device is None:
            continue
        accepted.append((device, metric, expected_ts, float(value)))
    assert [tuple(r) for r in out.readings] == accepted
    assert out.n_readings == len(fields)


@FAST
@given(
    time_keys=st.lists(safe_names, min_size=1, max_size=3, unique=True),
    value_keys=st.lists(safe_names, min_size=1, max_size=3, unique=True),
    pick=st.integers(0, 2),
    ts=st.floats(min_value=1e9, max_value=ARRIVAL),
    value=finite,
)
def test_configured_keys_round_trip(
    time_keys: list[str], value_keys: list[str], pick: int, ts: float, value: float
) -> None:
    reserved = {"device", "metric", "values"}
    value_keys = [k for k in value_keys if k not in time_keys and k not in reserved]
    time_keys = [k for k in time_keys if k not in reserved]
    if not value_keys or not time_keys:
        return
    dec = PayloadDecoder(
        limits=PayloadLimits(time_keys=tuple(time_keys), value_keys=tuple(value_keys)),
        clock=lambda: ARRIVAL,
    )
    tk, vk = time_keys[pick % len(time_keys)], value_keys[pick % len(value_keys)]
    out = dec.decode("sensors/d/m", json.dumps({tk: ts, vk: value}).encode())
    assert [tuple(r) for r in out.readings] == [("d", "m", ts, value)]
    assert math.isfinite(out.readings[0].value)
