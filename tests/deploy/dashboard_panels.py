"""The provisioned Grafana dashboards' queries, run against a real Prometheus as Grafana would.

Grafana itself is not available here (not in Debian, no package on PyPI or npm), so this
walks the dashboard JSON instead: every panel target and annotation query, with the template
variables and Grafana's macros substituted, as a range query (instant for targets marked
``instant``), and the results kept per panel for checks and for `render`, which draws them
with matplotlib in the dashboard's grid. That drawing is a rendering of the queries' results,
not of Grafana: panel options (units, overrides, transformations) are only roughly followed.
"""

from __future__ import annotations

import json
import re
import textwrap
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.deploy.services import http_json

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"


@dataclass
class Series:
    """One time series (or one instant sample) a query returned."""

    labels: dict[str, str]
    times: list[float]
    values: list[float]
    legend: str = ""


@dataclass
class PanelResult:
    """A panel and what each of its queries returned (by refId)."""

    panel: dict[str, Any]
    exprs: dict[str, str] = field(default_factory=dict)
    series: dict[str, list[Series]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return str(self.panel.get("title", ""))

    def all_series(self) -> list[Series]:
        return [s for found in self.series.values() for s in found]


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text())


def substitute(expr: str, variables: dict[str, str]) -> str:
    """`expr` with Grafana's variables and macros replaced (longest names first, so that
    ``$__rate_interval`` is not read as ``$__rate`` and the rest)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    left = re.findall(r"\$\{?\w+", expr)
    assert not left, f"variables left in {expr!r}: {left}"
    return expr


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt or fmt == "__auto":
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


class PromClient:
    """Range and instant queries; a query Prometheus refuses raises (with its error)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, params: dict[str, str]) -> Any:
        body = http_json(f"{self.url}{path}?{urllib.parse.urlencode(params)}")
        assert body["status"] == "success", body
        return body["data"]["result"]

    def instant(self, expr: str, at: float) -> list[Series]:
        return [
            Series(r["metric"], [float(r["value"][0])], [float(r["value"][1])])
            for r in self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        ]

    def range(self, expr: str, start: float, end: float, step_s: float) -> list[Series]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s}"}
        return [
            Series(
                r["metric"],
                [float(t) for t, _ in r["values"]],
                [float(v) for _, v in r["values"]],
            )
            for r in self._get("/api/v1/query_range", params)
        ]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows and text panels included, in layout order."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def run_panels(
    dashboard: dict[str, Any],
    prom: PromClient,
    variables: dict[str, str],
    start: float,
    end: float,
    step_s: float,
) -> list[PanelResult]:
    """Every panel with targets, each target run as Grafana's Prometheus datasource would."""
    results = []
    for p in panels(dashboard):
        result = PanelResult(p)
        for t in p.get("targets", []):
            expr = substitute(t["expr"], variables)
            if t.get("instant"):
                found = prom.instant(expr, end)
            else:
                found = prom.range(expr, start, end, step_s)
            for s in found:
                s.legend = legend(t.get("legendFormat", ""), s.labels)
            result.exprs[t["refId"]] = expr
            result.series[t["refId"]] = found
        results.append(result)
    return results


def run_annotations(
    dashboard: dict[str, Any],
    prom: PromClient,
    variables: dict[str, str],
    start: float,
    end: float,
    step_s: float,
) -> dict[str, list[Series]]:
    """Annotation name -> the series of its query (non-zero samples are the regions)."""
    out = {}
    for a in dashboard["annotations"]["list"]:
        found = prom.range(substitute(a["expr"], variables), start, end, step_s)
        for s in found:
            s.legend = legend(a.get("titleFormat", ""), s.labels)
        out[a["name"]] = found
    return out


