"""Alert sink that posts alert events to Prometheus Alertmanager's v2 API.

Alertmanager identifies an alert by its label set, so a series' firing and resolved events
carry the same labels (``alertname``, ``device``, ``metric``, ``severity`` plus any static
labels and the labels the rules file gives the series, which win over the static ones; a
resolved event keeps those its firing had, even when the rules changed in between) and differ
only in their time range:

- firing: ``startsAt`` is the start of the episode and ``endsAt`` a few resend intervals
  ahead. Alertmanager treats an alert whose ``endsAt`` has passed as resolved, so the sink
  re-posts every active firing alert every ``resend_interval_s`` to push ``endsAt`` on, as
  Prometheus does. A worker that dies therefore leaves no alert firing forever: it expires
  ``ttl_s`` after the last re-post.
- resolved: ``endsAt`` is the time of the event, which Alertmanager merges into the
  firing alert it already holds. A series evicted as idle or ended by a Sparkplug DEATH
  resolves too (annotation ``resolved_reason``: ``evicted``, ``ended``), so the sink stops
  re-posting it rather than keep it firing for good.

``send`` never blocks: it appends to a bounded queue that a daemon thread drains, retrying
with capped exponential backoff while no Alertmanager accepts. The HTTP side (several URLs
posted to in parallel, credentials, TLS) is `detector.worker.alertmanager_client`; the settings are
`detector.config.alertmanager_settings`; the metrics `detector.worker.metrics.AlertmanagerMetrics`.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from detector.config.alertmanager_settings import AlertmanagerSettings
from detector.engine.events import ENDED, EVICTED, AlertEvent
from detector.worker.alertmanager_client import AlertmanagerClient, Answer
from detector.worker.metrics import AlertmanagerMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["ALERTNAME", "AlertmanagerSettings", "AlertmanagerSink", "alert_payload", "iso_utc"]

log = logging.getLogger(__name__)

ALERTNAME = "SensorAnomaly"


@dataclass(frozen=True, slots=True)
class _Posting:
    """One alert to post: the event and the start of its episode (``startsAt``)."""

    event: AlertEvent
    starts_at: float


def iso_utc(ts: float) -> str:
    """RFC 3339 UTC timestamp with milliseconds, as Alertmanager parses it.

    >>> iso_utc(0.0)
    '1970-01-01T00:00:00.000Z'
    """
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _num(x: float) -> str:
    # Annotations are string-to-string maps in the v2 API.
    return f"{x:.6g}"


_RESOLVED = {
    "silence": "reports again",
    EVICTED: "sent nothing for the idle time and was evicted (resolved without a reading)",
    ENDED: "ended: its source said the device is gone (Sparkplug DEATH)",
}
"""The summary of a resolved alert, by its reason (or ``silence``); else back in its band."""


def alert_payload(
    event: AlertEvent,
    *,
    starts_at: float,
    now: float,
    ttl_s: float,
    worker_url: str,
    severity: str = "warning",
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The v2 API JSON object for one alert event.

    Timestamps are clamped to `now`: readings carry the sensor's clock, and a time ahead of
    Alertmanager's would keep a resolved alert active (or make startsAt > endsAt, which the
    API rejects with 400).
    """
    ev = event
    start = min(starts_at, now)
    # The rules' labels and severity for the series win over the sink's static ones.
    all_labels = {**(labels or {}), **ev.labels, "alertname": ALERTNAME, "device": ev.device}
    all_labels.update(metric=ev.metric, severity=ev.severity or severity)
    if ev.state == "firing" and ev.signal == "silence":
        summary = f"{ev.device}/{ev.metric} stopped reporting (last value {_num(ev.value)})"
        ends = now + ttl_s
    elif ev.state == "firing":
        summary = (
            f"{ev.device}/{ev.metric} = {_num(ev.value)} is outside its expected band "
            f"[{_num(ev.lower)}, {_num(ev.upper)}] (score {_num(ev.score)} > "
            f"threshold {_num(ev.threshold)}, {ev.signal})"
        )
        ends = now + ttl_s
    else:
        summary = _RESOLVED.get(ev.reason or ("silence" if ev.signal == "silence" else ""), "")
        summary = f"{ev.device}/{ev.metric} {summary or 'is back within its expected band'}"
        ends = max(min(ev.ts, now), start)
    annotations = {
        "summary": summary,
        "value": _num(ev.value),
        "expected": _num(ev.expected),
        "lower": _num(ev.lower),
        "upper": _num(ev.upper),
        "score": _num(ev.score),
        "threshold": _num(ev.threshold),
        "alert_id": ev.id,
        "signal": ev.signal,
    }
    if ev.reason:
        annotations["resolved_reason"] = ev.reason
    return {
        "labels": all_labels,
        "annotations": annotations,
        "startsAt": iso_utc(start),
        "endsAt": iso_utc(ends),
        "generatorURL": worker_url,
    }


