"""Every Prometheus metric is defined in detector/worker/metrics.py: no other module of the package
constructs one (names stay consistent and are found in one place)."""

from __future__ import annotations

import ast
from pathlib import Path

import prometheus_client
import prometheus_client.core

PACKAGE = Path(__file__).resolve().parents[3] / "detector"
ALLOWED = {PACKAGE / "worker" / "metrics.py"}


def constructors() -> set[str]:
    """Names prometheus_client exports that make metrics or collectors (Counter, Gauge,
    ..., the *MetricFamily classes, ProcessCollector, ...)."""
    names = set()
    for module in (prometheus_client, prometheus_client.core):
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, type) and (
                name in {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
                or name.endswith(("MetricFamily", "Collector"))
            ):
                names.add(name)
    names.discard("CollectorRegistry")  # a registry holds metrics, it defines none
    return names


def metric_constructors_used(source: str) -> list[str]:
    """``line: name`` of every metric constructor `source` imports from prometheus_client
    or reaches as an attribute of it (``prometheus_client.Gauge``)."""
    makers = constructors()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prometheus_client"):
            found += [f"{node.lineno}: {a.name}" for a in node.names if a.name in makers]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in makers
            and isinstance(node.value, ast.Name)
            and node.value.id in {"prometheus_client", "core", "metrics_core"}
        ):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_check_finds_constructors_and_nothing_else() -> None:
    assert metric_constructors_used("from prometheus_client import Counter, Gauge") == [
        "1: Counter",
        "1: Gauge",
    ]
    assert metric_constructors_used(
        "import prometheus_client\nprometheus_client.Histogram('x', 'y')"
    )
    assert metric_constructors_used("from prometheus_client.core import GaugeMetricFamily")
    assert metric_constructors_used("from prometheus_client import ProcessCollector")
    assert metric_constructors_used("from collections import Counter\nCounter('abc')") == []
    assert metric_constructors_used("from prometheus_client import CollectorRegistry") == []


def test_no_module_but_metrics_py_defines_a_metric() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in ALLOWED:
            continue
        found = metric_constructors_used(path.read_text(encoding="utf-8"))
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert offenders == {}, (
        "define Prometheus metrics in detector/worker/metrics.py and hand the objects over: "
        f"{offenders}"
    )
