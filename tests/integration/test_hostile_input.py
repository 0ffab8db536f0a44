"""Hostile and careless input through a real mosquitto (issue 11): huge values, a worker fed
its own output, filters left in a persistent session, retained messages, readings from the
future, a spoofed status. Each test failed on the code before the fix.

Waits are on conditions; "nothing more came" is shown with a barrier: a last message whose
outcome can only be seen after everything published before it was handled.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import (
    TINY_START_TS,
    TINY_STEP_S,
    Collector,
    Mosquitto,
    WorkerProcess,
    publish_all,
)
from tests.integration.test_reliability_broker import numbered

pytestmark = pytest.mark.integration


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not met: {what}")
        time.sleep(0.02)


def dead_letters(out: Collector) -> list[dict]:
    return [json.loads(m.payload) for m in out.snapshot("iotad/deadletter")]


def retained_status(port: int, worker_id: str) -> dict | None:
    """The retained status of `worker_id` as a fresh subscriber sees it (None: none)."""
    c = Collector(port, [f"iotad/status/{worker_id}"])
    try:
        try:
            msgs = c.wait_for(lambda ms: len(ms) >= 1, timeout_s=2)
        except TimeoutError:
            return None
        return json.loads(msgs[0].payload) if msgs[0].payload else None
    finally:
        c.close()


# -- 1. a huge finite value ------------------------------------------------------------------


def test_a_huge_value_is_rejected_and_its_series_still_alerts(
    mosquitto: Mosquitto, start_worker, collect
) -> None:
    # {"value": 1e308} used to be accepted: the series' statistics overflowed and a +65
    # spike on it afterwards went unflagged while the control series fired.
    out = collect("alerts/#", "iotad/deadletter")
    worker = start_worker()
    keys = ("line1/temperature", "line2/temperature")  # line2: the control
    before = numbered(40, keys)
    poison = [
        (
            "sensors/line1/temperature",
            json.dumps({"ts": TINY_START_TS + 1540 * TINY_STEP_S - 30, "value": 1e308}),
        )
    ]
    after = numbered(30, keys, first_step=1540, seed=8)
    spike_step = 20  # both series +65 at this step
    spiked = []
    for i, (topic, payload) in enumerate(after):
        if i // len(keys) == spike_step:
            doc = json.loads(payload)
            doc["value"] += 65.0
            payload = json.dumps(doc).encode()
        spiked.append((topic, payload))
    publish_all(mosquitto.port, before + poison + spiked)
    total = len(before) + 1 + len(spiked)
    worker.wait_metric("iotad_readings_total", lambda v: v >= total)
    assert worker.sample("iotad_readings_rejected_total", reason="out_of_range") == 1
    assert worker.sample("iotad_readings_accepted_total") == total - 1

    def firing(ms: list) -> set[str]:
        docs = [json.loads(m.payload) for m in ms if m.topic.startswith("alerts/")]
        return {f"{d['device']}/{d['metric']}" for d in docs if d["state"] == "firing"}

    out.wait_for(lambda ms: firing(ms) >= set(keys))
    out.wait_for(lambda ms: any(m.topic == "iotad/deadletter" for m in ms))
    assert [d["reason"] for d in dead_letters(out)] == ["out_of_range"]


# -- 2. the worker's own output as input -----------------------------------------------------


def test_input_filters_over_the_workers_own_output_are_refused_at_start(
    mosquitto: Mosquitto, tiny_artifact, tmp_path
) -> None:
    w = WorkerProcess(mosquitto, tiny_artifact, tmp_path, "w-hash", {"IOTAD_MQTT__TOPICS": "#"})
    w.start()
    try:
        code = w.wait(timeout_s=60)
    finally:
        w.stop()  # a worker that did start would loop on the shared broker: never leave it
    assert code == 2
    lines = w.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("iotad run: setting IOTAD_MQTT__TOPICS: filter '#'")


def leave_session_with(port: int, client_id: str, filters: list[str]) -> None:
    """Subscribe `filters` in a persistent session of `client_id`, then go away: what an
    earlier worker (or an older version of it) leaves behind on the broker."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 60
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    try:
        done = []
        c.on_subscribe = lambda *a: done.append(1)
        c.subscribe([(f, 1) for f in filters])
        wait_until(lambda: bool(done), "SUBACK")
    finally:
        c.disconnect()
        c.loop_stop()


