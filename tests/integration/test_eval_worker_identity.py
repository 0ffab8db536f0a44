"""One detection core: the running worker and `iotad eval` score a NAB file identically.

A NAB file's forecaster is trained on its probationary rows, as the evaluation does; the file
is then replayed twice with that very artifact: offline through `training.nab_replay` (the eval
path) and live through mosquitto into `iotad run` with the opt-in score stream. Every row after
probation must get the same score, band and anomaly flag from both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Mosquitto, WorkerProcess, publish_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAB_FILE = "realAdExchange/exchange-2_cpc_results.csv"  # 1,624 rows, 243 of them probation


def nab_root() -> Path:
    env = os.environ.get("NAB_ROOT") or os.environ.get("IOTAD_NAB_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "nab"
    if not (root / "data" / NAB_FILE).is_file():
        pytest.skip(f"NAB corpus not found at {root}: set NAB_ROOT")
    return root


def test_worker_scores_a_nab_file_exactly_like_the_eval(
    mosquitto: Mosquitto, start_worker, collect, tmp_path: Path
) -> None:
    from training.nab import load_corpus, probation_rows
    from training.nab_replay import (
        SCORED,
        ReplayConfig,
        fit_forecaster,
        replay_fitted,
        series_names,
    )

    corpus = load_corpus(nab_root())
    ts, values = corpus.read_series(NAB_FILE)
    history = probation_rows(len(ts))
    device, metric = series_names(NAB_FILE)
    cfg = ReplayConfig()  # the eval's defaults: LSTM, DetectionConfig() as the worker's
    artifact, forecaster, _ = fit_forecaster(
        f"{device}/{metric}", ts[:history], values[:history], cfg, tmp_path / "model"
    )
    offline = replay_fitted(NAB_FILE, ts, values, history, artifact, forecaster, cfg)

    scores = collect(f"scores/{device}/{metric}")
    worker: WorkerProcess = start_worker(
        env={"IOTAD_MODEL__PATH": str(artifact.directory), "IOTAD_OUTPUT__SCORES": "true"}
    )
    # The eval primes the core with every history row, then scores the rest: publish them all.
    publish_all(
        mosquitto.port,
        [
            (f"sensors/{device}/{metric}", json.dumps({"ts": float(t), "value": float(v)}))
            for t, v in zip(ts, values, strict=True)
        ],
    )
    expected_rows = np.flatnonzero(offline.status == SCORED)
    wanted = {float(ts[row]) for row in expected_rows.tolist()}

    def all_scored(ms: list) -> bool:
        return wanted <= {json.loads(m.payload)["ts"] for m in ms}

    live = scores.wait_for(all_scored, timeout_s=120)
    by_ts = {json.loads(m.payload)["ts"]: json.loads(m.payload) for m in live}
    m = worker.metrics()
    assert m[("iotad_readings_total", ())] == len(ts)

    assert expected_rows.size > 1000
    for row in expected_rows.tolist():
        got = by_ts[float(ts[row])]
        # LiteRT runs other batch sizes in the two paths (padding), hence not bit-exact.
        assert got["score"] == pytest.approx(offline.core_score[row], abs=1e-4), row
        assert got["expected"] == pytest.approx(offline.expected[row], rel=1e-5, abs=1e-6)
        assert got["lower"] == pytest.approx(offline.lower[row], rel=1e-5, abs=1e-6)
        assert got["upper"] == pytest.approx(offline.upper[row], rel=1e-5, abs=1e-6)
