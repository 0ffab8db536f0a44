"""Alerts and dead letters of a NATS worker go through the JetStream output stream: each is
stored there (the worker's delivery is its publish ack) and MQTT clients of NATS still see
alerts on ``alerts/...``. When the stream cannot take them, the reading that raised them is
not acked, the failure is counted, and they are sent again until they are stored; the copy
of the reading the stream sends meanwhile waits with them.

Waits are on conditions, each with one generous safety timeout against hangs.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detector.worker.partitions import partition_of
from support.nats_servers import PARTITIONS, NatsCluster
from tests.conftest import WorkerProcess
from tests.integration.test_worker_pipeline import stream

pytestmark = pytest.mark.integration

SAFETY_S = 120.0
OUTPUT = "IOTAD_OUTPUT"
OUTPUT_SUBJECTS = ["alerts.>", "iotad.deadletter"]


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SAFETY_S
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


async def _with_js(url: str, job: Callable[[Any], Any]) -> Any:
    import nats

    nc = await nats.connect(url)
    try:
        return await job(nc.jetstream())
    finally:
        await nc.close()


def js(url: str, job: Callable[[Any], Any]) -> Any:
    return asyncio.run(_with_js(url, job))


async def _stored(jsc: Any) -> list[tuple[str, dict]] | None:
    """Every message of the output stream: (subject, JSON body); None when the stream
    could not be read this time (its leader moving after a node died answers 400 or 503
    for a while): the callers wait on a condition and read again."""
    from nats.js.errors import APIError, NotFoundError

    try:
        info = await jsc.stream_info(OUTPUT)
    except NotFoundError:
        return []
    except APIError:
        return None
    out: list[tuple[str, dict]] = []
    if not info.state.messages:
        # An empty stream reports first_seq 0, and message 0 is a bad request: reading it
        # as "not this time" waited forever on a run that raised no alert at all.
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await jsc.get_msg(OUTPUT, seq)
        except NotFoundError:
            continue
        except APIError:
            return None
        out.append((msg.subject, json.loads(msg.data)))
    return out


def read_outputs(url: str) -> list[tuple[str, dict]]:
    """`_stored`, read again until the stream answers (a failure, not a hang, if it never
    does)."""
    deadline = time.monotonic() + SAFETY_S
    while (out := js(url, _stored)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the output stream on {url} did not answer")
        time.sleep(0.1)
    return out


async def _ack_pending(jsc: Any, partition: int) -> int:
    info = await jsc.consumer_info("SENSORS", f"iotad-p{partition:02d}")
    return int(info.num_ack_pending or 0)


async def _publish(jsc: Any, messages: list[tuple[str, bytes]]) -> None:
    for topic, payload in messages:
        await jsc.publish(topic.replace("/", "."), payload)


class MqttAlerts:
    """An MQTT 3.1.1 client of the NATS server (NATS refuses 5) subscribed to alerts/#."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topics: list[str] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, clean_session=True
        )
        client.on_message = lambda _c, _u, msg: self._got(msg.topic)
        client.on_subscribe = lambda *_: subscribed.set()
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.subscribe("alerts/#", qos=0)
        assert subscribed.wait(SAFETY_S)
        self.client = client

    def _got(self, topic: str) -> None:
        with self._lock:
            self.topics.append(topic)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.topics)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def worker(nats_server: NatsCluster, tiny_artifact: Path, tmp_path: Path) -> WorkerProcess:
    w = WorkerProcess(
        nats_server,  # type: ignore[arg-type]
        tiny_artifact,
        tmp_path,
        "w-out",
        env={
            "IOTAD_SOURCE": "nats",
            "IOTAD_NATS__URLS": nats_server.urls,
            "IOTAD_NATS__PARTITIONS": str(PARTITIONS),
            # A missing stream is given up on soon, and the reading comes again soon.
            "IOTAD_NATS__OUTPUT_RETRY_S": "1",
            "IOTAD_NATS__ACK_WAIT_S": "2",
        },
    )
    w.start()
    w.wait_ready(timeout_s=SAFETY_S)
    yield w
    w.stop()


def test_alerts_are_stored_in_the_output_stream_and_seen_over_mqtt(
    nats_server: NatsCluster, worker: WorkerProcess
) -> None:
    url = nats_server.nodes[0].url
    mqtt = MqttAlerts(nats_server.nodes[0].mqtt_port)
    try:
        good = stream()  # the training series continued, with a spike and a level shift
        js(url, lambda jsc: _publish(jsc, good))
        wait_until(lambda: worker.sample("iotad_readings_total") >= len(good), "readings processed")
        events = sum(
            worker.sample("iotad_alert_events_total", state=s) for s in ("firing", "resolved")
        )
        assert events >= 1, "the injected spike and level shift raise no event at all"

        def alerts() -> list[dict]:
            return [body for subject, body in read_outputs(url) if subject.startswith("alerts.")]

        # Acked only once stored: with every reading acked, every alert is in the stream.
        wait_until(
            lambda: all(js(url, lambda jsc, p=p: _ack_pending(jsc, p)) == 0 for p in range(8)),
            "every reading acked",
        )
        stored = alerts()
        assert len(stored) == events
        assert len({(a["id"], a["state"], a["ts"]) for a in stored}) == events
        assert worker.sample("iotad_publish_failed_total", kind="alert_unconfirmed") == 0
        # MQTT clients of the cluster see them where they always did.
        wait_until(lambda: len(mqtt.snapshot()) >= events, "alerts over MQTT")
        assert sorted(mqtt.snapshot()) == sorted(
            f"alerts/{a['device']}/{a['metric']}" for a in stored
        )
    finally:
        mqtt.close()


