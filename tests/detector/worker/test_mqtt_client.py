"""detector/worker/mqtt_client.py: the paho adapter, against a real mosquitto (the session fixture),
and its pure helpers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from detector.config.settings import MqttSettings, TLSSettings
from detector.engine.readings import NOT_SUBSCRIBED, OWN_OUTPUT, RETAINED
from detector.worker.mqtt_client import (
    _STATUS_MAX_BYTES,
    ConnectError,
    InfoDelivery,
    MqttConnection,
    _literal_prefix,
    _status_doc,
)
from tests.conftest import Collector, Mosquitto, free_port, publish_all

# -- pure helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "prefix"),
    [
        ("alerts/+/+", "alerts"),
        ("iotad/status/w1", "iotad/status/w1"),
        ("a/b/#", "a/b"),
        ("#", ""),
        ("+/x", ""),
    ],
)
def test_literal_prefix_stops_at_the_first_wildcard(topic_filter: str, prefix: str) -> None:
    assert _literal_prefix(topic_filter) == prefix


def test_status_doc_takes_json_objects_only() -> None:
    assert _status_doc(b'{"state": "online", "topics": ["a/#"]}') == {
        "state": "online",
        "topics": ["a/#"],
    }
    assert _status_doc(bytearray(b'{"state": "offline"}')) == {"state": "offline"}
    assert _status_doc(b'["state", "online"]') is None
    assert _status_doc(b"offline") is None
    assert _status_doc(b"\xff\xfe") is None
    assert _status_doc(b"[" * 100_000) is None  # too deep: refused, not a crash


def test_status_doc_refuses_an_oversized_payload_without_decoding_it() -> None:
    padding = "x" * _STATUS_MAX_BYTES
    assert _status_doc(msgspec.json.encode({"state": "online", "pad": padding})) is None
    small = msgspec.json.encode({"state": "online", "pad": "x" * 100})
    assert _status_doc(small) == {"state": "online", "pad": "x" * 100}


def test_input_subscriptions_refuse_retained_and_own_messages() -> None:
    opts = MqttConnection._input_options("sensors/#", 1)
    assert opts.QoS == 1
    assert opts.noLocal is True
    assert opts.retainHandling == opts.RETAIN_DO_NOT_SEND
    # No Local on a shared subscription is a protocol error (MQTT 5, 3.8.3.1).
    assert MqttConnection._input_options("$share/g/sensors/#", 0).noLocal is False


def test_url_names_the_scheme_host_and_port() -> None:
    plain = MqttSettings(host="broker.plant", port=1883)
    tls = MqttSettings(host="broker.plant", port=8883, tls=TLSSettings(enabled=True))
    assert _unstarted(plain).url == "mqtt://broker.plant:1883"
    assert _unstarted(tls).url == "mqtts://broker.plant:8883"


def test_a_missing_ca_file_is_a_connect_error_naming_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    settings = MqttSettings(tls=TLSSettings(ca_file=ca))
    with pytest.raises(ConnectError, match="TLS setup failed"):
        _unstarted(settings)


class _Info:
    def __init__(self, outcome: bool | Exception) -> None:
        self.outcome = outcome

    def is_published(self) -> bool:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_info_delivery_is_done_when_published_or_when_it_never_can_be() -> None:
    assert InfoDelivery(_Info(True)).done() is True  # type: ignore[arg-type]
    assert InfoDelivery(_Info(False)).done() is False  # type: ignore[arg-type]
    # paho raises for a publish it refused or that cannot be confirmed: nothing to wait for.
    assert InfoDelivery(_Info(RuntimeError("refused"))).done() is True  # type: ignore[arg-type]
    assert InfoDelivery(_Info(ValueError("away"))).done() is True  # type: ignore[arg-type]


def _unstarted(settings: MqttSettings) -> MqttConnection:
    return MqttConnection(settings, "w-test", status_topic="iotad/status/w-test", on_message=print)


# -- against mosquitto ----------------------------------------------------------------------

Received = tuple[bytes, bytes, int, int, int, "str | None"]


class Inbox:
    """The `on_message` handler: keeps what the network thread hands over."""

    def __init__(self) -> None:
        self.items: list[Received] = []
        self._lock = threading.Lock()

    def __call__(
        self, topic: bytes, payload: bytes, mid: int, qos: int, gen: int, skip: str | None
    ) -> None:
        with self._lock:
            self.items.append((topic, payload, mid, qos, gen, skip))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.items)

    def wait_for(self, payload: bytes) -> Received:
        return wait_until(lambda: next((m for m in self.snapshot() if m[1] == payload), None))


def wait_until(probe: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    """Poll until `probe()` is truthy; returns it (the timeout only stops a hung test)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


