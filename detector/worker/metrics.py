"""Every Prometheus metric of iotad. Names are a contract with deploy/ (Grafana, rules).

This is the only module that constructs metrics (a test reads the imports of the others):
the other modules are handed the objects below. Everything is registered on a registry
passed in, so each test builds a fresh ``CollectorRegistry()`` and reads samples back with
``registry.get_sample_value``. Counters are named with their ``_total`` suffix here, as
exported.
"""

from __future__ import annotations

import math
import platform
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import TYPE_CHECKING, Protocol

import numpy as np
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

import detector
from detector.engine.readings import DROP_REASONS, NOT_SUBSCRIBED, OWN_OUTPUT, RETAINED
from detector.worker.payload_checks import DECODER_REASONS

if TYPE_CHECKING:
    from detector.engine.events import AlertEvent

REJECT_REASONS = (*DECODER_REASONS, *DROP_REASONS, RETAINED, OWN_OUTPUT, NOT_SUBSCRIBED)
"""The `reason` label values of `iotad_readings_rejected_total`: the decoder's, the drops
after decoding, and the messages that are not input at all."""
PUBLISH_FAILED_KINDS = ("alert_unconfirmed", "deadletter", "scores")
"""The `kind` label values of `iotad_publish_failed_total`."""
SUPPRESS_REASONS = ("mute", "maintenance")
"""The `reason` label values of `iotad_alerts_suppressed_total` (`detector.engine.rule_policy`)."""

