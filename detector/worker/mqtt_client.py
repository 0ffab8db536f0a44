"""The paho-mqtt adapter: connect, subscribe, hand messages over, ack, publish, status.

Only this module knows paho. The network thread runs `on_message`, which must stay cheap: the
worker passes a callback that decodes and enqueues. Acknowledgements are manual (QoS 1,
``manual_ack=True``) and come from the detection thread once a message's readings are done.

Every connection gets a new *generation* number. A message remembers the generation it
arrived on; its ack is only sent on that same connection. After a reconnect the broker
redelivers whatever was not acknowledged, and an ack sent on the new connection for an old
message id could acknowledge a different message.

What the worker never takes as input (each is handed over with its reason, to be counted,
logged and acked, see `detector.engine.readings`):

- retained messages (``retained``). MQTT 5 input subscriptions ask the broker not to send
  them (Retain Handling 2); under MQTT 3.1.1 they arrive flagged and are skipped. A retained
  reading is an old one replayed at every (re)subscribe: a bare number would be counted as
  new with a fresh arrival time, a JSON one would be a ``duplicate`` at each restart. Live
  readings published with the retain flag are taken as usual.
- its own output (``own_output``): the settings refuse input filters that overlap it, MQTT 5
  subscriptions set No Local, and anything that still arrives on an output topic (through a
  filter an older version left in the session) is skipped, never dead-lettered: that was an
  endless loop.
- topics no configured filter matches (``not_subscribed``): they come through a filter an
  earlier run left in the persistent session. The filters of each run are recorded in its
  retained status (``"topics"``); on connect the worker reads the previous status and
  unsubscribes the filters the settings no longer name. For a session from before that
  record, it unsubscribes the ``#`` filters enclosing such a message's topic (``#``,
  ``a/#``, ...), which catches the usual culprits.

The status topic is the worker's own: when someone else publishes there (a retained
``offline`` would otherwise stand until the worker reconnects), the worker publishes its
``online`` again.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from detector.config.settings import MqttSettings
from detector.engine.readings import NOT_SUBSCRIBED, OWN_OUTPUT, RETAINED
from detector.worker.connect_errors import describe_error
from detector.worker.metrics import WorkerMetrics
from detector.worker.topics import enclosing_filters, topic_matches, valid_filter

log = logging.getLogger("iotad.mqtt")

# message topic (raw bytes: paho's str property raises on bad UTF-8), payload, mid, qos,
# generation, and why it is not input (None: it is; else a reason of `detector.engine.readings`)
MessageHandler = Callable[[bytes, bytes, int, int, int, str | None], None]

_TOPIC_CACHE_MAX = 100_000
_STATUS_MAX_BYTES = 65_536
_PREVIOUS_TOPICS_MAX = 1000
_STALE_FILTERS_MAX = 10_000
_UNCLASSIFIED = object()


_PUBACK = struct.Struct("!BBH")
_PUBACK_HEADER = PacketTypes.PUBACK << 4


class ConnectError(Exception):
    """The broker could not be reached or refused us; the message is one line, no secrets."""


class InfoDelivery:
    """A paho publish as an `alerts.Delivery`."""

    __slots__ = ("info",)

    def __init__(self, info: mqtt.MQTTMessageInfo) -> None:
        self.info = info

    def done(self) -> bool:
        try:
            return self.info.is_published()
        except (RuntimeError, ValueError):  # refused, or sent while away: cannot be confirmed
            return True

    def lost(self) -> bool:
        return False

    def send_again(self) -> None:
        """Never called: an MQTT publish is never `lost`."""


class MqttConnection:
    """One paho client with the worker's session, subscriptions and status topic.

    Args:
        settings: broker, credentials, TLS, topics, session.
        client_id: stable id (the worker id), so the broker keeps the session across restarts.
        status_topic: retained ``{"state": "online"|"offline"}``; offline is also the will.
        on_message: called on the network thread as ``(topic, payload, mid, qos, generation)``.
        metrics: connection gauges and counters (optional).
        status_extra: more fields for the online status (worker, model version, ...).
        output_filters: filters matching every topic the worker publishes to; a message on
            one of them is never input (`detector.config.settings.output_filters`).
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        status_topic: str,
        on_message: MessageHandler,
        metrics: WorkerMetrics | None = None,
        status_extra: dict[str, Any] | None = None,
        output_filters: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.status_topic = status_topic
        self.metrics = metrics
        self._handler = on_message
        self._status_extra = dict(status_extra or {})
        # Tells this run's status messages (echoed back to us) from anyone else's.
        self.run_id = uuid.uuid4().hex
        self._status_topic_bytes = status_topic.encode()
        self._outputs = list(output_filters)
        # Dropped from the session at every connect: no configured filter can be one of them
        # (they would take our own output, which the settings refuse), but an older version
        # or a hand-made session may hold one, and the broker does not say which it holds.
        self._loop_filters = sorted(
            {f for o in self._outputs for f in enclosing_filters(_literal_prefix(o))}
            - set(settings.topics)
        )
        self._topic_kind: dict[bytes, str | None] = {}
        self._stale_filters: set[str] = set()  # unsubscribed on this connection
        self._previous_checked = False
        self.status_reasserted = 0
        self._reassert_logged_at = -float("inf")
        self.generation = 0
        self.connected = False
        self._ever_connected = False
        self._closing = False
        self._connack = threading.Event()
        self._refusal: str | None = None
        self.v5 = settings.version == "5"
        self.client = self._make_client()

    # -- setup ---------------------------------------------------------------------------

    def update_status(self, **fields: Any) -> None:
        """Fields of the online status to say from the next status published on (e.g. the
        model version after a reload)."""
        self._status_extra.update(fields)

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            # v3.1.1: a persistent session; v5 uses clean_start=False on connect instead.
            clean_session=None if self.v5 else False,
            manual_ack=True,
            reconnect_on_failure=True,
        )
        client.max_queued_messages_set(s.max_queued_publishes)
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)
        if s.username is not None:
            password = s.password.get_secret_value() if s.password is not None else None
            client.username_pw_set(s.username, password)
        if s.tls.active:
            try:
                client.tls_set(
                    ca_certs=str(s.tls.ca_file) if s.tls.ca_file else None,
                    certfile=str(s.tls.cert_file) if s.tls.cert_file else None,
                    keyfile=str(s.tls.key_file) if s.tls.key_file else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConnectError(f"TLS setup failed: {describe_error(exc)}") from None
            if s.tls.insecure:
                client.tls_insecure_set(True)
        client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties | None:
        if not self.v5:
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        # How many unacknowledged messages the broker may push ahead of our acks: enough to
        # keep a batch in flight while the previous one is being processed.
        props.ReceiveMaximum = self.settings.receive_maximum
        return props

    def _status(self, state: str) -> bytes:
        # "topics": this run's filters, read back by the next run to unsubscribe the ones
        # its settings no longer name (the broker does not say what a session holds).
        doc = {
            "state": state,
            **self._status_extra,
            "topics": list(self.settings.topics),
            "run": self.run_id,
            "ts": time.time(),
        }
        return msgspec.json.encode(doc)

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.settings.tls.active else "mqtt"
        return f"{scheme}://{self.settings.host}:{self.settings.port}"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, stop: threading.Event | None = None) -> None:
        """Connect (retrying with backoff up to ``connect_timeout_s``), then run the network
        thread, which reconnects by itself from then on. Raises `ConnectError`; returns
        early, unconnected, when `stop` is set meanwhile."""
        s = self.settings
        deadline = time.monotonic() + s.connect_timeout_s
        delay = float(s.reconnect_min_s)
        stop = stop or threading.Event()
        while not stop.is_set():
            problem = self._try_connect(deadline)
            if problem is None:
                self.client.loop_start()
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectError(
                    f"cannot connect to {self.url} as {self.client_id!r}: {problem} "
                    f"(gave up after {s.connect_timeout_s:g} s)"
                )
            wait = min(delay, remaining)
            log.warning("cannot connect to %s: %s; retrying in %.0f s", self.url, problem, wait)
            stop.wait(wait)
            delay = min(delay * 2, float(s.reconnect_max_s))

    def _try_connect(self, deadline: float) -> str | None:
        """One attempt, run by hand until CONNACK; None on success, else what went wrong."""
        s = self.settings
        self._connack.clear()
        self._refusal = None
        try:
            kwargs: dict[str, Any] = {"keepalive": s.keepalive_s}
            if self.v5:
                kwargs["clean_start"] = False
                kwargs["properties"] = self._connect_properties()
            self.client.connect(s.host, s.port, **kwargs)
        except (OSError, ValueError) as exc:
            return describe_error(exc)
        wait_until = min(deadline, time.monotonic() + max(5.0, s.keepalive_s))
        while not self._connack.is_set() and time.monotonic() < wait_until:
            rc = self.client.loop(timeout=0.1)
            if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
                break
        if self._connack.is_set() and self._refusal is None:
            return None
        self._disconnect_quietly()
        if self._refusal is not None:
            return f"broker refused the connection: {self._refusal}"
        if self._connack.is_set():
            return "broker refused the connection"
        return "connection closed before the broker answered (TLS or protocol mismatch?)"

    def _disconnect_quietly(self) -> None:
        try:
            self.client.disconnect()
            self.client.loop(timeout=0.05)
        except Exception:  # already closed; nothing to clean up
            pass

    def close(self, timeout_s: float = 3.0) -> None:
        """Publish the offline status (retained), disconnect, stop the network thread."""
        self._closing = True
        try:
            if self.connected:
                info = self.client.publish(
                    self.status_topic, self._status("offline"), qos=1, retain=True
                )
                try:
                    info.wait_for_publish(timeout=timeout_s)
                except (RuntimeError, ValueError):
                    log.warning("offline status not confirmed by the broker")
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self.connected = False
            if self.metrics is not None:
                self.metrics.mqtt_connected.set(0)

    # -- traffic -------------------------------------------------------------------------

    def ack_many(self, acks: Sequence[tuple[int, int, int]]) -> int:
        """Acknowledge ``(mid, qos, generation)`` of a processed batch; returns how many went.

        The QoS 1 acks of the current connection leave as one write: paho's `ack` queues one
        packet per message, each with a wake-up of the network thread and a send of its own,
        which cost the detection thread 14 % of its time at 10,000 messages/s (profiled).
        A PUBACK without reason code is the same 4 bytes in MQTT 3.1.1 and 5.
        """
        current = self.generation
        mids: list[int] = []
        sent = 0
        for mid, qos, gen in acks:
            if gen != current or qos == 0:
                continue
            sent += 1
            if qos == 1:
                mids.append(mid)
            else:  # QoS 2: PUBREC/PUBREL/PUBCOMP, paho's own flow
                self.client.ack(mid, qos)
        queue = getattr(self.client, "_packet_queue", None)
        if queue is None:  # a paho without the internal hook: one ack at a time
            for mid in mids:
                self.client.ack(mid, 1)
        elif mids:
            packet = b"".join([_PUBACK.pack(_PUBACK_HEADER, 2, mid) for mid in mids])
            queue(_PUBACK_HEADER, packet, 0, 1)
        return sent

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> InfoDelivery | None:
        """Queue a publish; None when paho refused it (queue full, or QoS 0 while away)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            # QoS 1 while disconnected is kept by paho and sent after the reconnect.
            qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        ):
            return InfoDelivery(info)
        return None

    # -- paho callbacks (network thread) -------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
            self._connack.set()
            return
        self.generation += 1
        self.connected = True
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(1)
            if self._ever_connected:
                self.metrics.mqtt_reconnects.inc()
        self._ever_connected = True
        qos = self.settings.qos
        self._topic_kind.clear()
        self._stale_filters.clear()
        self._previous_checked = False
        if self._loop_filters:
            # Before subscribing: from here on nothing of ours comes back through them.
            client.unsubscribe(self._loop_filters)
            self._stale_filters.update(self._loop_filters)
        # Renewed on every connect: a broker that lost the session must not leave us deaf.
        # The status topic too (QoS 0, retained message wanted): the previous run's status
        # names its filters, and someone else's status there is answered (`_on_status`).
        if self.v5:
            client.subscribe(
                [(t, self._input_options(t, qos)) for t in self.settings.topics]
                + [(self.status_topic, SubscribeOptions(qos=0))]
            )
        else:
            filters: list[tuple[str, int]] = [(t, qos) for t in self.settings.topics]
            client.subscribe([*filters, (self.status_topic, 0)])
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        log.info(
            "connected to %s as %r (session present: %s), subscribed to %s",
            self.url,
            self.client_id,
            bool(getattr(flags, "session_present", False)),
            ", ".join(self.settings.topics),
        )
        self._connack.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        was_connected = self.connected
        self.connected = False
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(0)
        if was_connected and not self._closing:
            log.warning("disconnected from %s: %s; reconnecting", self.url, reason)

    @staticmethod
    def _input_options(topic_filter: str, qos: int) -> SubscribeOptions:
        """MQTT 5 options of an input filter: no retained messages on subscribe, and none of
        our own publishes (No Local; a protocol error on a shared subscription)."""
        return SubscribeOptions(
            qos=qos,
            noLocal=not topic_filter.startswith("$share/"),
            retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND,
        )

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        topics = [*self.settings.topics, self.status_topic]
        for topic, reason in zip(topics, reasons, strict=False):
            if reason.is_failure:
                log.error("subscription to %r refused by the broker: %s", topic, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # message._topic: the raw bytes (the public .topic decodes and raises on bad UTF-8).
        topic = message._topic
        if topic == self._status_topic_bytes:
            self._on_status(message)  # QoS 0: nothing to acknowledge
            return
        # Delivered with the retain flag: sent because we subscribed (a live publish arrives
        # without it, in MQTT 3.1.1 and in 5 without Retain As Published).
        skip = RETAINED if message.retain else self._topic_kind_of(topic)
        # paho types payload bytes | bytearray; a received one is bytes (struct.unpack).
        payload: bytes = message.payload  # type: ignore[assignment]
        self._handler(topic, payload, message.mid, message.qos, self.generation, skip)

    def _topic_kind_of(self, topic: bytes) -> str | None:
        """None for an input topic, else why not (cached per topic: this runs per message)."""
        kind = self._topic_kind.get(topic, _UNCLASSIFIED)
        if kind is not _UNCLASSIFIED:
            return kind  # type: ignore[return-value]
        text = topic.decode("utf-8", errors="replace")
        if any(topic_matches(f, text) for f in self._outputs):
            kind = OWN_OUTPUT
        elif not any(topic_matches(f, text) for f in self.settings.topics):
            kind = NOT_SUBSCRIBED
        else:
            kind = None
        if kind is not None:  # it came through a filter the settings do not name
            self._unsubscribe_enclosing(text)
        if len(self._topic_kind) >= _TOPIC_CACHE_MAX:
            self._topic_kind.clear()  # bounded: a flood of distinct topics cannot grow it
        self._topic_kind[topic] = kind
        return kind

    def _unsubscribe_enclosing(self, topic: str) -> None:
        """A message matched none of our filters: the session holds a filter of an earlier
        run. Drop the ``#`` filters that enclose its topic (the usual culprits: ``#``,
        ``sensors/#``) unless the settings name them."""
        if len(self._stale_filters) >= _STALE_FILTERS_MAX:
            return
        wanted = set(self.settings.topics)
        stale = [
            f for f in enclosing_filters(topic) if f not in wanted and f not in self._stale_filters
        ]
        if stale:
            self._stale_filters.update(stale)
            self.client.unsubscribe(stale)
            log.warning(
                "a message on %r matches none of the configured filters (%s): a filter left "
                "in the session by an earlier run; unsubscribing %s",
                topic[:200],
                ", ".join(self.settings.topics),
                ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else ""),
            )

    def _on_status(self, message: mqtt.MQTTMessage) -> None:
        doc = _status_doc(message.payload)
        if message.retain:
            # The status as it stood when we subscribed: the previous run's filters.
            if not self._previous_checked:
                self._previous_checked = True
                self._unsubscribe_previous(doc)
            return
        if doc is not None and (doc.get("run") == self.run_id or doc.get("state") == "online"):
            return  # our own (echoed), or someone saying we are online: true, nothing to fix
        if not self.connected or self._closing:
            return
        # Someone else wrote our status (spoofed, or an earlier run's will published after we
        # took its session over): say again that we are online.
        self.client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        self.status_reasserted += 1
        now = time.monotonic()
        if now - self._reassert_logged_at >= 60.0:
            self._reassert_logged_at = now
            log.warning(
                "status topic %s was written by someone else (%s); published online again "
                "(%d times so far)",
                self.status_topic,
                "state " + repr(doc.get("state"))[:40] if doc is not None else "not our JSON",
                self.status_reasserted,
            )

    def _unsubscribe_previous(self, doc: dict[str, Any] | None) -> None:
        """Unsubscribe the filters the previous run recorded that the settings do not name."""
        topics = doc.get("topics") if doc is not None else None
        if not isinstance(topics, list):
            return
        wanted = set(self.settings.topics)
        stale = sorted(
            {
                t
                for t in topics[:_PREVIOUS_TOPICS_MAX]
                if isinstance(t, str) and valid_filter(t) and t not in wanted
            }
        )
        if stale:
            self._stale_filters.update(stale)
            self.client.unsubscribe(stale)
            log.info(
                "unsubscribed %s: filters of an earlier run that the settings no longer name",
                ", ".join(stale[:10]) + (" ..." if len(stale) > 10 else ""),
            )


def _literal_prefix(topic_filter: str) -> str:
    """The levels of a filter before its first wildcard (``alerts/+/+`` -> ``alerts``)."""
    levels = []
    for level in topic_filter.split("/"):
        if level in ("+", "#"):
            break
        levels.append(level)
    return "/".join(levels)


def _status_doc(payload: bytes | bytearray) -> dict[str, Any] | None:
    """A status message as a dict, or None when it is not one of ours in shape."""
    if len(payload) > _STATUS_MAX_BYTES:
        return None
    try:
        doc = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None
