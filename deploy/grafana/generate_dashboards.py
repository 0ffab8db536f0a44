"""Writes the provisioned Grafana dashboards (deploy/grafana/dashboards/*.json).

The JSON is generated so that panels stay consistent (one datasource, one rate interval, one
instance filter) and a review reads Python rather than 2,000 lines of JSON. Edit this file,
run ``python deploy/grafana/generate_dashboards.py``, commit both; a test checks that the
committed JSON is what this script writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}  # provisioned in datasources/datasources.yml
RI = "$__rate_interval"
INST = 'instance=~"$instance"'


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    """One Prometheus query of a panel."""
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
        "range": True,
        **extra,
    }


def targets(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def timeseries(
    title: str,
    tgts: list[dict[str, Any]],
    *,
    unit: str = "short",
    stack: bool = False,
    bars: bool = False,
    description: str = "",
    overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "fillOpacity": 10}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
        custom["fillOpacity"] = 60
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": custom},
            "overrides": overrides or [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    tgts: list[dict[str, Any]],
    *,
    mappings: list[dict[str, Any]] | None = None,
    thresholds: list[tuple[float | None, str]] | None = None,
    unit: str = "short",
    description: str = "",
) -> dict[str, Any]:
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "mappings": mappings or [],
                "thresholds": {"mode": "absolute", "steps": steps},
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
        },
    }


def table(title: str, expr: str, *, hide: tuple[str, ...] = ()) -> dict[str, Any]:
    """An instant query shown as a table of its labels (for info-style metrics)."""
    tgt = target(expr, "", format="table", instant=True)
    tgt["range"] = False
    return {
        "type": "table",
        "title": title,
        "datasource": DS,
        "targets": [tgt],
        "options": {"showHeader": True},
        "fieldConfig": {"defaults": {}, "overrides": []},
        "transformations": [
            {"id": "organize", "options": {"excludeByName": dict.fromkeys(hide, True)}}
        ],
    }


def up_down(zero: str, one: str) -> list[dict[str, Any]]:
    """Value mapping of a 0/1 gauge."""
    return [
        {
            "type": "value",
            "options": {
                "0": {"text": zero, "color": "red", "index": 0},
                "1": {"text": one, "color": "green", "index": 1},
            },
        }
    ]


def row(title: str, repeat: str | None = None) -> dict[str, Any]:
    panel: dict[str, Any] = {"type": "row", "title": title, "collapsed": False, "panels": []}
    if repeat:
        panel["repeat"] = repeat
    return panel


def layout(panels: list[tuple[dict[str, Any], int, int]]) -> list[dict[str, Any]]:
    """Place (panel, width, height) left to right on a 24-column grid; rows take a line."""
    out: list[dict[str, Any]] = []
    x = y = line_h = 0
    for i, (panel, w, h) in enumerate(panels, start=1):
        if panel["type"] == "row" or x + w > 24:
            y, x, line_h = y + line_h, 0, 0
        panel = {**panel, "id": i, "gridPos": {"x": x, "y": y, "w": w, "h": h}}
        out.append(panel)
        x, line_h = x + w, max(line_h, h)
        if panel["type"] == "row":
            x = 24  # the next panel starts on a new line
    return out


def quantiles(metric: str, legend_prefix: str = "") -> list[dict[str, Any]]:
    return targets(
        *[
            (
                f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{INST}}}[{RI}])))",
                f"{legend_prefix}p{round(q * 100)}",
            )
            for q in (0.5, 0.9, 0.99)
        ]
    )


def query_var(name: str, query: str, label: str, *, multi: bool = True) -> dict[str, Any]:
    """A template variable whose values come from `label_values(...)`."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,  # on time range change: series come and go
        "multi": multi,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["iotad"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["iotad"], "asDropdown": False, "title": "iotad"}],
        "panels": panels,
    }


