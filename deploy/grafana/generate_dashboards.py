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
    no_value: str = "",
) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "fillOpacity": 10}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
        custom["fillOpacity"] = 60
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if no_value:
        defaults["noValue"] = no_value  # what an empty panel says instead of "No data"
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": defaults,
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
    instant: bool = False,
) -> dict[str, Any]:
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    if instant:  # one value now, not a range reduced to its last point
        tgts = [{**t, "instant": True, "range": False} for t in tgts]
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
    """A template variable whose values come from `label_values(...)`; `multi` False: one
    value at a time (Grafana starts on the first), no "All"."""
    var: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,  # on time range change: series come and go
        "multi": multi,
        "includeAll": multi,
        "sort": 1,
    }
    if multi:
        var["allValue"] = ".*"
        var["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        var["current"] = {}
    return var


def text_panel(title: str, markdown: str) -> dict[str, Any]:
    return {
        "type": "text",
        "title": title,
        "options": {"mode": "markdown", "content": markdown},
    }


def bar_gauge(title: str, tgts: list[dict[str, Any]], *, description: str = "") -> dict[str, Any]:
    """Instant values side by side as horizontal bars (one per legend)."""
    tgts = [{**t, "instant": True, "range": False} for t in tgts]
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {
                "min": 0,
                "noValue": "0",
                "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": [{"value": None, "color": "red"}]},
            },
            "overrides": [],
        },
        "options": {
            "orientation": "horizontal",
            "displayMode": "basic",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
        },
    }


def annotation(name: str, expr: str, title: str, text: str, color: str) -> dict[str, Any]:
    """Regions on every time-series panel where `expr` is non-zero (Grafana's Prometheus
    annotations: consecutive samples one `step` apart make one region)."""
    return {
        "name": name,
        "datasource": DS,
        "enable": True,
        "iconColor": color,
        "expr": expr,
        "step": "10s",
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": "device,metric,signal",
        "useValueForTime": False,
    }


ANOMALY_ANNOTATION_TEXT = "anomalous episode ({{signal}}) on {{instance}}"
ALERTING_LINKS = [
    # Grafana's built-in Alertmanager datasource serves its Alerting pages only (panels cannot
    # query it): these open the provisioned Alertmanager's alerts and silences there.
    {
        "type": "link",
        "title": "Alertmanager: alerts",
        "url": "/alerting/groups?alertmanager=Alertmanager",
        "targetBlank": False,
        "icon": "bolt",
    },
    {
        "type": "link",
        "title": "Alertmanager: silences",
        "url": "/alerting/silences?alertmanager=Alertmanager",
        "targetBlank": False,
        "icon": "bolt",
    },
]


def dashboard(
    uid: str,
    title: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    *,
    annotations: list[dict[str, Any]] | None = None,
    description: str = "",
    links: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["iotad"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": annotations or []},
        "links": [
            {"type": "dashboards", "tags": ["iotad"], "asDropdown": False, "title": "iotad"},
            *(links or []),
        ],
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
                        # Every reason is exported from the start: only those that occur.
                        f"sum by (reason) (rate(iotad_readings_rejected_total{{{INST}}}[{RI}]))"
                        " > 0",
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
        annotations=[anomaly_annotation(INST)],
        description="Worker health, throughput, latency and delivery. Red regions: anomalous "
        "episodes (iotad / anomalies lists them).",
        links=ALERTING_LINKS,
    )


SERIES_GAUGES = "iotad_series_value/expected/lower/upper/score"
SERIES_EMPTY = (
    "No per-reading data for this series: only devices named in "
    "IOTAD_METRICS__SERIES_DEVICES have it (see the panel below for open anomalies)"
)


def band_overrides(prefix: str = "") -> list[dict[str, Any]]:
    """The expected band: filled from `upper` down to `lower`, thin edges, dashed forecast."""
    return [
        {
            "matcher": {"id": "byName", "options": f"{prefix}upper"},
            "properties": [
                {"id": "custom.fillBelowTo", "value": f"{prefix}lower"},
                {"id": "custom.fillOpacity", "value": 20},
                {"id": "custom.lineWidth", "value": 0},
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "green"}},
            ],
        },
        {
            "matcher": {"id": "byName", "options": f"{prefix}lower"},
            "properties": [
                {"id": "custom.lineWidth", "value": 0},
                {"id": "custom.fillOpacity", "value": 0},
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "green"}},
            ],
        },
        {
            "matcher": {"id": "byName", "options": f"{prefix}expected"},
            "properties": [
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                {"id": "custom.fillOpacity", "value": 0},
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "blue"}},
            ],
        },
        {
            "matcher": {"id": "byName", "options": f"{prefix}value"},
            "properties": [
                {"id": "custom.fillOpacity", "value": 0},
                {"id": "custom.lineWidth", "value": 2},
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "yellow"}},
            ],
        },
    ]


def anomaly_annotation(selector: str) -> dict[str, Any]:
    return annotation(
        "Anomalies",
        f"iotad_anomaly_active{{{selector}}}",
        "{{device}}/{{metric}} anomalous",
        ANOMALY_ANNOTATION_TEXT,
        "red",
    )