def test_a_hash_filter_left_in_the_session_does_not_loop(
    mosquitto: Mosquitto, start_worker, collect
) -> None:
    # An earlier run with IOTAD_MQTT__TOPICS='#' (before it was refused) left '#' in the
    # session: the worker read its own dead letters and republished them, 1.5-4k msg/s,
    # and switching back to sensors/# did not stop it.
    worker_id = "w-stale-hash"
    leave_session_with(mosquitto.port, worker_id, ["#"])
    out = collect("iotad/deadletter")
    worker = start_worker(worker_id=worker_id)
    # The worker's packets on connect (unsubscribe, subscribe, status) reach the broker in
    # order: once its status is there, so is the rest.
    wait_until(
        lambda: (retained_status(mosquitto.port, worker_id) or {}).get("state") == "online",
        "online status",
    )
    bad = [(f"sensors/stale{i}/temp", b"{not json") for i in range(3)]
    publish_all(mosquitto.port, bad)
    out.wait_for(lambda ms: len(ms) >= 3)
    # Barrier: one more bad message. Its dead letter comes after everything the first three
    # could have caused; a loop would have made hundreds by then.
    publish_all(mosquitto.port, [("sensors/barrier/temp", b"{not json")])
    out.wait_for(lambda ms: any(b"barrier" in m.payload for m in ms))
    assert [d["topic"] for d in dead_letters(out)] == [t for t, _ in bad] + ["sensors/barrier/temp"]
    assert worker.sample("iotad_deadletter_total") == 4
    assert worker.sample("iotad_readings_rejected_total", reason="own_output") == 0
    # The stale '#' was dropped: a topic outside sensors/# no longer reaches the worker.
    before = worker.sample("iotad_messages_total")
    publish_all(mosquitto.port, [("elsewhere/x", b"1"), ("sensors/barrier2/temp", b"{no")])
    out.wait_for(lambda ms: any(b"barrier2" in m.payload for m in ms))
    assert worker.sample("iotad_messages_total") == before + 1
    assert worker.sample("iotad_readings_rejected_total", reason="not_subscribed") == 0


def test_filters_an_earlier_run_recorded_are_unsubscribed(
    mosquitto: Mosquitto, start_worker
) -> None:
    worker_id = "w-old-filters"
    first = start_worker(worker_id=worker_id, env={"IOTAD_MQTT__TOPICS": "sensors/#,plant/+/raw"})
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    status = retained_status(mosquitto.port, worker_id)
    assert status is not None and status["topics"] == ["sensors/#", "plant/+/raw"]
    second = start_worker(worker_id=worker_id)  # sensors/# only
    wait_until(lambda: "unsubscribed plant/+/raw" in second.log(), "plant/+/raw unsubscribed")
    publish_all(mosquitto.port, [("plant/a/raw", b"1"), ("sensors/after/temp", b"1.5")])
    second.wait_metric("iotad_readings_accepted_total", lambda v: v >= 1)
    assert second.sample("iotad_messages_total") == 1  # plant/a/raw never came