def variable_values(dashboard: dict[str, Any], prom: PromClient, at: float) -> dict[str, set]:
    """What each `label_values(selector, label)` template variable offers now."""
    out = {}
    for var in dashboard["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip(), re.S)
        assert m, query
        selector = substitute(m.group(1), {"device": "line2", "instance": ".*"})
        out[var["name"]] = {s.labels.get(m.group(2)) for s in prom.instant(selector, at)}
    return out


def regions(series: Series, step_s: float) -> list[tuple[float, float]]:
    """Runs of non-zero samples, as Grafana turns a Prometheus annotation query into
    regions (samples at most one step apart belong to one region)."""
    out: list[tuple[float, float]] = []
    for t, v in zip(series.times, series.values, strict=True):
        if v == 0:
            continue
        if out and t - out[-1][1] <= step_s * 1.01:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


# -- rendering ---------------------------------------------------------------------------------


def render(
    dashboard: dict[str, Any],
    results: list[PanelResult],
    annotations: dict[str, list[Series]],
    window: tuple[float, float, float],
    variables: dict[str, str],
    out: Path,
    note: str,
) -> Path:
    """Draw every panel's query results where the dashboard's grid puts the panel; `window`
    is the queries' (start, end, step) in seconds, `variables` what titles show for them."""
    start, end, step_s = window

    def title(text: str) -> str:
        for name, value in variables.items():
            text = text.replace(f"${name}", value)
        return text.replace("$", r"\$")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    by_id = {r.panel["id"]: r for r in results}
    laid = panels(dashboard)
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in laid)
    fig = plt.figure(figsize=(18, 0.45 * height + 1.2), dpi=70)
    fig.suptitle(
        f"{title(dashboard['title'])} — {title(note)}\nA matplotlib rendering of the panels' "
        "Prometheus queries (the provisioned JSON, run against a real Prometheus); not a "
        "Grafana screenshot.",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    grid = fig.add_gridspec(
        height, 24, hspace=2.2, wspace=0.9, left=0.03, right=0.99, top=1 - 1.0 / (0.45 * height)
    )
    regions_of = [
        (s.legend, r) for found in annotations.values() for s in found for r in regions(s, step_s)
    ]
    for p in laid:
        g = p["gridPos"]
        if p["type"] == "row":
            ax = fig.add_subplot(grid[g["y"], :])
            ax.axis("off")
            ax.text(
                0,
                0.5,
                title(p["title"]),
                fontsize=12,
                weight="bold",
                va="center",
                transform=ax.transAxes,
            )
            continue
        ax = fig.add_subplot(grid[g["y"] : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        ax.set_title(title(p.get("title", "")), fontsize=9, loc="left")
        result = by_id.get(p["id"])
        kind = p["type"]
        if kind == "text":
            ax.axis("off")
            body = re.sub(r"[*`]", "", p["options"]["content"]).replace("$", r"\$")
            ax.text(0, 1, textwrap.fill(body, 230), fontsize=7.5, va="top", transform=ax.transAxes)
        elif kind == "timeseries":
            _timeseries(ax, p, result, regions_of, mdates)
            ax.set_xlim(_dt(start), _dt(end))
        elif kind == "stat":
            _stat(ax, result)
        elif kind == "table":
            _table(ax, p, result)
        elif kind == "bargauge":
            _bars(ax, result)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _no_data(ax: Any, text: str) -> None:
    ax.text(
        0.5,
        0.5,
        textwrap.fill(text, 60),
        ha="center",
        va="center",
        fontsize=8,
        color="gray",
        transform=ax.transAxes,
    )


def _timeseries(
    ax: Any,
    panel: dict[str, Any],
    result: PanelResult | None,
    regions_of: list[tuple[str, tuple[float, float]]],
    mdates: Any,
) -> None:
    ax.tick_params(labelsize=7)
    found = result.all_series() if result else []
    for _title, (a, b) in regions_of:
        ax.axvspan(_dt(a), _dt(b + 1), color="red", alpha=0.12, lw=0)
    if not found:
        ax.set_yticks([])
        ax.set_xticks([])
        _no_data(ax, panel["fieldConfig"]["defaults"].get("noValue", "No data"))
        return
    named = {s.legend: s for s in found}
    fill = {
        o["matcher"]["options"]: prop["value"]
        for o in panel["fieldConfig"]["overrides"]
        for prop in o["properties"]
        if prop["id"] == "custom.fillBelowTo"
    }
    for upper, lower in fill.items():
        if upper in named and lower in named:
            hi, lo = named[upper], named[lower]
            common = sorted(set(hi.times) & set(lo.times))
            h = dict(zip(hi.times, hi.values, strict=True))
            low = dict(zip(lo.times, lo.values, strict=True))
            ax.fill_between(
                [_dt(t) for t in common],
                [low[t] for t in common],
                [h[t] for t in common],
                color="green",
                alpha=0.2,
                label="expected band",
            )
    for s in found:
        if s.legend in fill or s.legend in fill.values():
            continue  # drawn as the band
        style = "--" if s.legend.endswith("expected") else "-"
        ax.plot([_dt(t) for t in s.times], s.values, style, marker=".", ms=3, label=s.legend)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.legend(fontsize=7, loc="upper left")


def _stat(ax: Any, result: PanelResult | None) -> None:
    ax.axis("off")
    found = result.all_series() if result else []
    if not found:
        _no_data(ax, "No data")
        return
    text = "  ".join(f"{s.values[-1]:g}" for s in found[:4])
    ax.text(
        0.5, 0.4, text, ha="center", va="center", fontsize=22, weight="bold", transform=ax.transAxes
    )


def _table(ax: Any, panel: dict[str, Any], result: PanelResult | None) -> None:
    ax.axis("off")
    if result is None or not result.all_series():
        _no_data(ax, panel["fieldConfig"]["defaults"].get("noValue", "No data"))
        return
    hidden = {"Time", "Value", "__name__", "job"}
    names: dict[str, str] = {}
    for t in panel.get("transformations", []):
        hidden |= {k for k, v in t["options"].get("excludeByName", {}).items() if v}
        names.update(t["options"].get("renameByName", {}))
    rows: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    columns: list[str] = []
    for ref, found in result.series.items():
        column = names.get(f"Value #{ref}", ref) if len(result.series) > 1 else "value"
        for s in found:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k not in hidden))
            row = rows.setdefault(key, dict(key))
            value = s.values[-1]
            if column == "since":
                onset = datetime.fromtimestamp(value / 1000, UTC)
                row[column] = onset.strftime("%Y-%m-%d %H:%M:%S")
            else:
                row[column] = f"{value:.4g}"
        if len(result.series) > 1 and found:
            columns.append(column)
    labels = sorted({k for key in rows for k, _ in key})
    header = labels + columns if len(result.series) > 1 else [*labels, "value"]
    cells = [[row.get(c, "") for c in header] for row in rows.values()]
    table = ax.table(cellText=cells, colLabels=header, loc="upper left", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)


def _bars(ax: Any, result: PanelResult | None) -> None:
    found = result.all_series() if result else []
    if not found:
        ax.axis("off")
        _no_data(ax, "0")
        return
    ax.barh([s.legend for s in found], [s.values[-1] for s in found], color="tab:red")
    ax.tick_params(labelsize=8)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
