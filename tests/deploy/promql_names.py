"""Metric names used by PromQL expressions in deploy/ (Prometheus rules, Grafana dashboards).

Lets a test compare what the dashboards and rules query with what a running worker exports:
a renamed metric then fails a test instead of leaving an empty panel or a silent alert.

This is a small lexer, not a PromQL parser: it removes what cannot be a metric name (strings,
label matchers, durations, grouping label lists, Grafana variables, numbers), then keeps the
identifiers that are not functions, aggregations or keywords. Recording rules (names with a
colon) are dropped: they are checked through their own expressions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


KEYWORDS = _words(
    """
    by without on ignoring group_left group_right bool offset and or unless atan2 inf nan
    start end
    """
)
AGGREGATIONS = _words(
    """
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk
    limit_ratio
    """
)
# Functions are also recognised by the "(" after them; the list covers `sum without (x) (...)`
# style spacing and a function name left on its own by a Grafana macro.
FUNCTIONS = _words(
    """
    abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month
    day_of_week day_of_year days_in_month delta deriv exp floor histogram_avg
    histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar
    histogram_sum holt_winters double_exponential_smoothing hour idelta increase irate
    label_join label_replace ln log2 log10 minute month predict_linear rate resets round
    scalar sgn sort sort_desc sort_by_label sort_by_label_desc sqrt time timestamp vector
    year avg_over_time min_over_time max_over_time sum_over_time count_over_time
    quantile_over_time stddev_over_time stdvar_over_time last_over_time present_over_time
    mad_over_time acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh deg rad pi
    label_values query_result metrics
    """
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
# Grafana's variable queries: label_values(label) names no metric; in
# label_values(expr, label) the label is not a metric either.
_LABEL_VALUES_1 = re.compile(r"\blabel_values\s*\(\s*[A-Za-z_]\w*\s*\)")
_LABEL_VALUES_2 = re.compile(r"\blabel_values\s*\((.*),\s*[A-Za-z_]\w*\s*\)\s*$", re.DOTALL)
_IDENT = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")
# `{__name__=~"a|b"}` (a Grafana variable query over several metrics): plain alternatives only.
_NAME_MATCHER = re.compile(r'__name__\s*=~?\s*"([A-Za-z_:][\w:]*(?:\|[A-Za-z_:][\w:]*)*)"')


def metric_names_in_promql(expr: str) -> set[str]:
    """Metric names an expression (or a Grafana variable query) reads.

    >>> sorted(metric_names_in_promql(
    ...     'histogram_quantile(0.99, sum by (job, le) (rate(x_seconds_bucket{a="b"}[5m])))'
    ... ))
    ['x_seconds']
    """
    named = {_base_name(n) for m in _NAME_MATCHER.finditer(expr) for n in m.group(1).split("|")}
    text = _STRING.sub(" ", expr)
    text = _LABEL_VALUES_1.sub(" ", text)
    text = _LABEL_VALUES_2.sub(r"\1", text.strip())
    # Grafana variables first: `{instance=~"$instance"}` is gone with the braces anyway, but
    # `[$__rate_interval]` and `${metric}` must not leave an identifier behind.
    text = _GRAFANA_VAR.sub(" ", text)
    while True:  # nested {..} cannot happen in PromQL, but [..] can hold a subquery
        stripped = _BRACKETS.sub(" ", _BRACES.sub(" ", text))
        if stripped == text:
            break
        text = stripped
    text = _GROUPING.sub(" ", text)
    names = {n for n in named if ":" not in n}
    for m in _IDENT.finditer(text):
        name = m.group()
        rest = text[m.end() :].lstrip()
        if ":" in name or name.lower() in KEYWORDS:
            continue
        if name in AGGREGATIONS or name in FUNCTIONS or rest.startswith("("):
            continue
        names.add(_base_name(name))
    return names


def _base_name(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def exprs_in_deploy(root: Path) -> Iterator[tuple[str, str]]:
    """(where, expression) for every rule and dashboard query under `root` (repo or deploy/)."""
    deploy = root / "deploy" if (root / "deploy").is_dir() else root
    for path in sorted((deploy / "prometheus" / "rules").glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                name = rule.get("record") or rule.get("alert")
                yield f"{path.name}:{name}", rule["expr"]
    for path in sorted((deploy / "grafana" / "dashboards").glob("*.json")):
        yield from _dashboard_exprs(path.name, json.loads(path.read_text()))


def _dashboard_exprs(where: str, node: Any) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str) and node["expr"].strip():
            yield f"{where}:{node.get('refId', '')}", node["expr"]
        if node.get("type") == "query" and "query" in node and "name" in node:
            query = node["query"]
            query = query.get("query", "") if isinstance(query, dict) else query
            if isinstance(query, str) and query.strip():
                yield f"{where}:${node['name']}", query
        for value in node.values():
            yield from _dashboard_exprs(where, value)
    elif isinstance(node, list):
        for value in node:
            yield from _dashboard_exprs(where, value)


def metric_names_in_deploy(root: Path | str) -> set[str]:
    """Every metric name the Prometheus rules and Grafana dashboards under `root` read."""
    names: set[str] = set()
    for _, expr in exprs_in_deploy(Path(root)):
        names |= metric_names_in_promql(expr)
    return names