def series_detail() -> dict[str, Any]:
    """One chosen series: value against its expected band, its score, its anomalies."""
    sel = 'device="$device", metric="$metric"'
    explain = text_panel(
        "About this dashboard",
        "Value, forecast and expected band of **one series** (pick Device and Metric above). "
        f"The per-reading gauges ({SERIES_GAUGES}) exist only for devices named in "
        "`IOTAD_METRICS__SERIES_DEVICES`: one time series "
        "per sensor and gauge, so the list stays short (bounded cardinality). Any other "
        "device shows here only while it has an open anomalous episode (lower panel, from "
        "`iotad_anomaly_active_*`). Red regions: anomalous episodes. Empty Device list: no "
        "device is named and nothing fires now.",
    )
    panels = [
        (explain, 24, 3),
        row("$device / $metric"),
        (
            timeseries(
                "Value and expected band (per-reading)",
                targets(
                    (f"iotad_series_value{{{sel}}}", "value"),
                    (f"iotad_series_expected{{{sel}}}", "expected"),
                    (f"iotad_series_lower{{{sel}}}", "lower"),
                    (f"iotad_series_upper{{{sel}}}", "upper"),
                ),
                overrides=band_overrides(),
                no_value=SERIES_EMPTY,
                description="Last value, forecast and band edges of each reading, from the "
                "per-series gauges: only for devices in IOTAD_METRICS__SERIES_DEVICES. The "
                "band is the forecast ± the detection's band width; readings outside it "
                "raise the score.",
            ),
            16,
            9,
        ),
        (
            timeseries(
                "Anomaly score",
                targets(
                    (f"iotad_series_score{{{sel}}}", "score"),
                ),
                no_value=SERIES_EMPTY,
                description="In [0, 1]; a reading at or above the threshold (0.5 by default, "
                "or the rules file's for the series) is anomalous.",
            ),
            8,
            9,
        ),
        (
            timeseries(
                "While an episode is open: value against the band (any device)",
                targets(
                    (f"iotad_anomaly_active_value{{{sel}}}", "value"),
                    (f"iotad_anomaly_active_expected{{{sel}}}", "expected"),
                    (f"iotad_anomaly_active_lower{{{sel}}}", "lower"),
                    (f"iotad_anomaly_active_upper{{{sel}}}", "upper"),
                ),
                overrides=band_overrides(),
                no_value="No open anomalous episode of this series in this time range",
                description="From the open-episode gauges, which every device has while it "
                "fires (at most IOTAD_METRICS__MAX_ACTIVE_ANOMALIES episodes): the latest "
                "reading's value and band from the firing until the episode resolves.",
            ),
            24,
            8,
        ),
    ]
    # Devices with per-reading gauges, and any device while it fires.
    names = "iotad_series_value|iotad_anomaly_active"
    device = query_var(
        "device", f'label_values({{__name__=~"{names}"}}, device)', "Device", multi=False
    )
    metric = query_var(
        "metric",
        f'label_values({{__name__=~"{names}", device="$device"}}, metric)',
        "Metric",
        multi=False,
    )
    return dashboard(
        "iotad-series",
        "iotad / series",
        layout([_sized(p) for p in panels]),
        [device, metric],
        annotations=[anomaly_annotation(sel)],
        description="One series against its expected band. Per-reading series metrics exist "
        "only for devices named in IOTAD_METRICS__SERIES_DEVICES (bounded cardinality); "
        "other devices show only while an anomalous episode is open.",
        links=ALERTING_LINKS,
    )