# -- 4. retained messages ----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_retained_readings_are_not_taken_again_at_each_start(
    mosquitto: Mosquitto, start_worker, collect, version: str
) -> None:
    device = f"ret-{version.replace('.', '')}-{uuid.uuid4().hex[:6]}"
    ts = TINY_START_TS + 5000 * TINY_STEP_S
    retained = [
        (f"sensors/{device}/bare", b"21.5"),
        (f"sensors/{device}/json", json.dumps({"ts": ts, "value": 3.0}).encode()),
    ]
    publish_all(mosquitto.port, retained, retain=True)
    out = collect("iotad/deadletter")
    worker_id = f"w-{device}"
    try:
        for run in range(2):
            worker = start_worker(worker_id=worker_id, args=["--mqtt-version", version])
            # Barrier: a live reading, published after the subscription (and so after any
            # retained message the broker sends on subscribe).
            live = (f"sensors/{device}/live", json.dumps({"ts": ts + run, "value": 1.0}))
            publish_all(mosquitto.port, [live])
            worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= 1)
            assert worker.sample("iotad_readings_accepted_total") == 1
            if version == "5":  # the broker was asked not to send them at all
                assert worker.sample("iotad_messages_total") == 1
            else:  # MQTT 3.1.1: sent flagged, counted and skipped, not dead-lettered
                assert worker.sample("iotad_readings_rejected_total", reason="retained") == 2
                assert worker.sample("iotad_messages_total") == 3
            worker.signal(signal.SIGTERM)
            assert worker.wait() == 0
        # A reading published *with* the retain flag while the worker runs is a live one.
        worker = start_worker(worker_id=worker_id, args=["--mqtt-version", version])
        fresh = [(f"sensors/{device}/json", json.dumps({"ts": ts + 60, "value": 4.0}).encode())]
        publish_all(mosquitto.port, fresh, retain=True)
        worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= 1)
        publish_all(mosquitto.port, [(f"sensors/{device}/x", b"{barrier")])
        out.wait_for(lambda ms: any(b"barrier" in m.payload for m in ms))
        assert [d["reason"] for d in dead_letters(out)] == ["malformed_json"]
    finally:
        publish_all(mosquitto.port, [(t, b"") for t, _ in retained], retain=True)


# -- 5. readings from the future -------------------------------------------------------------


def test_a_reading_from_the_future_does_not_blind_its_series(
    mosquitto: Mosquitto, start_worker
) -> None:
    # A reading 290 s ahead (inside max_future_s) made every genuine reading of the next
    # ~5 minutes out_of_order.
    worker = start_worker()
    now = time.time()
    topic = "sensors/future/temp"
    past = [(topic, json.dumps({"ts": now - 60 + i, "value": 20.0 + i % 3})) for i in range(20)]
    ahead = [(topic, json.dumps({"ts": now + 290, "value": 21.0}))]
    # Genuine readings stamped a few seconds on (as they would be, arriving later).
    later = [(topic, json.dumps({"ts": now + 3 + i, "value": 20.0 + i % 3})) for i in range(10)]
    publish_all(mosquitto.port, past + ahead + later)
    worker.wait_metric("iotad_readings_total", lambda v: v >= 31)
    assert worker.sample("iotad_readings_accepted_total") == 31
    assert worker.sample("iotad_readings_rejected_total", reason="out_of_order") == 0


# -- 9. the status topic -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_a_spoofed_offline_status_is_answered_with_online(
    mosquitto: Mosquitto, start_worker, version: str
) -> None:
    worker_id = f"w-spoof-{version.replace('.', '')}"
    worker = start_worker(worker_id=worker_id, args=["--mqtt-version", version])
    mine = retained_status(mosquitto.port, worker_id)
    assert mine is not None and mine["state"] == "online"
    spoof = json.dumps({"state": "offline", "worker": worker_id})
    publish_all(mosquitto.port, [(f"iotad/status/{worker_id}", spoof)], retain=True)

    def online_again() -> bool:
        doc = retained_status(mosquitto.port, worker_id)
        return doc is not None and doc["state"] == "online" and doc["run"] == mine["run"]

    wait_until(online_again, "the worker re-asserted its status")
    assert "written by someone else" in worker.log()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    # Its own offline is not "someone else": it stands.
    doc = retained_status(mosquitto.port, worker_id)
    assert doc is not None and doc["state"] == "offline"
