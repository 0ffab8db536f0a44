"""The dashboards' JSON holds together where Grafana would fail silently: band fills naming
series that exist, table columns renamed from queries that exist, links to dashboards that
exist, empty states that explain themselves. Grafana itself is not run (see
test_dashboards_live.py for the queries against a real Prometheus)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.dashboard_panels import DASHBOARDS, panels

DEPLOY = DASHBOARDS.parents[1]


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_band_fills_name_series_of_their_panel(name: str) -> None:
    for p in panels(dashboards()[name]):
        legends = {t.get("legendFormat") for t in p.get("targets", [])}
        for o in p.get("fieldConfig", {}).get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "custom.fillBelowTo":
                    assert o["matcher"]["options"] in legends, p["title"]
                    assert prop["value"] in legends, p["title"]


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_table_renames_name_queries_of_their_panel(name: str) -> None:
    for p in panels(dashboards()[name]):
        for t in p.get("transformations", []):
            for column in t["options"].get("renameByName", {}):
                ref = column.removeprefix("Value #")
                assert ref in {t["refId"] for t in p["targets"]}, (p["title"], column)


def test_links_and_uids() -> None:
    all_ = dashboards()
    uids = {d["uid"] for d in all_.values()}
    assert len(uids) == len(all_)
    for d in all_.values():
        text = json.dumps(d)
        for uid in re.findall(r"/d/([\w-]+)/", text):
            assert uid in uids, uid
        for link in d["links"]:
            if link["type"] == "link":
                # Grafana's Alerting pages, for the provisioned Alertmanager datasource
                assert link["url"].endswith("alertmanager=Alertmanager")
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/datasources.yml").read_text()
    )["datasources"]
    assert "Alertmanager" in {d["name"] for d in datasources}


def test_anomaly_annotations_on_the_time_series_dashboards() -> None:
    for name in ("iotad-anomalies.json", "iotad-series.json", "iotad-fleet.json"):
        (note,) = dashboards()[name]["annotations"]["list"]
        assert note["expr"].startswith("iotad_anomaly_active{"), name
        assert "{{device}}" in note["titleFormat"] and "{{metric}}" in note["titleFormat"]


def test_series_dashboard_explains_its_empty_state() -> None:
    series = dashboards()["iotad-series.json"]
    assert "IOTAD_METRICS__SERIES_DEVICES" in series["description"]
    assert "bounded cardinality" in series["description"]
    per_reading = [
        p for p in panels(series) if any("iotad_series_" in t["expr"] for t in p.get("targets", []))
    ]
    assert len(per_reading) == 2
    for p in per_reading:
        assert "IOTAD_METRICS__SERIES_DEVICES" in p["fieldConfig"]["defaults"]["noValue"]
    (text,) = [p for p in panels(series) if p["type"] == "text"]
    assert "IOTAD_METRICS__SERIES_DEVICES" in text["options"]["content"]
    # one series at a time: the band fill pairs fixed legends
    assert all(not v["multi"] for v in series["templating"]["list"])


def test_the_anomalies_dashboard_is_home() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert Path(home).name == "iotad-anomalies.json"