# Reading ts -> decision, 1 ms to 60 s: a live stream sits in the low buckets, a backlog or a
# lagging worker shows up in the top ones.
LAG_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
INFERENCE_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class BulkHistogram(Collector):
    """A histogram fed with whole numpy arrays of observations.

    The lag is observed once per reading; `Histogram.observe` takes a lock per call, which at
    50k readings/s costs more than the bucketing of a whole batch with numpy.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last one: +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray | Sequence[float]) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return
        # le semantics: a value equal to a bound belongs to that bound's bucket.
        idx = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(_le(b), float(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", float(cumulative[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


def _le(bound: float) -> str:
    return repr(float(bound))


def register_runtime_collectors(registry: CollectorRegistry) -> None:
    """The standard ``process_*`` (CPU, memory, open files, start time) and ``python_*``
    (version, garbage collections) metrics, on `registry`.

    prometheus_client registers them on its global registry only; the worker serves its own.
    On the global registry itself this does nothing (they are there already).
    """
    if registry is REGISTRY:
        return
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class WorkerMetrics:
    """All `iotad_*` metrics of one worker, on `registry`, plus the standard ``process_*``
    and ``python_*`` ones (`register_runtime_collectors`).

    `series_devices` is the opt-in allow-list of devices that get per-series gauges
    (value, expected, lower, upper, score: one series per sensor and gauge). The only other
    metrics with a device label are those of the open anomalous episodes (`ActiveAnomalies`),
    at most `max_active_anomalies` of them (None: the default of
    ``IOTAD_METRICS__MAX_ACTIVE_ANOMALIES``).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        series_devices: Iterable[str] = (),
        max_active_anomalies: int | None = None,
    ) -> None:
        self.registry = registry
        r = registry
        register_runtime_collectors(r)
        if max_active_anomalies is None:  # the setting's default, stated there only
            from detector.config.settings import MetricsSettings

            max_active_anomalies = MetricsSettings().max_active_anomalies
        self.active_anomalies = ActiveAnomalies(max_active_anomalies)
        r.register(self.active_anomalies)
        self._add_build_info(r)
        self._add_ingest_metrics(r)
        self._add_alert_metrics(r)
        self._add_rules_metrics(r)
        self._add_detection_metrics(r)
        self._add_connection_metrics(r)
        self._add_model_metrics(r)
        self._add_output_metrics(r)
        self._add_shard_metrics(r)
        self._add_series_gauges(r, series_devices)

    def _add_build_info(self, r: CollectorRegistry) -> None:
        """``iotad_build_info``: the versions of iotad, Python and the model."""
        self.build_info = Gauge(
            "iotad_build_info",
            "Always 1: the iotad version, the Python version and the model artifact loaded",
            ["version", "python_version", "model_version"],
            registry=r,
        )
        self._build_labels: set[tuple[str, str, str]] = set()
        self._set_build_info(model_version="")

    def _add_ingest_metrics(self, r: CollectorRegistry) -> None:
        """Messages and readings in: received, accepted, rejected by reason, scored, warming."""
        self.messages = Counter("iotad_messages_total", "MQTT messages received", registry=r)
        self.readings = Counter(
            "iotad_readings_total", "Readings received (= accepted + rejected)", registry=r
        )
        self.accepted = Counter(
            "iotad_readings_accepted_total", "Readings taken by the detection core", registry=r
        )
        self.rejected = Counter(
            "iotad_readings_rejected_total",
            "Readings rejected by the decoder or dropped by the core, by reason",
            ["reason"],
            registry=r,
        )
        # Every reason exported at 0 from the start: rate() and increase() cannot see a
        # reason's first rejection when its series appears with it.
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.scored = Counter(
            "iotad_readings_scored_total", "Readings the model forecast and scored", registry=r
        )
        self.warming = Counter(
            "iotad_readings_warming_total",
            "Readings of series whose window is not full yet",
            registry=r,
        )

    def _add_alert_metrics(self, r: CollectorRegistry) -> None:
        """Anomalous readings and the alert events they raise or the rules keep back."""
        self.anomalies = Counter("iotad_anomalies_total", "Anomalous readings", registry=r)
        self.alert_events = Counter(
            "iotad_alert_events_total", "Alert events by state", ["state"], registry=r
        )
        for state in ("firing", "resolved"):
            self.alert_events.labels(state)  # present at 0 from the start, for rate() queries
        self.alerts_suppressed = Counter(
            "iotad_alerts_suppressed_total",
            "Alerts the rules file kept back (muted series, maintenance windows), by reason",
            ["reason"],
            registry=r,
        )
        for reason in SUPPRESS_REASONS:
            self.alerts_suppressed.labels(reason)

    def _add_rules_metrics(self, r: CollectorRegistry) -> None:
        """The rules file: rules in force and its reloads."""
        self.rules_loaded = Gauge(
            "iotad_rules", "Rules in force from the rules file (0: none)", registry=r
        )
        self.rules_reloads = Counter(
            "iotad_rules_reloads_total", "Rules file reloads that took effect", registry=r
        )
        self.rules_stale = Gauge(
            "iotad_rules_stale",
            "1 while the rules file on disk was refused and older rules stay in force",
            registry=r,
        )
        self.rules_reload_failures = Counter(
            "iotad_rules_reload_failures_total",
            "Rules file reloads refused (unreadable or invalid: the previous rules stay)",
            registry=r,
        )

    def _add_detection_metrics(self, r: CollectorRegistry) -> None:
        """The detection thread: series held, queue, batches, model calls, lag."""
        self.series_active = Gauge("iotad_series_active", "Series with state", registry=r)
        self.series_warming = Gauge(
            "iotad_series_warming", "Series whose window is not full yet", registry=r
        )
        self.queue_depth = Gauge(
            "iotad_ingest_queue_depth", "Messages waiting for the detection thread", registry=r
        )
        self.batch_size = Histogram(
            "iotad_batch_size",
            "Readings per drain of the ingest queue",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "iotad_inference_seconds",
            "Seconds per model call",
            buckets=INFERENCE_BUCKETS_S,
            registry=r,
        )
        self.lag = BulkHistogram(
            "iotad_lag_seconds", "Seconds from a reading's ts to its decision", LAG_BUCKETS_S
        )
        r.register(self.lag)

    def _add_connection_metrics(self, r: CollectorRegistry) -> None:
        """The broker connection and readiness."""
        self.mqtt_connected = Gauge(
            "iotad_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.mqtt_reconnects = Counter(
            "iotad_mqtt_reconnects_total", "Connections to the broker after the first", registry=r
        )
        self.ready = Gauge("iotad_ready", "1 when connected and the model is loaded", registry=r)

    def _add_model_metrics(self, r: CollectorRegistry) -> None:
        """The model artifact loaded and its reloads."""
        self.model_info = Gauge(
            "iotad_model_info",
            "The loaded model artifact",
            ["version", "cell", "window"],
            registry=r,
        )
        self._model_labels: tuple[str, str, str] | None = None
        self.model_reloads = Counter(
            "iotad_model_reloads_total",
            "Models swapped in while running (SIGHUP or a new artifact at the model path)",
            registry=r,
        )
        self.model_reload_failures = Counter(
            "iotad_model_reload_failures_total",
            "New artifacts refused while running (the old model kept working)",
            registry=r,
        )

    def _add_output_metrics(self, r: CollectorRegistry) -> None:
        """Outputs: dead letters, failed publishes, resends of unconfirmed outputs (NATS)."""
        self.deadletter = Counter(
            "iotad_deadletter_total", "Messages published to the dead-letter topic", registry=r
        )
        self.publish_failed = Counter(
            "iotad_publish_failed_total",
            "Publishes the broker client refused or the broker never confirmed, by kind",
            ["kind"],
            registry=r,
        )
        # Exported at 0 from the start: a rule's increase() cannot see a series' first
        # failure when the series appears with it.
        for kind in PUBLISH_FAILED_KINDS:
            self.publish_failed.labels(kind)
        self.outputs_resending = Gauge(
            "iotad_outputs_resending",
            "Alerts and dead letters the output stream never confirmed (NATS), sent again "
            "until it does; the messages that raised them wait unacked",
            registry=r,
        )
        self.outputs_resent = Counter(
            "iotad_outputs_resent_total",
            "Alerts and dead letters sent again (same message id) after the output stream "
            "never confirmed them (NATS)",
            registry=r,
        )
        self.outputs_dropped = Counter(
            "iotad_outputs_dropped_total",
            "Alerts and dead letters never confirmed and not sent again: more were waiting "
            "than the worker keeps (NATS)",
            registry=r,
        )

    def _add_shard_metrics(self, r: CollectorRegistry) -> None:
        """This worker's shard, source and NATS partitions."""
        self.shard_info = Gauge(
            "iotad_shard_info",
            "This worker's shard (i/N) and source (mqtt, nats)",
            ["shard", "source"],
            registry=r,
        )
        self.partitions_owned = Gauge(
            "iotad_partitions_owned", "NATS partitions this worker consumes", registry=r
        )

    def _add_series_gauges(self, r: CollectorRegistry, series_devices: Iterable[str]) -> None:
        """The per-series gauges, defined only when devices are allow-listed."""
        self.series_devices = frozenset(series_devices)
        self.series_value = self.series_expected = self.series_score = None
        self.series_lower = self.series_upper = None
        if self.series_devices:
            self.series_value = Gauge(
                "iotad_series_value",
                "Last value (allow-listed devices)",
                ["device", "metric"],
                registry=r,
            )
            self.series_expected = Gauge(
                "iotad_series_expected",
                "Last forecast (allow-listed devices)",
                ["device", "metric"],
                registry=r,
            )
            self.series_lower = Gauge(
                "iotad_series_lower",
                "Lower edge of the last reading's expected band (allow-listed devices)",
                ["device", "metric"],
                registry=r,
            )
            self.series_upper = Gauge(
                "iotad_series_upper",
                "Upper edge of the last reading's expected band (allow-listed devices)",
                ["device", "metric"],
                registry=r,
            )
            self.series_score = Gauge(
                "iotad_series_score",
                "Last anomaly score (allow-listed devices)",
                ["device", "metric"],
                registry=r,
            )

    def _set_build_info(self, model_version: str) -> None:
        labels = (detector.__version__, platform.python_version(), model_version)
        # As for the model info: the new series first, so a scrape never finds none.
        self.build_info.labels(*labels).set(1)
        for old in list(self._build_labels):
            if old != labels:
                self.build_info.remove(*old)
        self._build_labels = {labels}

    def set_model(self, version: str, cell: str, window: int) -> None:
        """Publish the loaded artifact as ``iotad_model_info{version,cell,window} 1`` (and
        in ``iotad_build_info``)."""
        labels = (version, cell, str(window))
        # The new series first, then the old one goes: a scrape in between never finds none.
        self.model_info.labels(*labels).set(1)
        if self._model_labels is not None and self._model_labels != labels:
            self.model_info.remove(*self._model_labels)
        self._model_labels = labels
        self._set_build_info(model_version=version)

    def set_shard(self, shard: str, source: str, partitions_owned: int) -> None:
        """``iotad_shard_info{shard, source} 1`` and ``iotad_partitions_owned``."""
        self.shard_info.clear()
        self.shard_info.labels(shard, source).set(1)
        self.partitions_owned.set(partitions_owned)

    def set_series(
        self,
        device: str,
        metric: str,
        value: float,
        expected: float,
        score: float,
        lower: float = math.nan,
        upper: float = math.nan,
    ) -> None:
        """Per-series gauges; a no-op unless `device` is allow-listed."""
        if device not in self.series_devices or self.series_value is None:
            return
        self.series_value.labels(device, metric).set(value)
        self.series_expected.labels(device, metric).set(expected)  # type: ignore[union-attr]
        self.series_lower.labels(device, metric).set(lower)  # type: ignore[union-attr]
        self.series_upper.labels(device, metric).set(upper)  # type: ignore[union-attr]
        self.series_score.labels(device, metric).set(score)  # type: ignore[union-attr]


