"""`iotad run` evicts idle series and resolves the alerts still open on them: the resolved
alert reaches the broker (reason ``evicted``) and Alertmanager stops listing the alert, and
the open-episode gauges let it go.

The stream is test_worker_pipeline's: a spike on line1/temperature at step 60 and a level
shift on line2/temperature from step 70 to the end. Neither episode can resolve within the
stream (an episode resolves no sooner than ``quiet_period``, 100 readings, after it fired),
so every alert that fires is still open when the stream stops and the series go idle.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mosquitto, WorkerProcess, publish_all
from tests.deploy.services import ALERTMANAGER, RealAlertmanager, wait_for
from tests.integration.test_worker_pipeline import stream

pytestmark = pytest.mark.integration


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[RealAlertmanager]:
    if not ALERTMANAGER:
        pytest.skip("alertmanager binary not found (scripts/system-deps.sh installs it)")
    am = RealAlertmanager(tmp_path / "am")
    yield am
    am.stop()


def test_an_evicted_series_resolves_its_alert_on_the_broker_and_in_alertmanager(
    mosquitto: Mosquitto, start_worker, collect, alertmanager: RealAlertmanager
) -> None:
    out = collect("alerts/#")
    worker: WorkerProcess = start_worker(
        env={
            # Sweeps every 1.25 s (detector.worker.loop.evict_interval). The stream takes far less
            # than 5 s per series, and the firing alerts reach Alertmanager well within it.
            "IOTAD_DETECTION__IDLE_EVICT_S": "5",
            "IOTAD_ALERTMANAGER__URL": alertmanager.url,
        }
    )
    both = {"line1/temperature", "line2/temperature"}

    def alerts(state: str) -> list[dict]:
        got = [json.loads(m.payload) for m in out.snapshot("alerts/")]
        return [a for a in got if a["worker"] == worker.worker_id and a["state"] == state]

    def keys(docs: list[dict]) -> set[str]:
        return {f"{a['device']}/{a['metric']}" for a in docs}

    publish_all(mosquitto.port, stream())
    out.wait_for(lambda _: keys(alerts("firing")) >= both)
    wait_for(
        lambda: keys([a["labels"] for a in alertmanager.alerts()]) >= both,
        what="the firing alerts in Alertmanager",
    )
    worker.settle(mosquitto.port)  # every alert of the stream is out
    n_fired = worker.sample("iotad_alert_events_total", state="firing")
    out.wait_for(lambda _: len(alerts("firing")) >= n_fired)
    fired = {a["id"]: a for a in alerts("firing")}

    # The stream has ended: the series go idle, are evicted, and their alerts resolve.
    worker.wait_metric("iotad_series_active", lambda v: v == 0)
    out.wait_for(lambda _: len(alerts("resolved")) >= len(fired))
    resolved = alerts("resolved")
    assert sorted(a["id"] for a in resolved) == sorted(f"{i}-resolved" for i in fired)
    for a in resolved:
        first = fired[a["id"].removesuffix("-resolved")]
        assert a["reason"] == "evicted"
        assert (a["device"], a["metric"], a["signal"]) == (
            first["device"],
            first["metric"],
            first["signal"],
        )
        assert a["ts"] >= first["ts"]
    assert "evicted" in worker.log()
    assert worker.sample("iotad_alert_events_total", state="resolved") == len(fired)
    assert worker.sample("iotad_anomaly_episodes_open") == 0
    # Alertmanager has the resolved alerts: it lists none of ours, and the sink re-posts none.
    wait_for(lambda: not alertmanager.alerts(), what="no alert left in Alertmanager")
    assert worker.sample("iotad_alertmanager_active_alerts") == 0
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