def test_without_the_output_stream_the_reading_is_not_acked_and_comes_again(
    nats_server: NatsCluster, worker: WorkerProcess
) -> None:
    url = nats_server.nodes[0].url
    js(url, lambda jsc: jsc.delete_stream(OUTPUT))
    bad = ("sensors/m00/temp", b"not a reading")
    partition = partition_of("m00", PARTITIONS)
    js(url, lambda jsc: _publish(jsc, [bad]))
    wait_until(
        lambda: worker.sample("iotad_publish_failed_total", kind="deadletter") >= 1,
        "the lost dead letter counted",
    )
    # Its dead letter was never stored: the message stays unacked...
    assert js(url, lambda jsc: _ack_pending(jsc, partition)) == 1
    assert read_outputs(url) == []
    # ... and comes again (ack wait), to wait with its dead letter, sent again until the
    # stream is back and takes it.
    wait_until(lambda: worker.sample("iotad_nats_redelivered_total") >= 1, "the message again")
    add_output_stream(url)
    wait_until(lambda: js(url, lambda jsc: _ack_pending(jsc, partition)) == 0, "the message acked")
    letters = [body for subject, body in read_outputs(url) if subject == "iotad.deadletter"]
    assert [(d["reason"], d["topic"]) for d in letters] == [("malformed_json", bad[0])]
    assert worker.sample("iotad_outputs_resent_total") >= 1
    # The copy was not decoded again: one rejection, one dead letter.
    assert worker.sample("iotad_readings_rejected_total", reason="malformed_json") == 1


def add_output_stream(url: str) -> None:
    from nats.js import api

    js(url, lambda jsc: jsc.add_stream(api.StreamConfig(name=OUTPUT, subjects=OUTPUT_SUBJECTS)))


def ack_pending(url: str) -> int:
    """Readings delivered and not acked, all partitions."""
    return sum(js(url, lambda jsc, p=p: _ack_pending(jsc, p)) for p in range(PARTITIONS))


def test_an_alert_given_up_is_stored_once_later_and_its_reading_acked_only_then(
    nats_server: NatsCluster, worker: WorkerProcess
) -> None:
    """Issue 12: an alert whose publish was given up used to be lost. Its reading came again
    unacked, the core dropped it as a duplicate, and nothing raised the alert again."""
    url = nats_server.nodes[0].url
    js(url, lambda jsc: jsc.delete_stream(OUTPUT))
    good = stream()
    js(url, lambda jsc: _publish(jsc, good))
    wait_until(lambda: worker.sample("iotad_readings_total") >= len(good), "readings processed")
    events = sum(worker.sample("iotad_alert_events_total", state=s) for s in ("firing", "resolved"))
    assert events >= 1, "the injected spike and level shift raise no event at all"
    # Given up after output_retry_s, and the readings that raised them sent again by the
    # stream after ack_wait_s: the path that lost them.
    wait_until(
        lambda: worker.sample("iotad_publish_failed_total", kind="alert_unconfirmed") >= 1,
        "an alert given up",
    )
    wait_until(lambda: worker.sample("iotad_nats_redelivered_total") >= 1, "a reading again")
    assert ack_pending(url) >= 1
    assert read_outputs(url) == []
    add_output_stream(url)

    # Acked only once stored: whenever every reading is seen acked, a read of the stream
    # made after that finds every alert.
    seen: list[dict] = []

    def acked_and_stored() -> bool:
        pending = ack_pending(url)
        stored = read_outputs(url)
        seen[:] = [body for subject, body in stored if subject.startswith("alerts.")]
        if pending == 0:
            assert len(seen) == events, (len(seen), events)
            return True
        return False

    wait_until(acked_and_stored, "every reading acked")
    # Each alert once (the stream dropped the copies sent again under the same message id).
    assert len({(a["id"], a["state"], a["ts"]) for a in seen}) == events
    assert worker.sample("iotad_outputs_resent_total") >= 1
    wait_until(lambda: worker.sample("iotad_outputs_resending") == 0, "nothing left to resend")
    # The copies of the readings waited: none was processed again as a duplicate.
    letters = [body for subject, body in read_outputs(url) if subject == "iotad.deadletter"]
    assert [d for d in letters if d["reason"] == "duplicate"] == []