_DEFAULTS = AlertmanagerSettings()
"""The sink's defaults are the settings' (stated once, in
`detector.config.alertmanager_settings`)."""


class AlertmanagerSink:
    """AlertSink that delivers events to Alertmanager from a background thread.

    Args:
        url: Alertmanager base URL (``http://alertmanager:9093``), several (an HA cluster:
            each alert is posted to every one, in parallel, and is delivered when one
            accepted it), or an `AlertmanagerClient` (credentials, TLS).
        worker_url: where a human finds the worker (``generatorURL``), e.g. ``http://host:9108/``.
        severity: value of the ``severity`` label.
        labels: extra static labels (e.g. ``{"plant": "north"}``); they become part of the
            alert's identity.
        queue_size: events kept while Alertmanager is slow or down; past it the oldest is
            dropped and counted.
        resend_interval_s: how often active firing alerts are re-posted.
        ttl_s: how far ahead a firing alert's ``endsAt`` is set; defaults to four resend
            intervals so one or two lost re-posts do not resolve it.
        timeout_s: HTTP timeout of one request.
        backoff_initial_s, backoff_max_s: retry delays, doubling up to the cap.
        max_batch: alerts per request.
        registry: where the ``iotad_alertmanager_*`` metrics are registered
            (`detector.worker.metrics.AlertmanagerMetrics`); ``None`` keeps them unregistered (still
            readable through `metrics`), as prometheus_client does.
        clock: wall clock for alert timestamps (tests pass a fixed one).
        headers: extra HTTP headers when `url` is given as strings.

    Example::

        sink = AlertmanagerSink("http://alertmanager:9093", "http://worker:9108/",
                                registry=registry)
        sink.send(event)        # returns at once
        sink.close(timeout_s=5)  # flushes what is queued
    """

    def __init__(
        self,
        url: str | Sequence[str] | AlertmanagerClient,
        worker_url: str,
        *,
        severity: str = _DEFAULTS.severity,
        labels: Mapping[str, str] | None = None,
        queue_size: int = _DEFAULTS.queue_size,
        resend_interval_s: float = _DEFAULTS.resend_interval_s,
        ttl_s: float | None = None,
        timeout_s: float = _DEFAULTS.timeout_s,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = _DEFAULTS.backoff_max_s,
        max_batch: int = 500,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if queue_size < 1 or max_batch < 1 or resend_interval_s <= 0:
            raise ValueError("queue_size, max_batch and resend_interval_s must be positive")
        if isinstance(url, AlertmanagerClient):
            self.client = url
        else:
            urls = [url] if isinstance(url, str) else list(url)
            self.client = AlertmanagerClient(urls, headers=headers)
        self.worker_url = worker_url
        self.severity = severity
        self.labels = dict(labels or {})
        self.resend_interval_s = resend_interval_s
        self.ttl_s = 4.0 * resend_interval_s if ttl_s is None else ttl_s
        self.timeout_s = timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_batch = max_batch
        self._clock = clock

        self.metrics = AlertmanagerMetrics(registry, self.client.urls)
        self.sent = self.metrics.sent
        self.errors = self.metrics.errors
        self.dropped = self.metrics.dropped
        self.active_gauge = self.metrics.active

        self._cond = threading.Condition()
        self._queue: deque[_Posting] = deque()
        self._queue_size = queue_size
        # (device, metric) -> posting of the firing event; re-posted until resolved.
        self._active: dict[tuple[str, str], _Posting] = {}
        self._closing = False
        self._close_deadline = float("inf")
        self._lost_at_close = False
        self._drops_unlogged = 0
        self._drop_logged_at = float("-inf")
        # (URL, retried) -> when its failure was last logged (present while it fails).
        self._failing: dict[tuple[str, bool], float] = {}
        self._thread = threading.Thread(target=self._run, name="iotad-alertmanager", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(
        cls,
        settings: AlertmanagerSettings,
        *,
        metrics_port: int = 9108,
        registry: CollectorRegistry | None = None,
    ) -> AlertmanagerSink | None:
        """The sink `settings` describe, or None when no URL is set."""
        if not settings.url:
            return None
        worker_url = settings.external_url or f"http://{socket.gethostname()}:{metrics_port}/"
        client = AlertmanagerClient(
            settings.url,
            credentials=settings.credentials(),
            ssl_context=settings.ssl_context(),
        )
        log.info(
            "alert events also go to Alertmanager at %s (auth: %s, labels: %s)",
            ", ".join(client.urls),
            client.credentials.scheme,
            ",".join(f"{k}={v}" for k, v in settings.labels.items()) or "none",
        )
        return cls(
            client,
            worker_url,
            severity=settings.severity,
            labels=settings.labels,
            resend_interval_s=settings.resend_interval_s,
            queue_size=settings.queue_size,
            timeout_s=settings.timeout_s,
            backoff_max_s=settings.backoff_max_s,
            registry=registry,
        )

    # -- AlertSink -------------------------------------------------------------------------

    def send(self, event: AlertEvent) -> None:
        """Queue `event` for delivery; never blocks on the network."""
        key = (event.device, event.metric)
        with self._cond:
            if event.state == "firing":
                prev = self._active.get(key)
                # A redelivered firing event of the same episode keeps the episode's start.
                start = prev.starts_at if prev and prev.event.id == event.id else event.ts
                posting = _Posting(event, start)
                self._active[key] = posting
            else:
                prev = self._active.pop(key, None)
                if prev is not None and (
                    prev.event.labels != event.labels or prev.event.severity != event.severity
                ):
                    # Alertmanager knows an alert by its labels: the end must carry those it
                    # fired with, even when the rules changed them in between.
                    event = replace(event, labels=prev.event.labels, severity=prev.event.severity)
                posting = _Posting(event, prev.starts_at if prev else event.ts)
            self.active_gauge.set(len(self._active))
            if self._closing:
                self._count_drop("shutdown", 1)
                return
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self._count_drop("queue_full", 1)
            self._queue.append(posting)
            self._cond.notify()

    def take_deliveries(self) -> list[Any]:
        """None to wait for: this sink retries from its own thread, and holding the broker's
        acks on Alertmanager being up would stall detection whenever it is down."""
        return []

    # -- lifecycle -------------------------------------------------------------------------

    def close(self, timeout_s: float = 5.0) -> bool:
        """Deliver what is queued (for at most `timeout_s`), then stop the thread.

        Active alerts are not resolved: if the worker comes back it re-posts them, and if it
        does not they expire at their ``endsAt``. Returns True when everything was flushed.
        """
        with self._cond:
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        self._thread.join(timeout_s + 1.0)
        self.client.close()
        with self._cond:
            return not self._thread.is_alive() and not self._queue and not self._lost_at_close

    def __enter__(self) -> AlertmanagerSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def queue_depth(self) -> int:
        """Events waiting for delivery."""
        with self._cond:
            return len(self._queue)

    # -- delivery thread -------------------------------------------------------------------

    def _run(self) -> None:
        next_refresh = time.monotonic() + self.resend_interval_s
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    wait_s = next_refresh - time.monotonic()
                    if wait_s <= 0:
                        break
                    self._cond.wait(wait_s)
                if self._closing:
                    if not self._queue:
                        return
                    if time.monotonic() >= self._close_deadline:
                        self._count_drop("shutdown", len(self._queue))
                        self._queue.clear()
                        return
                # Re-post active alerts when due, even on a busy queue: a firing alert whose
                # endsAt passes would read as resolved in Alertmanager.
                if not self._closing and time.monotonic() >= next_refresh:
                    batch = list(self._active.values())
                    next_refresh = time.monotonic() + self.resend_interval_s
                else:
                    n = min(len(self._queue), self.max_batch)
                    batch = [self._queue.popleft() for _ in range(n)]
            for i in range(0, len(batch), self.max_batch):
                self._deliver(batch[i : i + self.max_batch])

    def _deliver(self, batch: list[_Posting]) -> None:
        """Post `batch` to every URL until one accepts it, all reject it, or the close
        deadline passes. URLs that failed while another accepted are not retried for this
        batch: Alertmanager peers gossip alerts to each other, and firing alerts are
        re-posted every resend interval anyway."""
        delay_s = self.backoff_initial_s
        while True:
            now = self._clock()
            body = json.dumps(self._payload(batch, now)).encode()
            answers = self.client.post(body, self._request_timeout_s())
            self._note(answers, len(batch))
            if any(a.ok for a in answers):
                self.sent.inc(len(batch))
                return
            if not any(a.retry for a in answers):
                # 4xx (but 401/403/408/429) will not get better by retrying the same body.
                self.dropped.labels("rejected").inc(len(batch))
                return
            with self._cond:
                if self._closing:
                    remaining = self._close_deadline - time.monotonic()
                    if remaining <= 0:
                        self._count_drop("shutdown", len(batch))
                        return
                    self._cond.wait(min(delay_s, remaining))
                else:
                    # Jitter keeps a fleet of workers from retrying in lockstep.
                    self._cond.wait(delay_s * random.uniform(0.8, 1.0))
            delay_s = min(delay_s * 2.0, self.backoff_max_s)

    def _note(self, answers: list[Answer], n: int) -> None:
        """Count each URL's failure; log when a URL starts failing (then at most once a
        minute per URL and kind, retried or rejected) and when it accepts again."""
        accepted = sum(a.ok for a in answers)
        now = time.monotonic()
        for a in answers:
            if a.ok:
                back = self._failing.pop((a.url, True), None) is not None
                if self._failing.pop((a.url, False), None) is not None or back:
                    log.info("alertmanager %s accepts alerts again", a.url)
                continue
            self.errors.labels(a.url).inc()
            last = self._failing.get((a.url, a.retry))
            if last is not None and now - last < 60.0:
                continue
            self._failing[(a.url, a.retry)] = now
            if accepted:
                what = f"the alerts went to {accepted} of {len(answers)} Alertmanagers"
            elif a.retry:
                what = "will retry"
            else:
                what = f"rejected {n} alerts"
            level = logging.WARNING if a.retry or accepted else logging.ERROR
            log.log(level, "alertmanager %s failed (%s): %s", a.url, what, a.detail)

    def _request_timeout_s(self) -> float:
        if self._closing:
            return max(0.1, min(self.timeout_s, self._close_deadline - time.monotonic()))
        return self.timeout_s

    def _payload(self, batch: Iterable[_Posting], now: float) -> list[dict[str, Any]]:
        return [
            alert_payload(
                p.event,
                starts_at=p.starts_at,
                now=now,
                ttl_s=self.ttl_s,
                worker_url=self.worker_url,
                severity=self.severity,
                labels=self.labels,
            )
            for p in batch
        ]

    def _count_drop(self, reason: str, n: int) -> None:
        """Count `n` dropped alerts; log at most once a minute (called with the lock held)."""
        self.dropped.labels(reason).inc(n)
        self._lost_at_close = self._lost_at_close or reason == "shutdown"
        self._drops_unlogged += n
        now = time.monotonic()
        if now - self._drop_logged_at >= 60.0:
            log.warning(
                "alertmanager sink dropped %d alerts (last reason: %s)",
                self._drops_unlogged,
                reason,
            )
            self._drops_unlogged = 0
            self._drop_logged_at = now