def fleet_overview() -> dict[str, Any]:
    """Worker health and throughput, all workers or a chosen few (`instance`)."""

    def rate(metric: str) -> str:
        return f"sum(rate({metric}{{{INST}}}[{RI}]))"

    panels = [
        row("Health"),
        (
            stat(
                "Scrape target",
                targets((f'up{{job="iotad", {INST}}}', "{{instance}}")),
                mappings=up_down("Down", "Up"),
            ),
            4,
            4,
        ),
        (
            stat(
                "Ready (/readyz)",
                targets((f"iotad_ready{{{INST}}}", "{{instance}}")),
                mappings=up_down("Not ready", "Ready"),
            ),
            4,
            4,
        ),
        (
            stat(
                "Broker connection",
                targets(
                    # A NATS worker's MQTT gauge stays 0: show its NATS connection instead.
                    (
                        f"iotad_mqtt_connected{{{INST}}} unless on (job, instance) "
                        'iotad_shard_info{source="nats"}',
                        "{{instance}}",
                    ),
                    (f"iotad_nats_connected{{{INST}}}", "{{instance}} (NATS)"),
                ),
                mappings=up_down("Disconnected", "Connected"),
            ),
            4,
            4,
        ),
        (
            stat(
                "Broker reconnects (range)",
                targets((f"sum(increase(iotad_mqtt_reconnects_total{{{INST}}}[$__range]))", "")),
                thresholds=[(None, "green"), (1, "orange")],
            ),
            4,
            4,
        ),
        (
            table(
                "Model", f"iotad_model_info{{{INST}}}", hide=("Time", "Value", "__name__", "job")
            ),
            8,
            4,
        ),
        row("Throughput"),
        (
            timeseries(
                "Readings/s: received vs processed",
                targets(
                    (rate("iotad_messages_total"), "messages"),
                    (rate("iotad_readings_total"), "received"),
                    (rate("iotad_readings_accepted_total"), "accepted"),
                    (rate("iotad_readings_scored_total"), "scored"),
                    (rate("iotad_readings_warming_total"), "warming up"),
                ),
                unit="reqps",
                description="received = accepted + rejected; accepted = scored + "
                "warming (windows not full yet).",
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Rejected/s by reason",
                targets(
                    (
                        f"sum by (reason) (rate(iotad_readings_rejected_total{{{INST}}}[{RI}]))",
                        "{{reason}}",
                    ),
                    (rate("iotad_deadletter_total"), "dead-lettered"),
                ),
                unit="reqps",
                stack=True,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Series: active and warming up",
                targets(
                    (f"sum(iotad_series_active{{{INST}}})", "active"),
                    (f"sum(iotad_series_warming{{{INST}}})", "warming up"),
                ),
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Alert events by state",
                targets(
                    (
                        f"sum by (state) (increase(iotad_alert_events_total{{{INST}}}[{RI}]))",
                        "{{state}}",
                    ),
                ),
                bars=True,
                description="Anomalous episodes starting (firing) and ending (resolved).",
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Anomalous readings/s",
                targets(
                    (rate("iotad_anomalies_total"), "anomalies"),
                ),
                unit="reqps",
            ),
            8,
            8,
        ),
        row("Latency"),
        (
            timeseries(
                "End-to-end lag (reading ts → processed)", quantiles("iotad_lag_seconds"), unit="s"
            ),
            8,
            8,
        ),
        (
            timeseries("Inference time per batch", quantiles("iotad_inference_seconds"), unit="s"),
            8,
            8,
        ),
        (
            timeseries(
                "Batch size",
                [
                    *quantiles("iotad_batch_size"),
                    target(
                        f"sum(rate(iotad_batch_size_sum{{{INST}}}[{RI}])) / "
                        f"sum(rate(iotad_batch_size_count{{{INST}}}[{RI}]))",
                        "mean",
                        "D",
                    ),
                ],
            ),
            8,
            8,
        ),
        row("Queues and delivery"),
        (
            timeseries(
                "Ingest queue depth",
                targets(
                    (f"iotad_ingest_queue_depth{{{INST}}}", "{{instance}}"),
                ),
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Alertmanager sink",
                targets(
                    (rate("iotad_alertmanager_sent_total"), "sent/s"),
                    (
                        f"sum by (url) (rate(iotad_alertmanager_errors_total{{{INST}}}[{RI}]))",
                        "errors/s {{url}}",
                    ),
                    (
                        f"sum by (reason) (rate(iotad_alertmanager_dropped_total{{{INST}}}[{RI}]))",
                        "dropped/s {{reason}}",
                    ),
                ),
                unit="reqps",
                description="Empty when the worker has no Alertmanager URL set. Errors are "
                "per Alertmanager URL: with an HA cluster, alerts are still delivered while "
                "one peer fails.",
            ),
            12,
            8,
        ),
        row("Process"),
        (
            timeseries(
                "CPU (cores)",
                targets(
                    (
                        f'rate(process_cpu_seconds_total{{job="iotad",{INST}}}[{RI}])',
                        "{{instance}}",
                    ),
                ),
                description="The worker uses two threads (network, detection): up to 2 cores.",
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Memory (resident)",
                targets(
                    (f'process_resident_memory_bytes{{job="iotad",{INST}}}', "{{instance}}"),
                ),
                unit="bytes",
            ),
            12,
            8,
        ),
    ]
    instance = query_var("instance", 'label_values(up{job="iotad"}, instance)', "Worker")
    return dashboard(
        "iotad-fleet",
        "iotad / fleet overview",
        layout([_sized(p) for p in panels]),
        [instance],
    )


def series_detail() -> dict[str, Any]:
    """Per-series value, forecast and score, from the opt-in per-series gauges."""
    sel = 'device=~"$device", metric=~"$metric"'
    expected_style = [
        {
            "matcher": {"id": "byRegexp", "options": ".*expected"},
            "properties": [
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                {"id": "custom.fillOpacity", "value": 0},
            ],
        }
    ]
    panels = [
        row("$device", repeat="device"),
        (
            timeseries(
                "Value vs expected",
                targets(
                    (f"iotad_series_value{{{sel}}}", "{{metric}}"),
                    (f"iotad_series_expected{{{sel}}}", "{{metric}} expected"),
                ),
                overrides=expected_style,
                description="Needs the worker's per-series gauges switched on (off by default: "
                "one time series per sensor).",
            ),
            16,
            8,
        ),
        (
            timeseries(
                "Anomaly score",
                targets(
                    (f"iotad_series_score{{{sel}}}", "{{metric}}"),
                ),
                description="Normalised forecast error; an alert fires above the model's "
                "threshold (see the Alertmanager alert's annotations).",
            ),
            8,
            8,
        ),
    ]
    device = query_var("device", "label_values(iotad_series_value, device)", "Device")
    metric = query_var(
        "metric", 'label_values(iotad_series_value{device=~"$device"}, metric)', "Metric"
    )
    return dashboard(
        "iotad-series", "iotad / series", layout([_sized(p) for p in panels]), [device, metric]
    )


