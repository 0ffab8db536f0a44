"""A started `iotad run` exports every label value of the counters that deploy/prometheus's
rules take ``rate()`` or ``increase()`` of at 0, before any message arrives: a series that
appears with its first count hides that count from both (they need two samples)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import WorkerProcess, free_port
from tests.test_readme import documented_reject_reasons

pytestmark = pytest.mark.integration


def test_labelled_counters_are_exported_at_zero_before_any_message(
    start_worker, tmp_path: Path
) -> None:
    alertmanager = f"http://127.0.0.1:{free_port()}"  # never posted to: no alert fires
    worker: WorkerProcess = start_worker(
        env={
            "IOTAD_CHECKPOINT__PATH": str(tmp_path / "state.npz"),
            "IOTAD_ALERTMANAGER__URL": alertmanager,
        }
    )
    samples = worker.metrics()
    assert samples[("iotad_messages_total", ())] == 0  # nothing has arrived yet

    def at_zero(name: str, label: str) -> set[str]:
        """The values of `label` that counter `name` exports, each at 0."""
        values = {}
        for (sample, labels), value in samples.items():
            if sample == name:
                assert value == 0, (name, labels, value)
                values[dict(labels)[label]] = value
        return set(values)

    reasons = at_zero("iotad_readings_rejected_total", "reason")
    assert reasons == documented_reject_reasons()
    assert {"malformed_json", "out_of_order", "too_many_series", "retained"} <= reasons
    assert at_zero("iotad_alert_events_total", "state") == {"firing", "resolved"}
    assert at_zero("iotad_alerts_suppressed_total", "reason") == {"mute", "maintenance"}
    assert at_zero("iotad_publish_failed_total", "kind") == {
        "alert_unconfirmed",
        "deadletter",
        "scores",
    }
    assert at_zero("iotad_checkpoint_failures_total", "op") == {"save", "restore"}
    assert at_zero("iotad_alertmanager_dropped_total", "reason") == {
        "queue_full",
        "rejected",
        "shutdown",
    }
    assert at_zero("iotad_alertmanager_errors_total", "url") == {alertmanager}
