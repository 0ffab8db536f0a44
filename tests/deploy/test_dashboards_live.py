"""Every query of the provisioned Grafana dashboards, against a real Prometheus scraping a real
worker that mosquitto feeds a stream with two anomalies.

Grafana is not installable here, so the dashboards' JSON is run the way Grafana's Prometheus
datasource would run it (`tests.deploy.dashboard_panels`): each panel target and annotation
query with the template variables substituted. The anomaly panels must show the firing series
(and the same set Alertmanager holds), the annotations must mark both episodes, the series
dashboard must draw the band. The results are drawn with matplotlib, one PNG per dashboard:
into a temp directory, or into ``IOTAD_DASHBOARD_PNG_DIR`` (``make dashboard-pngs`` writes
docs/grafana/). What stays unchecked is Grafana's own rendering of the JSON.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    TINY_SERIES,
    TINY_START_TS,
    TINY_STEP_S,
    Mosquitto,
    WorkerProcess,
    publish_all,
    tiny_value,
)
from tests.deploy.dashboard_panels import (
    PanelResult,
    PromClient,
    Series,
    load,
    regions,
    render,
    run_annotations,
    run_panels,
    variable_values,
)
from tests.deploy.promql_names import metric_names_in_promql
from tests.deploy.services import (
    ALERTMANAGER,
    PROMETHEUS,
    DeployPrometheus,
    RealAlertmanager,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (ALERTMANAGER and PROMETHEUS), reason="needs alertmanager and prometheus"
    ),
]

FIRST_STEP = 1500  # where the tiny artifact's training data ends
STEPS = 130
CHUNK = 10  # steps per scrape: Prometheus sees the stream move on in 13 scrapes
SPIKE = range(40, 65)  # line2/temperature +20: an episode that fires and resolves
SHIFT_AT = 90  # line1/temperature +20 from here on: still firing at the end
STEP_S = 1.0  # the range queries' step: DeployPrometheus scrapes every second
NATS_ONLY = {
    "iotad_nats_pending_messages",
    "iotad_nats_ack_pending",
    "iotad_nats_redelivered_total",
    "iotad_nats_connected",
    "iotad_nats_reconnects_total",
}


@dataclass
class Live:
    prom: PromClient
    am: RealAlertmanager
    worker: WorkerProcess
    start: float
    end: float

    def variables(self, **chosen: str) -> dict[str, str]:
        """Grafana's defaults (All) and macros over the stream's time range."""
        return {
            "instance": ".*",
            "device": ".*",
            "metric": ".*",
            "__rate_interval": "4s",  # 4 scrape intervals, as Grafana's macro makes it
            "__range": f"{round(self.end - self.start)}s",
            **chosen,
        }

    def run(self, name: str, **chosen: str) -> tuple[list[PanelResult], dict[str, list[Series]]]:
        dashboard = load(name)
        variables = self.variables(**chosen)
        args = (self.prom, variables, self.start, self.end, STEP_S)
        return run_panels(dashboard, *args), run_annotations(dashboard, *args)

    def render(
        self,
        name: str,
        found: tuple[list[PanelResult], dict[str, list[Series]]],
        out: Path,
        note: str,
        **chosen: str,
    ) -> Path:
        window = (self.start, self.end, STEP_S)
        return render(load(name), *found, window, self.variables(**chosen), out, note)


def message(key: str, step: int, value: float) -> tuple[str, bytes]:
    ts = TINY_START_TS + (FIRST_STEP + step) * TINY_STEP_S
    return f"sensors/{key}", json.dumps({"ts": ts, "value": value}).encode()


def stream(steps: range) -> list[tuple[str, bytes]]:
    """The tiny artifact's series continued with the two anomalies; one malformed message
    first (for the rejected and dead-letter panels)."""
    out = [("sensors/line1/temperature", b"{not json")] if steps.start == 0 else []
    for step in steps:
        for key in TINY_SERIES:
            value = tiny_value(key, FIRST_STEP + step)
            if key == "line2/temperature" and step in SPIKE:
                value += 20.0
            if key == "line1/temperature" and step >= SHIFT_AT:
                value += 20.0
            out.append(message(key, step, value))
    return out


@pytest.fixture(scope="module")
def live(
    mosquitto: Mosquitto, tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("dashboards")
    started: list[RealAlertmanager | WorkerProcess | DeployPrometheus] = []
    try:
        am = RealAlertmanager(tmp / "am")
        started.append(am)
        env = {
            "IOTAD_ALERTMANAGER__URL": am.url,
            # line2 has per-reading gauges; line1 shows only while its episode is open
            "IOTAD_METRICS__SERIES_DEVICES": "line2",
            # episodes short enough to resolve within the stream
            "IOTAD_DETECTION__QUIET_PERIOD": "5",
            "IOTAD_DETECTION__RESOLVE_AFTER": "3",
        }
        (tmp / "worker").mkdir()
        worker = WorkerProcess(mosquitto, tiny_artifact, tmp / "worker", "iotad-dashboards", env)
        started.append(worker)
        worker.start()
        worker.wait_ready(60)
        (tmp / "prometheus").mkdir()
        prometheus = DeployPrometheus(
            tmp / "prometheus",
            {"worker": f"127.0.0.1:{worker.metrics_port}", "alertmanager": f"127.0.0.1:{am.port}"},
        )
        started.append(prometheus)
        prom = PromClient(prometheus.url)
        wait_for(lambda: prometheus.query("iotad_readings_total"), 20, "first scrape")
        start = time.time() - 2 * STEP_S
        for first in range(0, STEPS, CHUNK):
            publish_all(mosquitto.port, stream(range(first, min(first + CHUNK, STEPS))))
            count = min(first + CHUNK, STEPS) * len(TINY_SERIES) + 1  # + the malformed one
            worker.wait_metric("iotad_readings_total", lambda v, n=count: v >= n)
            # one scrape per chunk, so that the panels show the stream as it went
            wait_for(
                lambda n=count: any(
                    float(r["value"][1]) >= n for r in prometheus.query("iotad_readings_total")
                ),
                20,
                f"{count} readings scraped",
            )
        wait_for(
            lambda: (
                prometheus.query('iotad_anomaly_active{device="line1"}')
                and not prometheus.query('iotad_anomaly_active{device="line2"}')
            ),
            20,
            "line1 firing and line2 resolved, scraped",
        )
        yield Live(prom, am, worker, start, time.time())
    finally:
        for proc in reversed(started):
            proc.stop()


def firing_in_alertmanager(am: RealAlertmanager) -> set[tuple[str, str]]:
    return {
        (a["labels"]["device"], a["labels"]["metric"])
        for a in am.alerts()
        if a["labels"].get("alertname") == "SensorAnomaly" and a["status"]["state"] == "active"
    }


def panel(results: list[PanelResult], title: str) -> PanelResult:
    (found,) = [r for r in results if r.title == title]
    return found


def png_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get("IOTAD_DASHBOARD_PNG_DIR")
    return Path(chosen) if chosen else tmp_path


def check_every_query_answers(results: list[PanelResult]) -> None:
    """Every target ran (a refused query raises); all but the NATS ones found series."""
    empty = [
        f"{r.title}: {expr}"
        for r in results
        for ref, expr in r.exprs.items()
        if not r.series[ref] and not metric_names_in_promql(expr) & NATS_ONLY
    ]
    assert empty == []


def test_anomalies_dashboard_shows_what_fires(live: Live, tmp_path: Path) -> None:
    results, annotations = live.run("iotad-anomalies.json")
    check_every_query_answers(results)

    table = panel(results, "Firing now")
    rows = {(s.labels["device"], s.labels["metric"]) for s in table.series["B"]}
    assert rows == {("line1", "temperature")}
    # the table shows the episodes Alertmanager holds
    assert rows == wait_for(lambda: firing_in_alertmanager(live.am), 20, "alertmanager")
    (since,) = table.series["A"]
    onset_ms = (TINY_START_TS + (FIRST_STEP + SHIFT_AT) * TINY_STEP_S) * 1000
    # the episode opens at the shift's first reading or within the next few
    assert onset_ms <= since.values[0] <= onset_ms + 5 * TINY_STEP_S * 1000
    (value,), (lower,), (upper,) = table.series["B"], table.series["D"], table.series["E"]
    shifted = tiny_value("line1/temperature", FIRST_STEP + STEPS - 1) + 20.0
    assert value.values[0] == pytest.approx(shifted)
    # the latest reading's band (the forecast follows a shift; the level signal keeps the
    # episode open), which at the firing the value was outside of, as Alertmanager got it
    assert lower.values[0] < upper.values[0]
    (alert,) = [a for a in live.am.alerts() if a["labels"]["device"] == "line1"]
    at_onset = {k: float(alert["annotations"][k]) for k in ("value", "lower", "upper")}
    assert not at_onset["lower"] <= at_onset["value"] <= at_onset["upper"]

    open_now = panel(results, "Open anomalous episodes").all_series()
    assert [s.values[-1] for s in open_now] == [1.0]
    assert [s.values[-1] for s in panel(results, "Devices affected").all_series()] == [1.0]
    per_device = {
        s.legend: s.values[-1]
        for s in panel(results, "Episodes per device (time range, top 20)").all_series()
    }
    assert per_device == {"line1": 1.0, "line2": 1.0}
    over_time = {s.legend for s in panel(results, "Open episodes per device").all_series()}
    assert over_time == {"line1", "line2"}
    firings = panel(results, "Alert firings (time range)").all_series()
    assert [s.values[-1] for s in firings] == [2.0]  # line2 and line1

    # both episodes are annotated: line2's a closed region, line1's still open at the end
    marked = {s.labels["device"]: regions(s, STEP_S) for s in annotations["Anomalies"]}
    assert set(marked) == {"line1", "line2"}
    assert marked["line2"][-1][1] < live.end - 2 * STEP_S
    assert marked["line1"][-1][1] >= live.end - 2 * STEP_S
    assert marked["line2"][0][0] < marked["line1"][0][0]

    offered = variable_values(load("iotad-anomalies.json"), live.prom, live.end)
    assert offered["device"] == {"line1"}

    pytest.importorskip("matplotlib")
    out = live.render(
        "iotad-anomalies.json",
        (results, annotations),
        png_dir(tmp_path) / "iotad-anomalies.png",
        "line2/temperature spiked (fired, resolved), line1/temperature shifted (firing)",
    )
    assert out.stat().st_size > 10_000


def test_series_dashboard_draws_the_band(live: Live, tmp_path: Path) -> None:
    offered = variable_values(load("iotad-series.json"), live.prom, live.end)
    # line2 has per-reading gauges, line1 shows while it fires
    assert offered["device"] == {"line1", "line2"}
    assert offered["metric"] == {"temperature"}

    results, annotations = live.run("iotad-series.json", device="line2", metric="temperature")
    band = panel(results, "Value and expected band (per-reading)")
    named = {s.legend: s for s in band.all_series()}
    assert set(named) == {"value", "expected", "lower", "upper"}
    for lo, hi in zip(named["lower"].values, named["upper"].values, strict=True):
        assert lo < hi
    assert panel(results, "Anomaly score").all_series()
    (marked,) = annotations["Anomalies"]
    assert len(regions(marked, STEP_S)) == 1

    # line1 is not allow-listed: no per-reading panel, the open episode's band instead
    other, other_marks = live.run("iotad-series.json", device="line1", metric="temperature")
    assert not panel(other, "Value and expected band (per-reading)").all_series()
    open_band = panel(other, "While an episode is open: value against the band (any device)")
    assert {s.legend for s in open_band.all_series()} == {"value", "expected", "lower", "upper"}

    pytest.importorskip("matplotlib")
    for device, found in (("line2", (results, annotations)), ("line1", (other, other_marks))):
        out = live.render(
            "iotad-series.json",
            found,
            png_dir(tmp_path) / f"iotad-series-{device}.png",
            f"{device}/temperature"
            + (" (per-reading gauges on)" if device == "line2" else " (not allow-listed)"),
            device=device,
            metric="temperature",
        )
        assert out.stat().st_size > 10_000


def test_fleet_and_shards_queries_run(live: Live, tmp_path: Path) -> None:
    results, annotations = live.run("iotad-fleet.json")
    check_every_query_answers(results)
    assert {s.labels["device"] for s in annotations["Anomalies"]} == {"line1", "line2"}
    shards, _ = live.run("iotad-shards.json")
    check_every_query_answers(shards)  # the NATS panels are empty on an MQTT worker

    pytest.importorskip("matplotlib")
    out = live.render(
        "iotad-fleet.json",
        (results, annotations),
        png_dir(tmp_path) / "iotad-fleet.png",
        "one MQTT worker, the same stream",
    )
    assert out.stat().st_size > 10_000
