"""The PromQL metric-name extractor on literal expressions, and on deploy/ itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.promql_names import (
    exprs_in_deploy,
    metric_names_in_deploy,
    metric_names_in_promql,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="iotad"} == 0 or absent(up{job="iotad"})', {"up"}),
        ("sum by (job) (rate(iotad_readings_total[5m]))", {"iotad_readings_total"}),
        (
            "histogram_quantile(0.99, sum by (job, le) (rate(iotad_lag_seconds_bucket[5m])))",
            {"iotad_lag_seconds"},
        ),
        (
            "sum(rate(iotad_batch_size_sum[5m])) / sum(rate(iotad_batch_size_count[5m]))",
            {"iotad_batch_size"},
        ),
        # recording rules are dropped, label values that look like names are not picked up
        ('job:iotad_lag_seconds:p99_5m{job="up"} > 30', set()),
        # strings with metric-like text, offsets, @, durations, subqueries, bool
        (
            'label_replace(a_total offset 5m, "dst", "b_total", "src", "(.*)")'
            " > bool 1e-3 and on (job) group_left (version) c_info @ start()",
            {"a_total", "c_info"},
        ),
        ("max_over_time(rate(d_total[5m])[1h:30s])", {"d_total"}),
        ("sum without (instance) (e_gauge)", {"e_gauge"}),
        ("topk(5, f_gauge) unless ignoring(reason) g_gauge", {"f_gauge", "g_gauge"}),
        ('count_values("version", h_info)', {"h_info"}),
        # Grafana: variables and macros, variable queries
        (
            'sum by (reason) (rate(iotad_readings_rejected_total{instance=~"$instance"}'
            "[$__rate_interval]))",
            {"iotad_readings_rejected_total"},
        ),
        (
            "sum(increase(iotad_mqtt_reconnects_total[$__range])) * ${factor}",
            {"iotad_mqtt_reconnects_total"},
        ),
        ('label_values(iotad_series_value{device=~"$device"}, metric)', {"iotad_series_value"}),
        ("label_values(device)", set()),
        (
            'label_values({__name__=~"iotad_series_value|iotad_anomaly_active"}, device)',
            {"iotad_series_value", "iotad_anomaly_active"},
        ),
        ('{__name__="a_total", job="x"} or {__name__=~"b.*"}', {"a_total"}),
    ],
)
def test_literal_expressions(expr: str, names: set[str]) -> None:
    assert metric_names_in_promql(expr) == names


# The metrics of the issue 12 contract: iotad_shard_info{shard, source} and
# iotad_partitions_owned from every worker, the rest from NATS workers only.
SCALE_OUT_CONTRACT = {
    "iotad_shard_info",
    "iotad_partitions_owned",
    "iotad_nats_pending_messages",
    "iotad_nats_ack_pending",
    "iotad_nats_redelivered_total",
    # beyond the contract, from the nats branch: the NATS connection (the MQTT gauge of a
    # NATS worker stays 0)
    "iotad_nats_connected",
    "iotad_nats_reconnects_total",
}


def test_deploy_names_are_the_contract() -> None:
    """Every name the dashboards and rules read is one the worker (or Prometheus) exports.

    The list is the metric contract with the worker; the lead's end-to-end test checks the
    same set against a running worker's /metrics.
    """
    contract = {
        "up",
        "iotad_messages_total",
        "iotad_readings_total",
        "iotad_readings_accepted_total",
        "iotad_readings_rejected_total",
        "iotad_readings_scored_total",
        "iotad_readings_warming_total",
        "iotad_anomalies_total",
        "iotad_alert_events_total",
        "iotad_series_active",
        "iotad_series_warming",
        "iotad_ingest_queue_depth",
        "iotad_batch_size",
        "iotad_inference_seconds",
        "iotad_lag_seconds",
        "iotad_mqtt_connected",
        "iotad_mqtt_reconnects_total",
        "iotad_ready",
        "iotad_model_info",
        "iotad_deadletter_total",
        "iotad_series_value",
        "iotad_series_expected",
        "iotad_series_score",
        "iotad_alertmanager_sent_total",
        "iotad_alertmanager_errors_total",
        "iotad_alertmanager_dropped_total",
        # issue 14: the alerting path (detector/worker/metrics.py)
        "iotad_publish_failed_total",
        "iotad_checkpoint_failures_total",
        # model lifecycle (docs/model-lifecycle.md)
        "iotad_model_reload_failures_total",
        # prometheus_client's standard process collector, on the worker's registry
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        # per-device rules (detector/worker/metrics.py, docs/rules.md)
        "iotad_rules_stale",
        "iotad_alerts_suppressed_total",
        "iotad_alertmanager_active_alerts",
        # open anomalous episodes and the per-series band (dashboards: iotad / anomalies, series)
        "iotad_series_lower",
        "iotad_series_upper",
        "iotad_anomaly_active",
        "iotad_anomaly_active_since_seconds",
        "iotad_anomaly_active_value",
        "iotad_anomaly_active_expected",
        "iotad_anomaly_active_lower",
        "iotad_anomaly_active_upper",
        "iotad_anomaly_active_score",
        "iotad_anomaly_episodes_open",
        "iotad_anomaly_active_overflow_total",
        # issue 12: workers sharing the fleet through NATS (docs/scale-out.md)
        *SCALE_OUT_CONTRACT,
    }
    names = metric_names_in_deploy(ROOT)
    assert names - contract == set()
    # and the deploy files use most of the contract (a dashboard lost in a refactor shows here)
    assert len(names) >= len(contract) - 2, contract - names


def test_every_dashboard_and_rule_expr_is_found() -> None:
    where = [w for w, _ in exprs_in_deploy(ROOT)]
    assert any(w.startswith("iotad.rules.yml:IotadLagHigh") for w in where)
    assert any(w.startswith("iotad-fleet.json:") for w in where)
    assert "iotad-series.json:$device" in where
    assert any(w.startswith("iotad-anomalies.json:") for w in where)
    assert any(w.startswith("iotad-shards.rules.yml:IotadShardMissing") for w in where)
    assert "iotad-shards.json:$instance" in where


def test_scale_out_names_are_in_the_worker_code() -> None:
    """The worker's code names every metric of the scale-out contract (with the nats branch
    merged; detector/worker/metrics.py and the NATS source register them)."""
    code = "\n".join(p.read_text() for p in (ROOT / "detector").rglob("*.py"))
    # client_python adds _total to a counter's name when the code leaves it out
    spelt = {name: {f'"{name}"', f'"{name.removesuffix("_total")}"'} for name in SCALE_OUT_CONTRACT}
    missing = {name for name, forms in spelt.items() if not any(f in code for f in forms)}
    assert missing == set()
    assert metric_names_in_deploy(ROOT) >= SCALE_OUT_CONTRACT


def test_alerting_path_names_are_in_the_worker_code() -> None:
    """The counters the alerting-path rules read are registered by the worker's code."""
    code = "\n".join(p.read_text() for p in (ROOT / "detector").rglob("*.py"))
    for name in (
        "iotad_alertmanager_dropped_total",
        "iotad_publish_failed_total",
        "iotad_checkpoint_failures_total",
    ):
        assert name in metric_names_in_deploy(ROOT)
        # client_python adds _total to a counter's name when the code leaves it out
        assert f'"{name}"' in code or f'"{name.removesuffix("_total")}"' in code, name


def test_doctests() -> None:
    import doctest

    from tests.deploy import promql_names

    assert doctest.testmod(promql_names).failed == 0