class Worker:
    """An `MqttConnection` the way the worker builds it, with its inbox."""

    def __init__(self, conn: MqttConnection, inbox: Inbox) -> None:
        self.conn, self.inbox = conn, inbox


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def connect(mosquitto: Mosquitto) -> Iterator[Callable[..., Worker]]:
    """``connect(topics, client_id=..., version=..., output_filters=...)`` -> a started
    connection to the session's mosquitto, closed after the test."""
    made: list[MqttConnection] = []

    def make(
        topics: list[str],
        client_id: str,
        version: str = "5",
        output_filters: tuple[str, ...] = (),
    ) -> Worker:
        settings = MqttSettings(
            host=mosquitto.host,
            port=mosquitto.port,
            version=version,  # type: ignore[arg-type]
            topics=topics,
            connect_timeout_s=15,
        )
        inbox = Inbox()
        conn = MqttConnection(
            settings,
            client_id,
            status_topic=f"iotad/status/{client_id}",
            on_message=inbox,
            status_extra={"worker": client_id},
            output_filters=output_filters,
        )
        conn.start()
        made.append(conn)
        return Worker(conn, inbox)

    yield make
    for conn in made:
        conn.close()


def _status(mosquitto: Mosquitto, client_id: str) -> dict[str, Any]:
    """The retained status of `client_id`, as a fresh subscriber gets it."""
    collector = Collector(mosquitto.port, [f"iotad/status/{client_id}"])
    try:
        msgs = collector.wait_for(lambda m: any(x.retain for x in m))
        return msgspec.json.decode(next(x for x in msgs if x.retain).payload)
    finally:
        collector.close()


@pytest.mark.integration
@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_messages_reach_the_handler_and_the_status_says_online(
    connect: Callable[..., Worker], mosquitto: Mosquitto, prefix: str, version: str
) -> None:
    w = connect([f"{prefix}/in/#"], f"{prefix}-w", version=version)
    assert w.conn.connected and w.conn.generation == 1
    publish_all(mosquitto.port, [(f"{prefix}/in/a", b"1.5")], qos=1)
    topic, _, mid, qos, gen, skip = w.inbox.wait_for(b"1.5")
    assert (topic, qos, gen, skip) == (f"{prefix}/in/a".encode(), 1, 1, None)
    assert mid > 0
    status = _status(mosquitto, f"{prefix}-w")
    assert status["state"] == "online"
    assert status["run"] == w.conn.run_id
    assert status["topics"] == [f"{prefix}/in/#"]
    assert status["worker"] == f"{prefix}-w"


@pytest.mark.integration
@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_a_retained_reading_is_never_taken_as_new(
    connect: Callable[..., Worker], mosquitto: Mosquitto, prefix: str, version: str
) -> None:
    topic = f"{prefix}/in/old"
    publish_all(mosquitto.port, [(topic, b"41.0")], qos=1, retain=True)
    try:
        w = connect([f"{prefix}/in/#"], f"{prefix}-w", version=version)
        publish_all(mosquitto.port, [(f"{prefix}/in/live", b"42.0")], qos=1)
        w.inbox.wait_for(b"42.0")
        old = [m for m in w.inbox.snapshot() if m[1] == b"41.0"]
        if version == "5":
            assert old == []  # Retain Handling 2: the broker does not send it
        else:
            assert [m[5] for m in old] == [RETAINED]  # sent, flagged, handed over as not input
    finally:
        publish_all(mosquitto.port, [(topic, b"")], qos=1, retain=True)  # clear it


@pytest.mark.integration
def test_a_message_on_an_output_topic_is_handed_over_as_own_output(
    connect: Callable[..., Worker], mosquitto: Mosquitto, prefix: str
) -> None:
    w = connect([f"{prefix}/in/#"], f"{prefix}-w", output_filters=(f"{prefix}/in/alerts/+",))
    publish_all(mosquitto.port, [(f"{prefix}/in/alerts/x", b"7"), (f"{prefix}/in/y", b"8")])
    assert w.inbox.wait_for(b"7")[5] == OWN_OUTPUT
    assert w.inbox.wait_for(b"8")[5] is None