@dataclass(slots=True)
class _Episode:
    """One open episode as exported: its onset and the latest reading's value and band."""

    signal: str
    since: float
    value: float
    expected: float
    lower: float
    upper: float
    score: float


_EPISODE_GAUGES = (
    ("since", "since_seconds", "Unix time the open anomalous episode started (its firing)"),
    ("value", "value", "Latest value of a series with an open anomalous episode"),
    ("expected", "expected", "Latest forecast of a series with an open anomalous episode"),
    ("lower", "lower", "Lower edge of the expected band, series with an open episode"),
    ("upper", "upper", "Upper edge of the expected band, series with an open episode"),
    ("score", "score", "Latest anomaly score of a series with an open anomalous episode"),
)
_EPISODE_LABELS = ("device", "metric", "signal")


class ActiveAnomalies(Collector):
    """The open anomalous episodes (between their `firing` and `resolved` alert events), as
    ``iotad_anomaly_active{device, metric, signal} 1`` plus their onset, latest value and band.

    The cardinality follows what is wrong now, not the fleet: a series is exported while its
    episode is open and disappears when it resolves. At most `max_exported` episodes are
    exported, the earliest opened; one that opens while that many are exported is counted in
    ``iotad_anomaly_active_overflow_total`` and shown once an earlier one resolves.
    ``iotad_anomaly_episodes_open`` counts them all. A series' silence (``signal="silence"``)
    is an episode of its own beside a forecast episode of the same series.

    Fed by the detection thread (`fire`, `update`, `resolve`), read at scrape time.
    """

    def __init__(self, max_exported: int) -> None:
        self.max_exported = max_exported
        self._open: dict[tuple[str, str, bool], _Episode] = {}
        self._series: dict[tuple[str, str], int] = {}  # open episodes per series, for `update`
        self.overflow = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._open)

    def fire(self, event: AlertEvent) -> None:
        """A `firing` event opened an episode."""
        key = (event.device, event.metric, event.signal == "silence")
        ep = _Episode(
            event.signal,
            event.ts,
            event.value,
            event.expected,
            event.lower,
            event.upper,
            event.score,
        )
        with self._lock:
            if key not in self._open:
                if len(self._open) >= self.max_exported:
                    self.overflow += 1
                series = key[:2]
                self._series[series] = self._series.get(series, 0) + 1
            self._open[key] = ep

    def resolve(self, event: AlertEvent) -> None:
        """A `resolved` event closed an episode (one never seen, e.g. opened before a restart,
        is ignored)."""
        self._drop((event.device, event.metric, event.signal == "silence"))

    def update(
        self,
        device: str,
        metric: str,
        value: float,
        expected: float,
        lower: float,
        upper: float,
        score: float,
    ) -> None:
        """The latest scored reading of a series; a no-op unless it has an open episode."""
        if (device, metric) not in self._series:
            return
        ep = self._open.get((device, metric, False))
        if ep is None:
            return  # only a silence is open: its band is that of its last reading
        with self._lock:
            ep.value, ep.expected, ep.lower, ep.upper, ep.score = (
                value,
                expected,
                lower,
                upper,
                score,
            )

    def _drop(self, key: tuple[str, str, bool]) -> None:
        with self._lock:
            if self._open.pop(key, None) is None:
                return
            series = key[:2]
            left = self._series[series] - 1
            if left:
                self._series[series] = left
            else:
                del self._series[series]

    def _families(self) -> tuple[GaugeMetricFamily, dict[str, GaugeMetricFamily]]:
        active = GaugeMetricFamily(
            "iotad_anomaly_active",
            "1 while the series' anomalous episode fires (at most "
            "IOTAD_METRICS__MAX_ACTIVE_ANOMALIES, the earliest opened)",
            labels=_EPISODE_LABELS,
        )
        gauges = {
            attr: GaugeMetricFamily(f"iotad_anomaly_active_{suffix}", doc, labels=_EPISODE_LABELS)
            for attr, suffix, doc in _EPISODE_GAUGES
        }
        return active, gauges

    def describe(self) -> Iterable[Metric]:
        active, gauges = self._families()
        return [active, *gauges.values(), *self._counts(0, 0)]

    def _counts(self, open_: int, overflow: int) -> list[Metric]:
        return [
            GaugeMetricFamily(
                "iotad_anomaly_episodes_open",
                "Open anomalous episodes, exported in iotad_anomaly_active or not",
                open_,
            ),
            CounterMetricFamily(
                "iotad_anomaly_active_overflow",
                "Episodes that opened while IOTAD_METRICS__MAX_ACTIVE_ANOMALIES were exported",
                overflow,
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            shown = [
                ((device, metric, ep.signal), replace(ep))
                for (device, metric, _), ep in islice(self._open.items(), self.max_exported)
            ]
            open_, overflow = len(self._open), self.overflow
        active, gauges = self._families()
        for labels, ep in shown:
            active.add_metric(labels, 1.0)
            for attr, family in gauges.items():
                family.add_metric(labels, getattr(ep, attr))
        yield active
        yield from gauges.values()
        yield from self._counts(open_, overflow)


class NatsMetrics:
    """The NATS source's gauges and counters (`detector.worker.nats_source`; names are a contract
    with deploy/)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.pending = Gauge(
            "iotad_nats_pending_messages",
            "Messages in the stream not yet delivered to the partition's consumer",
            ["partition"],
            registry=r,
        )
        self.ack_pending = Gauge(
            "iotad_nats_ack_pending",
            "Messages delivered to the partition's consumer and not acked yet",
            ["partition"],
            registry=r,
        )
        self.redelivered = Counter(
            "iotad_nats_redelivered_total",
            "Messages the server delivered more than once (unacked before a crash or ack_wait)",
            registry=r,
        )
        self.connected = Gauge("iotad_nats_connected", "1 while connected to NATS", registry=r)
        self.reconnects = Counter(
            "iotad_nats_reconnects_total", "Reconnections to NATS after the first", registry=r
        )


class AlertmanagerMetrics:
    """The Alertmanager sink's metrics (`detector.worker.alertmanager`).

    `urls` are the configured Alertmanager URLs: the values of the ``url`` label of
    ``iotad_alertmanager_errors_total`` (bounded by the settings, at most 10). `registry`
    None keeps the metrics unregistered (still readable through the attributes).
    """

    DROP_REASONS = ("queue_full", "rejected", "shutdown")

    def __init__(self, registry: CollectorRegistry | None, urls: Sequence[str]) -> None:
        r = registry
        self.sent = Counter(
            "iotad_alertmanager_sent_total",
            "Alerts accepted by at least one Alertmanager (re-posts of active alerts included)",
            registry=r,
        )
        self.errors = Counter(
            "iotad_alertmanager_errors_total",
            "Failed requests to Alertmanager, by URL (each retry counts)",
            ["url"],
            registry=r,
        )
        self.dropped = Counter(
            "iotad_alertmanager_dropped_total",
            "Alerts given up on: queue full, rejected by every Alertmanager (4xx), or shutdown",
            ["reason"],
            registry=r,
        )
        self.active = Gauge(
            "iotad_alertmanager_active_alerts",
            "Firing alerts the sink keeps re-posting to Alertmanager",
            registry=r,
        )
        # Exported at 0 from the start: rate() and increase() see the first failure.
        for url in urls:
            self.errors.labels(url)
        for reason in self.DROP_REASONS:
            self.dropped.labels(reason)


CHECKPOINT_BUCKETS_S = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CheckpointMetrics:
    """``iotad_checkpoint_seconds``, ``iotad_checkpoint_series``,
    ``iotad_checkpoint_failures_total{op}`` and ``iotad_series_restored`` on `registry` (the
    file checkpoints and the NATS partition checkpoints report the same); `registry` None:
    a fresh one of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.seconds = Histogram(
            "iotad_checkpoint_seconds",
            "Seconds to snapshot the detection state and write it to disk",
            buckets=CHECKPOINT_BUCKETS_S,
            registry=r,
        )
        self.series = Gauge(
            "iotad_checkpoint_series", "Series in the last checkpoint written", registry=r
        )
        self.failures = Counter(
            "iotad_checkpoint_failures_total",
            "Checkpoints that could not be written (op=save) or were ignored (op=restore)",
            ["op"],
            registry=r,
        )
        for op in ("save", "restore"):
            self.failures.labels(op)  # present at 0, for rate() queries
        self.restored = Gauge(
            "iotad_series_restored", "Series restored from the checkpoint at start", registry=r
        )


class SparkplugState(Protocol):
    """What the Sparkplug decoder (`detector.worker.sparkplug`) knows, read at scrape time."""

    @property
    def nodes(self) -> int: ...
    @property
    def aliases(self) -> int: ...

    evicted_nodes: int
    rebirths_requested: int


class SparkplugCollector(Collector):
    """Prometheus metrics of a decoder's Sparkplug state (read at scrape time)."""

    def __init__(self, decoder: SparkplugState) -> None:
        self.decoder = decoder

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: metrics are only produced at scrape time

    def collect(self) -> Iterator[Metric]:
        d = self.decoder
        yield GaugeMetricFamily(
            "iotad_sparkplug_nodes", "Sparkplug edge nodes whose BIRTH is known", d.nodes
        )
        yield GaugeMetricFamily(
            "iotad_sparkplug_aliases",
            "Sparkplug devices, metric names and aliases remembered, all nodes",
            d.aliases,
        )
        yield CounterMetricFamily(
            "iotad_sparkplug_nodes_evicted",
            "Sparkplug edge nodes forgotten past IOTAD_PAYLOAD__SPARKPLUG_MAX_NODES",
            d.evicted_nodes,
        )
        yield CounterMetricFamily(
            "iotad_sparkplug_rebirth_requests",
            "NCMD Node Control/Rebirth requests published (IOTAD_PAYLOAD__SPARKPLUG_REBIRTH)",
            d.rebirths_requested,
        )
