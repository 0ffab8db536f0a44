"""Sparkplug B under hypothesis: arbitrary bytes never crash the decoder and count each
metric at most once; generated valid payloads come back as the readings they carry."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.engine.readings import valid_name
from detector.worker.payload_checks import DECODER_REASONS
from detector.worker.payloads import Decoded, PayloadDecoder, PayloadLimits
from detector.worker.sparkplug_schema import DataType, Payload
from tests.detector.worker.test_metric_payloads_hypothesis import sanitised
from tests.detector.worker.test_payloads_hypothesis import ARRIVAL, SNAKE, hostile_names
from tests.sparkplug_payloads import birth, data, payload

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOPICS = [
    "spBv1.0/g/NBIRTH/n",
    "spBv1.0/g/NDATA/n",
    "spBv1.0/g/DBIRTH/n/d",
    "spBv1.0/g/DDATA/n/d",
    "spBv1.0/g/NDEATH/n",
    "spBv1.0/g/DDEATH/n/d",
]
T_MS = st.integers(min_value=1_000_000_000_000, max_value=int(ARRIVAL * 1000))


def decoder(**limits: object) -> PayloadDecoder:
    return PayloadDecoder(
        limits=PayloadLimits(formats={"spBv1.0/#": "sparkplug"}, max_readings=50, **limits),  # type: ignore[arg-type]
        clock=lambda: ARRIVAL,
    )


def check(out: Decoded, metrics: int | None) -> None:
    """Invariants of every outcome; `metrics`: how many the payload carries (None: not
    a parseable payload), each counted exactly once unless the message is rejected whole."""
    for r in out.readings:
        assert isinstance(r.value, float) and math.isfinite(r.value)
        assert math.isfinite(r.ts) and r.ts <= ARRIVAL + 301.0
        assert valid_name(r.device) and valid_name(r.metric)
    for rej in out.rejections:
        assert SNAKE.match(rej.reason) and rej.reason in DECODER_REASONS, rej.reason
        assert rej.detail
    if metrics is not None and out.n_readings > 1:
        assert out.n_readings <= max(metrics, 1)


def metric_count(body: bytes) -> int | None:
    try:
        return len(Payload.FromString(body).metrics)
    except Exception:
        return None


@FAST
@given(topic=st.sampled_from(TOPICS), body=st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(topic: str, body: bytes) -> None:
    dec = decoder()
    # with and without the node's BIRTH seen
    for warm in (False, True):
        if warm:
            dec.decode("spBv1.0/g/NBIRTH/n", birth([("a", 1, DataType.Double, 1.0)], bdseq=0))
            dec.decode("spBv1.0/g/DBIRTH/n/d", birth([("a", 1, DataType.Int16, -3)]))
        check(dec.decode(topic, body), metric_count(body))


metric_specs = st.lists(
    st.tuples(
        hostile_names,
        st.sampled_from(
            [DataType.Double, DataType.Float, DataType.Int32, DataType.Int64, DataType.UInt16]
        ),
    ),
    max_size=20,
    unique_by=lambda t: t[0],
)


def _value(datatype: DataType, i: int, x: float) -> float | int:
    if datatype in (DataType.Double, DataType.Float):
        return x if datatype == DataType.Double else 0.5 * i
    if datatype == DataType.UInt16:
        return i * 7
    return -i * 1000 + 3


@FAST
@given(specs=metric_specs, x=st.floats(-1e12, 1e12), ts_ms=T_MS, device=st.booleans())
def test_valid_payloads_round_trip(
    specs: list[tuple[str, DataType]], x: float, ts_ms: int, device: bool
) -> None:
    dec = decoder()
    prefix = "spBv1.0/g/{}/gw 1" + ("/press#4" if device else "")
    metrics = [(name, i, dt, _value(dt, i, x)) for i, (name, dt) in enumerate(specs)]
    out = dec.decode(prefix.format("DBIRTH" if device else "NBIRTH"), birth(metrics, ts_ms=ts_ms))
    want_device = "gw_1_press_4" if device else "gw_1"
    expected = [
        (want_device, sanitised(name), ts_ms / 1000, float(value))
        for name, _, _, value in metrics
        if name and sanitised(name) is not None
    ]
    assert [tuple(r) for r in out.readings] == expected
    assert {r.reason for r in out.rejections} <= {"bad_name", "missing_field"}
    assert out.n_readings == len(metrics)
    # DATA by alias: the same names, new values
    later = ts_ms + 1000
    body = payload(
        [(None, i, dt, _value(dt, i + 1, x)) for i, (_, dt) in enumerate(specs)],
        ts_ms=later,
        with_datatype=False,
    )
    out = dec.decode(prefix.format("DDATA" if device else "NDATA"), body)
    assert [r.metric for r in out.readings] == [e[1] for e in expected]
    assert [r.value for r in out.readings] == [
        float(_value(dt, i + 1, x)) for i, (n, dt) in enumerate(specs) if n and sanitised(n)
    ]
    assert out.n_readings == len(metrics)


@FAST
@given(aliases=st.lists(st.integers(0, 2**64 - 1), max_size=10), ts_ms=T_MS)
def test_data_by_any_alias_without_birth_is_unknown(aliases: list[int], ts_ms: int) -> None:
    out = decoder().decode(
        "spBv1.0/g/NDATA/n", data([(a, 1.0) for a in aliases], DataType.Double, ts_ms=ts_ms)
    )
    assert out.readings == []
    assert [r.reason for r in out.rejections] == ["unknown_alias"] * len(aliases)