@pytest.mark.integration
def test_only_acked_messages_are_gone_after_a_reconnect(
    connect: Callable[..., Worker], mosquitto: Mosquitto, prefix: str
) -> None:
    client_id = f"{prefix}-w"
    first = connect([f"{prefix}/in/#"], client_id)
    publish_all(mosquitto.port, [(f"{prefix}/in/a", b"acked"), (f"{prefix}/in/a", b"pending")])
    acked = first.inbox.wait_for(b"acked")
    first.inbox.wait_for(b"pending")
    gen = first.conn.generation
    # An ack of an earlier connection's message, and a QoS 0 one, are not sent.
    stale = (acked[2], 1, gen - 1)
    assert first.conn.ack_many([(acked[2], 1, gen), stale, (acked[2], 0, gen)]) == 1
    first.conn.close()
    # Same client id: the broker resumes the session and redelivers what was not acked.
    second = connect([f"{prefix}/in/#"], client_id)
    publish_all(mosquitto.port, [(f"{prefix}/in/a", b"marker")])
    redelivered = second.inbox.wait_for(b"pending")
    second.inbox.wait_for(b"marker")
    assert [m[1] for m in second.inbox.snapshot() if m[1] == b"acked"] == []
    assert redelivered[4] == second.conn.generation


@pytest.mark.integration
def test_filters_of_an_earlier_run_are_unsubscribed(
    connect: Callable[..., Worker], mosquitto: Mosquitto, prefix: str
) -> None:
    client_id = f"{prefix}-w"
    first = connect([f"{prefix}/old/#", f"{prefix}/new/#"], client_id)
    first.conn.close()
    second = connect([f"{prefix}/new/#"], client_id)
    assert _status(mosquitto, client_id)["topics"] == [f"{prefix}/new/#"]
    # The previous run's retained status names old/#: unsubscribed once it is read. A QoS 1
    # publish on the same connection comes back acknowledged only after the broker handled
    # the UNSUBSCRIBE sent before it.
    wait_until(lambda: second.conn._previous_checked)
    delivery = second.conn.publish(f"{prefix}/probe", b"", qos=1)
    assert delivery is not None
    wait_until(delivery.done)
    publish_all(mosquitto.port, [(f"{prefix}/old/x", b"old"), (f"{prefix}/new/x", b"new")])
    assert second.inbox.wait_for(b"new")[5] is None
    assert [m for m in second.inbox.snapshot() if m[1] == b"old"] == []


@pytest.mark.integration
def test_a_topic_no_filter_matches_is_not_input(
    connect: Callable[..., Worker], mosquitto: Mosquitto, prefix: str
) -> None:
    """A filter the session holds that the settings do not name (a hand-made session, a run
    from before the status recorded its filters) delivers `not_subscribed` messages."""
    client_id = f"{prefix}-w"
    first = connect([f"{prefix}/a/#", f"{prefix}/b/#"], client_id)
    first.conn.close()
    # Wipe the record of the earlier filters, as an older version's status would be.
    publish_all(mosquitto.port, [(f"iotad/status/{client_id}", b"{}")], retain=True)
    second = connect([f"{prefix}/b/#"], client_id)
    publish_all(mosquitto.port, [(f"{prefix}/a/x", b"stray"), (f"{prefix}/b/x", b"wanted")])
    assert second.inbox.wait_for(b"stray")[5] == NOT_SUBSCRIBED
    assert second.inbox.wait_for(b"wanted")[5] is None


@pytest.mark.integration
def test_someone_else_writing_the_status_is_answered_with_online(
    connect: Callable[..., Worker], mosquitto: Mosquitto, prefix: str
) -> None:
    w = connect([f"{prefix}/in/#"], f"{prefix}-w")
    publish_all(mosquitto.port, [(w.conn.status_topic, b'{"state": "offline"}')], retain=True)
    wait_until(lambda: w.conn.status_reasserted >= 1)
    wait_until(lambda: _status(mosquitto, f"{prefix}-w")["state"] == "online")
    assert w.inbox.snapshot() == []  # the status topic is never input


@pytest.mark.integration
def test_close_leaves_a_retained_offline_status(
    connect: Callable[..., Worker], mosquitto: Mosquitto, prefix: str
) -> None:
    w = connect([f"{prefix}/in/#"], f"{prefix}-w")
    w.conn.close()
    assert not w.conn.connected
    status = _status(mosquitto, f"{prefix}-w")
    assert (status["state"], status["run"]) == ("offline", w.conn.run_id)


@pytest.mark.integration
def test_no_broker_is_a_one_line_connect_error_after_the_timeout() -> None:
    port = free_port()
    settings = MqttSettings(host="127.0.0.1", port=port, connect_timeout_s=0.5)
    conn = _unstarted(settings)
    with pytest.raises(ConnectError) as err:
        conn.start()
    message = str(err.value)
    assert message.startswith(f"cannot connect to mqtt://127.0.0.1:{port} as 'w-test': ")
    assert message.endswith("(gave up after 0.5 s)")
    assert "\n" not in message