def shards() -> dict[str, Any]:
    """Workers sharing the fleet through NATS (docs/scale-out.md): load per shard, lag per
    partition, redeliveries. A worker's metrics get their shard from iotad_shard_info."""

    def per_shard(expr: str, by: str = "shard") -> str:
        """`expr` (by job and instance) summed by the shard of the worker that exports it."""
        return (
            f"sum by ({by}) ({expr} * on (job, instance) group_left (shard) "
            f"iotad_shard_info{{{INST}}})"
        )

    def rate(metric: str) -> str:
        return per_shard(f"rate({metric}{{{INST}}}[{RI}])")

    panels = [
        row("Shards"),
        (
            table(
                "Workers and their shards",
                f"iotad_shard_info{{{INST}}}",
                hide=("Time", "Value", "__name__", "job"),
            ),
            8,
            6,
        ),
        (
            stat(
                "Partitions owned",
                targets((f"iotad_partitions_owned{{{INST}}}", "{{instance}}")),
                description="Worker i of N owns the partitions p with p % N == i.",
            ),
            4,
            6,
        ),
        (
            stat(
                "NATS connection",
                targets((f"iotad_nats_connected{{{INST}}}", "{{instance}}")),
                mappings=up_down("Disconnected", "Connected"),
            ),
            4,
            6,
        ),
        (
            stat(
                "NATS reconnects (range)",
                targets((f"sum(increase(iotad_nats_reconnects_total{{{INST}}}[$__range]))", "")),
                thresholds=[(None, "green"), (1, "orange")],
            ),
            4,
            6,
        ),
        (
            stat(
                "Messages waiting in the stream",
                targets((f"sum(iotad_nats_pending_messages{{{INST}}})", "pending")),
                thresholds=[(None, "green"), (10000, "orange"), (100000, "red")],
                description="Not yet delivered to the partitions' consumers, all partitions.",
            ),
            4,
            6,
        ),
        row("Load per shard"),
        (
            timeseries(
                "Readings/s per shard",
                targets((rate("iotad_readings_total"), "{{shard}}")),
                unit="reqps",
                description="A shard much busier than the others holds busier devices: the "
                "partition hash spreads devices, not readings.",
            ),
            12,
            8,
        ),
        (
            timeseries(
                "End-to-end lag p99 per shard",
                targets(
                    (
                        "histogram_quantile(0.99, "
                        + per_shard(f"rate(iotad_lag_seconds_bucket{{{INST}}}[{RI}])", "shard, le")
                        + ")",
                        "{{shard}}",
                    )
                ),
                unit="s",
            ),
            12,
            8,
        ),
        row("Lag per partition"),
        (
            timeseries(
                "Pending per partition (in the stream, not yet delivered)",
                targets(
                    (
                        f"max by (partition) (iotad_nats_pending_messages{{{INST}}})",
                        "p{{partition}}",
                    )
                ),
                description="A partition that keeps growing has a worker that cannot keep "
                "up (alert IotadPartitionBacklogGrowing).",
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Ack pending per partition (delivered, not yet acked)",
                targets(
                    (
                        f"max by (partition) (iotad_nats_ack_pending{{{INST}}})",
                        "p{{partition}}",
                    )
                ),
                description="What the workers hold in memory; bounded by the consumers' "
                "max ack pending.",
            ),
            12,
            8,
        ),
        row("Delivery"),
        (
            timeseries(
                "Pending per shard",
                targets((per_shard(f"iotad_nats_pending_messages{{{INST}}}"), "{{shard}}")),
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Redeliveries/s per shard",
                targets((rate("iotad_nats_redelivered_total"), "{{shard}}")),
                unit="reqps",
                bars=True,
                description="A burst after a worker restarts (its unacked messages); a steady "
                "rate means acks come too late (alert IotadRedeliveriesHigh).",
            ),
            12,
            8,
        ),
    ]
    instance = query_var("instance", "label_values(iotad_shard_info, instance)", "Worker")
    return dashboard(
        "iotad-shards", "iotad / shards", layout([_sized(p) for p in panels]), [instance]
    )


def _sized(item: Any) -> tuple[dict[str, Any], int, int]:
    return item if isinstance(item, tuple) else (item, 24, 1)


DASHBOARDS = {
    "iotad-fleet.json": fleet_overview,
    "iotad-series.json": series_detail,
    "iotad-shards.json": shards,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> None:
    OUT_DIR.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT_DIR / name).write_text(text)
        print(f"wrote {OUT_DIR / name}")


if __name__ == "__main__":
    main()
