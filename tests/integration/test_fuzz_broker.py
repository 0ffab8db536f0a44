"""Hypothesis-generated topics and payloads published to a real mosquitto, into a running
worker (issue 11: fuzzing the decoder alone missed what the core did with what it let in).

The worker runs in this process (`detector.worker.run_cli.serve`, the very code `iotad run` runs) so
that its per-series state can be inspected afterwards. It must keep going; every message
must be accounted for (readings accepted or rejected with a known reason, exactly as many as
the decoder says the message carries); every rejection that is dead-lettered arrives on the
dead-letter topic; and no series' state may become non-finite.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from detector.engine.readings import NOT_DEAD_LETTERED
from detector.worker.metrics import REJECT_REASONS
from detector.worker.payloads import PayloadDecoder, PayloadLimits
from tests.conftest import TINY_SERIES, Mosquitto, publish_all
from tests.detector.core_fixtures import non_finite_state

pytestmark = pytest.mark.integration

KNOWN_REASONS = set(REJECT_REASONS)  # each documented: tests/test_readme.py
LIMITS = PayloadLimits(max_bytes=2048, max_readings=20)
NOW = time.time()


class LiveWorker:
    """`serve()` on a thread against the test broker, with its registry and its core."""

    def __init__(self, mosquitto: Mosquitto, artifact: Path) -> None:
        from detector.config.settings import load_settings
        from detector.worker.run_cli import serve

        self.settings = load_settings(
            {
                "worker_id": "w-fuzz",
                "mqtt": {
                    "host": mosquitto.host,
                    "port": mosquitto.port,
                    "session_expiry_s": 60,
                    "connect_timeout_s": 10,
                },
                "metrics": {"host": "127.0.0.1", "port": 0},
                "model": {"path": str(artifact)},
                "payload": {"max_bytes": LIMITS.max_bytes, "max_readings": LIMITS.max_readings},
                # Small: the cap on series is part of what is fuzzed.
                "detection": {"max_series": 200, "learn_readings": 5},
            },
            env_file=None,
            secrets_dir=None,
        )
        self.registry = CollectorRegistry()
        self.stop = threading.Event()
        self.service: Any = None
        self._up = threading.Event()
        self.code: int | None = None

        def started(service: Any) -> None:
            self.service = service
            self._up.set()

        def run() -> None:
            self.code = serve(
                self.settings, stop=self.stop, registry=self.registry, started=started
            )
            self._up.set()

        self.thread = threading.Thread(target=run, name="fuzz-worker", daemon=True)
        self.thread.start()
        assert self._up.wait(60) and self.service is not None, f"exit {self.code}"

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels or None) or 0.0

    def rejected(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for family in self.registry.collect():
            for s in family.samples:
                if s.name == "iotad_readings_rejected_total" and s.value:
                    out[s.labels["reason"]] += int(s.value)
        return out

    def close(self) -> int | None:
        self.stop.set()
        self.thread.join(60)
        return self.code


@pytest.fixture
def live_worker(mosquitto: Mosquitto, tiny_artifact: Path) -> Iterator[LiveWorker]:
    w = LiveWorker(mosquitto, tiny_artifact)
    yield w
    w.close()


# -- what is published ------------------------------------------------------------------------

# Publishable topic levels: paho refuses + and # in a topic, and mosquitto disconnects a
# client whose topic holds NUL, control characters or non-characters (so those never reach
# a worker; the decoder's own tests feed it such topics directly).
topic_chars = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs", "Cn"), exclude_characters="+#"
)
levels = st.one_of(
    st.sampled_from(["fz-a", "fz-b", "temp", "rpm", "..", ".", "", " ", "ü", "温度", "a" * 70]),
    st.text(alphabet=topic_chars, max_size=12),
    st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True),
)
# Names inside payloads may hold anything JSON can.
names = st.one_of(levels, st.text(max_size=12))
topics = st.one_of(
    st.sampled_from([f"sensors/{k}" for k in TINY_SERIES] + ["sensors/fz-a/temp"]),
    st.lists(levels, min_size=1, max_size=3).map(lambda ls: "sensors/" + "/".join(ls)),
)
huge = st.sampled_from([1e308, -1e308, 1.7976931348623157e308, 1e16, -1e15, 1e15, 5e-324])
values = st.one_of(
    st.floats(width=64),  # NaN and infinities included
    huge,
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from(["NaN", "Infinity", "-inf", "hot", "", None, True, [], {}]),
)
stamps = st.one_of(
    st.floats(min_value=NOW - 86_400 * 30, max_value=NOW + 600),  # some beyond max_future_s
    st.integers(min_value=int(NOW * 1000) - 10**9, max_value=int(NOW * 1000) + 10**6),  # ms
    st.sampled_from([0, 1000, -5, 1e300, 1e12, "2026-11-30T10:00:00Z", "yesterday", None]),
)
time_keys = st.sampled_from(["ts", "timestamp", "time"])


@st.composite
def reading_objects(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc[draw(time_keys)] = draw(stamps)
    if draw(st.integers(0, 4)) == 0:
        doc["values"] = draw(st.dictionaries(names, values, max_size=4))
    else:
        doc["value"] = draw(values)
    if draw(st.integers(0, 3)) == 0:
        doc["device"] = draw(names)
    if draw(st.integers(0, 3)) == 0:
        doc["metric"] = draw(names)
    return doc


def _json(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


payloads = st.one_of(
    reading_objects().map(_json),
    st.lists(reading_objects(), min_size=0, max_size=24).map(_json),  # past max_readings too
    values.map(_json),  # bare numbers and other bare JSON
    st.sampled_from([b"1e308", b"-1e308", b"1e400", b"NaN", b"nan", b"-0", b"", b"[[[[[[1]]]]]]"]),
    st.binary(max_size=200),
    st.binary(min_size=LIMITS.max_bytes + 1, max_size=LIMITS.max_bytes + 50),  # oversize
)
messages = st.lists(st.tuples(topics, payloads), min_size=1, max_size=12)


def expected_readings(batch: list[tuple[str, bytes]]) -> int:
    """How many readings the messages carry, by the counting rule (decoded offline)."""
    decoder = PayloadDecoder(limits=LIMITS)
    return sum(decoder.decode(t, p).n_readings for t, p in batch)


def test_hypothesis_messages_through_mosquitto_are_all_accounted_for(
    mosquitto: Mosquitto, live_worker: LiveWorker, collect, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = collect("iotad/deadletter")
    w = live_worker
    published = {"messages": 0, "readings": 0}
    # The model's series first, so that hostile values meet series that are being scored.
    primer = [
        (f"sensors/{key}", _json({"ts": NOW - 86_400 * 40 + 60 * i, "value": 20.0 + i % 5}))
        for i in range(40)
        for key in TINY_SERIES
    ]

    def send(batch: list[tuple[str, bytes]]) -> None:
        publish_all(mosquitto.port, batch)
        published["messages"] += len(batch)
        published["readings"] += expected_readings(batch)
        deadline = time.monotonic() + 30
        # Wait on the condition: every message handed to the core and counted.
        while w.sample("iotad_messages_total") < published["messages"]:
            assert w.service.worker.alive, "detection thread died"
            assert time.monotonic() < deadline, "worker did not take every message"
            time.sleep(0.01)

    send(primer)

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking through a broker
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(batch=messages)
    def run(batch: list[tuple[str, bytes]]) -> None:
        send(batch)
        assert w.sample("iotad_messages_total") == published["messages"]
        assert w.sample("iotad_readings_total") == published["readings"]

    run()

    # The worker kept going and is still ready.
    assert w.service.worker.alive and w.service.worker.failed is None
    assert w.service.ready() == (True, "ready")
    # Every reading accepted or rejected with a known reason, none twice, none lost.
    rejected = w.rejected()
    accepted = int(w.sample("iotad_readings_accepted_total"))
    assert set(rejected) <= KNOWN_REASONS, set(rejected) - KNOWN_REASONS
    assert accepted + sum(rejected.values()) == published["readings"]
    assert w.sample("iotad_readings_total") == published["readings"]
    assert rejected["core_error"] == 0
    # Every rejection that is dead-lettered is on the dead-letter topic, with its reason.
    lettered = Counter({r: n for r, n in rejected.items() if r not in NOT_DEAD_LETTERED})
    dead.wait_for(lambda ms: len(ms) >= sum(lettered.values()), timeout_s=30)
    got = Counter(json.loads(m.payload)["reason"] for m in dead.snapshot())
    assert got == lettered
    # No series' state went non-finite (the np.isfinite check over all per-slot state).
    core = w.service.core
    assert non_finite_state(core) == []
    with capsys.disabled():
        print(
            f"\nfuzz through mosquitto: {published['messages']} messages, "
            f"{published['readings']} readings: accepted {accepted}, rejected "
            f"{sum(rejected.values())} {dict(sorted(rejected.items()))}; "
            f"{core.active_series} series active; per-slot state all finite"
        )
    assert w.close() == 0
