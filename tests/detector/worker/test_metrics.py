"""The worker's metrics: names (a contract with deploy/), labels, the bulk lag histogram."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from detector.worker.metrics import LAG_BUCKETS_S, BulkHistogram, WorkerMetrics

CONTRACT = {
    "iotad_messages_total": "counter",
    "iotad_readings_total": "counter",
    "iotad_readings_accepted_total": "counter",
    "iotad_readings_rejected_total": "counter",
    "iotad_readings_scored_total": "counter",
    "iotad_readings_warming_total": "counter",
    "iotad_anomalies_total": "counter",
    "iotad_alert_events_total": "counter",
    "iotad_series_active": "gauge",
    "iotad_series_warming": "gauge",
    "iotad_ingest_queue_depth": "gauge",
    "iotad_batch_size": "histogram",
    "iotad_inference_seconds": "histogram",
    "iotad_lag_seconds": "histogram",
    "iotad_mqtt_connected": "gauge",
    "iotad_mqtt_reconnects_total": "counter",
    "iotad_ready": "gauge",
    "iotad_model_info": "gauge",
    "iotad_model_reloads_total": "counter",
    "iotad_model_reload_failures_total": "counter",
    "iotad_deadletter_total": "counter",
}


def families(registry: CollectorRegistry) -> dict[str, str]:
    """Exposed family name (counters with their _total) -> type."""
    out = {}
    for fam in registry.collect():
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = fam.type
    return out


def test_contract_names_and_types(registry: CollectorRegistry) -> None:
    WorkerMetrics(registry)
    found = families(registry)
    for name, kind in CONTRACT.items():
        assert found.get(name) == kind, name
    text = generate_latest(registry).decode()
    for name in CONTRACT:
        assert f"# TYPE {name} {CONTRACT[name]}\n" in text


def test_no_device_labels_unless_allow_listed(registry: CollectorRegistry) -> None:
    m = WorkerMetrics(registry)
    m.set_series("press-1", "temperature", 1.0, 2.0, 3.0)
    assert "device=" not in generate_latest(registry).decode()
    assert "iotad_series_value" not in families(registry)


def test_per_series_gauges_for_allow_listed_devices(registry: CollectorRegistry) -> None:
    m = WorkerMetrics(registry, series_devices=["press-1"])
    m.set_series("press-1", "temperature", 21.5, 21.0, 0.7)
    m.set_series("press-2", "temperature", 1.0, 1.0, 1.0)  # not allow-listed: ignored
    labels = {"device": "press-1", "metric": "temperature"}
    assert registry.get_sample_value("iotad_series_value", labels) == 21.5
    assert registry.get_sample_value("iotad_series_expected", labels) == 21.0
    assert registry.get_sample_value("iotad_series_score", labels) == 0.7
    other = {"device": "press-2", "metric": "temperature"}
    assert registry.get_sample_value("iotad_series_value", other) is None


def test_model_info(registry: CollectorRegistry) -> None:
    m = WorkerMetrics(registry)
    m.set_model("v1", "lstm", 32)
    m.set_model("v2", "gru", 16)  # a reload replaces, not adds
    assert (
        registry.get_sample_value(
            "iotad_model_info", {"version": "v2", "cell": "gru", "window": "16"}
        )
        == 1.0
    )
    assert (
        registry.get_sample_value(
            "iotad_model_info", {"version": "v1", "cell": "lstm", "window": "32"}
        )
        is None
    )


def test_rejected_by_reason_and_alert_states(registry: CollectorRegistry) -> None:
    m = WorkerMetrics(registry)
    m.rejected.labels("bad_ts").inc(3)
    assert registry.get_sample_value("iotad_readings_rejected_total", {"reason": "bad_ts"}) == 3
    # Both states exist at zero from the start, so rate() works before the first alert.
    for state in ("firing", "resolved"):
        assert registry.get_sample_value("iotad_alert_events_total", {"state": state}) == 0


def test_lag_buckets_span_1ms_to_60s() -> None:
    assert LAG_BUCKETS_S[0] == 0.001 and LAG_BUCKETS_S[-1] == 60.0


def test_bulk_histogram_matches_le_semantics(registry: CollectorRegistry) -> None:
    h = BulkHistogram("t_lag_seconds", "test", [0.1, 1.0, 10.0])
    registry.register(h)
    # 0.1 falls in le=0.1 (bounds are inclusive); 11 only in +Inf.
    h.observe_many(np.array([0.05, 0.1, 0.5, 1.0, 5.0, 11.0]))
    h.observe_many([])
    get = registry.get_sample_value
    assert get("t_lag_seconds_bucket", {"le": "0.1"}) == 2
    assert get("t_lag_seconds_bucket", {"le": "1.0"}) == 4
    assert get("t_lag_seconds_bucket", {"le": "10.0"}) == 5
    assert get("t_lag_seconds_bucket", {"le": "+Inf"}) == 6
    assert get("t_lag_seconds_count") == 6
    assert get("t_lag_seconds_sum") == pytest.approx(17.65)


def test_two_workers_do_not_share_a_registry() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    WorkerMetrics(a).messages.inc()
    WorkerMetrics(b)
    assert a.get_sample_value("iotad_messages_total") == 1
    assert b.get_sample_value("iotad_messages_total") == 0


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples of /metrics served by the worker's own HTTP endpoint, by name and labels."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from detector.worker.health import HealthServer

    server = HealthServer(registry, lambda: (True, "ready"), "127.0.0.1", 0)
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.stop()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_process_python_and_build_info_on_the_metrics_endpoint(registry: CollectorRegistry) -> None:
    import sys
    import tomllib
    from pathlib import Path

    m = WorkerMetrics(registry)
    samples = scrape(registry)
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_gc_collections_total",
    ):
        assert name in samples, name
    assert samples["process_resident_memory_bytes"][()] > 1_000_000
    # stdin, stdout, stderr at least; the scrape's own sockets come and go meanwhile.
    assert samples["process_open_fds"][()] >= 3
    python = "{}.{}.{}".format(*sys.version_info[:3])
    (python_info,) = samples["python_info"]
    assert dict(python_info)["version"] == python

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    build = (("model_version", ""), ("python_version", python), ("version", version))
    assert samples["iotad_build_info"] == {build: 1.0}
    m.set_model("20261130-lstm", "lstm", 32)
    build = (("model_version", "20261130-lstm"), ("python_version", python), ("version", version))
    assert scrape(registry)["iotad_build_info"] == {build: 1.0}


def test_every_rejection_reason_is_exported_at_zero_from_the_start(
    registry: CollectorRegistry,
) -> None:
    from tests.test_readme import documented_reject_reasons

    WorkerMetrics(registry)
    for reason in documented_reject_reasons():
        assert registry.get_sample_value("iotad_readings_rejected_total", {"reason": reason}) == 0