def anomalies() -> dict[str, Any]:
    """What fires now and what fired: the operators' view, from the open-episode gauges."""
    sel = f'{INST}, device=~"$device"'

    def active(gauge: str, ref: str, scale: str = "") -> dict[str, Any]:
        tgt = target(f"iotad_anomaly_active_{gauge}{{{sel}}}{scale}", "", ref)
        return {**tgt, "format": "table", "instant": True, "range": False}

    columns = ("since", "value", "expected", "lower", "upper", "score")
    series_link = (
        "/d/iotad-series/iotad-series?var-device=${__data.fields.device}"
        "&var-metric=${__data.fields.metric}&${__url_time_range}"
    )
    firing = {
        "type": "table",
        "title": "Firing now",
        "description": "One row per open anomalous episode: since when, and the latest "
        "reading's value against its expected band [lower, upper]. At most "
        "IOTAD_METRICS__MAX_ACTIVE_ANOMALIES rows (the earliest opened); more are counted in "
        "iotad_anomaly_active_overflow_total. The same episodes are SensorAnomaly alerts in "
        "Alertmanager (links above). Click a device for its series.",
        "datasource": DS,
        "targets": [
            active("since_seconds", "A", " * 1000"),  # Grafana's time units are in ms
            active("value", "B"),
            active("expected", "C"),
            active("lower", "D"),
            active("upper", "E"),
            active("score", "F"),
        ],
        "options": {"showHeader": True, "sortBy": [{"displayName": "since", "desc": True}]},
        "fieldConfig": {
            "defaults": {"noValue": "Nothing fires"},
            "overrides": [
                {
                    "matcher": {"id": "byName", "options": "since"},
                    "properties": [{"id": "unit", "value": "dateTimeFromNow"}],
                },
                {
                    "matcher": {"id": "byName", "options": "device"},
                    "properties": [
                        {
                            "id": "links",
                            "value": [{"title": "Series", "url": series_link}],
                        }
                    ],
                },
                {
                    "matcher": {"id": "byName", "options": "value"},
                    "properties": [
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                    ],
                },
            ],
        },
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True, "__name__": True, "job": True},
                    "renameByName": {
                        f"Value #{chr(ord('A') + i)}": name for i, name in enumerate(columns)
                    },
                    "indexByName": {
                        name: i
                        for i, name in enumerate(
                            ("device", "metric", "signal", *columns, "instance")
                        )
                    },
                },
            },
        ],
    }
    panels = [
        row("Now"),
        (
            stat(
                "Open anomalous episodes",
                targets((f"sum(iotad_anomaly_episodes_open{{{INST}}})", "")),
                thresholds=[(None, "green"), (1, "red")],
                instant=True,
                description="Every open episode, shown in the table or not.",
            ),
            6,
            4,
        ),
        (
            stat(
                "Devices affected",
                targets(
                    (f"count(count by (device) (iotad_anomaly_active{{{sel}}})) or vector(0)", "")
                ),
                thresholds=[(None, "green"), (1, "red")],
                instant=True,
            ),
            6,
            4,
        ),
        (
            stat(
                "Alert firings (time range)",
                targets(
                    (
                        # increase() extrapolates to the range's edges: counts are whole
                        "round(sum(increase(iotad_alert_events_total"
                        f'{{state="firing", {INST}}}[$__range])))',
                        "",
                    )
                ),
                thresholds=[(None, "green"), (1, "orange")],
                instant=True,
                description="Anomalous episodes that started, all series (rules-suppressed "
                "ones not included).",
            ),
            6,
            4,
        ),
        (
            stat(
                "Episodes not in the table (time range)",
                targets(
                    (
                        "round(sum(increase("
                        f"iotad_anomaly_active_overflow_total{{{INST}}}[$__range])))",
                        "",
                    )
                ),
                thresholds=[(None, "green"), (1, "orange")],
                instant=True,
                description="Episodes that opened while IOTAD_METRICS__MAX_ACTIVE_ANOMALIES "
                "were shown already: raise the setting, or see all in Alertmanager.",
            ),
            6,
            4,
        ),
        (firing, 24, 9),
        row("Over time"),
        (
            timeseries(
                "Open episodes per device",
                targets(
                    (f"sum by (device) (iotad_anomaly_active{{{sel}}})", "{{device}}"),
                ),
                stack=True,
                no_value="No anomalous episode in this time range",
                description="From iotad_anomaly_active: the devices with open episodes at "
                "each moment (a device label only while it fires, capped).",
            ),
            12,
            8,
        ),
        (
            bar_gauge(
                "Episodes per device (time range, top 20)",
                targets(
                    (
                        "topk(20, sum by (device) "
                        f"(changes(iotad_anomaly_active_since_seconds{{{sel}}}[$__range]) + 1))",
                        "{{device}}",
                    )
                ),
                description="Episodes seen in iotad_anomaly_active in the time range, per "
                "device (each new episode has a new onset). Series over the table's cap are "
                "not counted here; the fleet-wide count is 'Alert firings'.",
            ),
            12,
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
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Alerts kept back by the rules file",
                targets(
                    (
                        "sum by (reason) "
                        f"(increase(iotad_alerts_suppressed_total{{{INST}}}[{RI}]))",
                        "{{reason}}",
                    ),
                ),
                bars=True,
                description="Anomalies in muted series or maintenance windows "
                "(docs/rules.md): counted, not alerted.",
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Open episodes vs alerts held in Alertmanager",
                targets(
                    (f"sum(iotad_anomaly_episodes_open{{{INST}}})", "open episodes"),
                    (
                        f"sum(iotad_alertmanager_active_alerts{{{INST}}})",
                        "re-posted to Alertmanager",
                    ),
                ),
                description="The worker re-posts every firing alert to Alertmanager until it "
                "resolves; the two lines match unless the Alertmanager sink is off (no "
                "IOTAD_ALERTMANAGER__URL: the second is empty) or alerts were dropped.",
            ),
            8,
            8,
        ),
    ]
    instance = query_var("instance", 'label_values(up{job="iotad"}, instance)', "Worker")
    device = query_var("device", "label_values(iotad_anomaly_active, device)", "Device")
    return dashboard(
        "iotad-anomalies",
        "iotad / anomalies",
        layout([_sized(p) for p in panels]),
        [instance, device],
        annotations=[anomaly_annotation(sel)],
        description="Anomalies firing now and over time, from the worker's open-episode "
        "gauges (iotad_anomaly_active*, at most IOTAD_METRICS__MAX_ACTIVE_ANOMALIES).",
        links=ALERTING_LINKS,
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
    "iotad-anomalies.json": anomalies,
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
