"""The model changes while the worker runs (SIGHUP, a new artifact at the model path) or
between runs (a new artifact, an old checkpoint): nothing lost, nothing scored twice, no
cold start, and a bad artifact leaves the old model running (docs/model-lifecycle.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import TINY_SERIES, Mosquitto, WorkerProcess, publish_all
from tests.integration.test_reliability_broker import numbered, wait_until

pytestmark = pytest.mark.integration

WINDOW = 16  # the tiny artifact's window
CAL_STD = 0.5  # the error calibration given to line1/temperature in the "new" artifact


def version_of(src: Path, dst: Path, version: str, edit: dict | None = None) -> Path:
    """A copy of artifact `src` as another version (the same network: what changes is what
    the artifact says), with `edit` merged into ``artifact.json``."""
    shutil.copytree(src, dst)
    meta = dst / "artifact.json"
    doc = json.loads(meta.read_text())
    doc["version"] = version
    for key, value in (edit or {}).items():
        doc[key] = value
    meta.write_text(json.dumps(doc))
    return dst


def recalibrated(src: Path) -> dict:
    """The calibration section with line1/temperature's residuals at mean 0, std CAL_STD."""
    cal = json.loads((src / "artifact.json").read_text())["calibration"]
    cal["per_series"]["line1/temperature"] = {
        "mean": 0.0, "std": CAL_STD, "abs_quantiles": {}, "n": 100,
    }  # fmt: skip
    return cal


def point(link: Path, target: Path) -> None:
    """Point the model path at `target` atomically (how a deployment swaps artifacts)."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def model_version(worker: WorkerProcess) -> str:
    found = [
        dict(labels)["version"]
        for (name, labels), v in worker.metrics().items()
        if name == "iotad_model_info" and v == 1
    ]
    assert len(found) == 1, found
    return found[0]


def score_counts(messages: list) -> Counter:
    return Counter((m.topic, json.loads(m.payload)["ts"]) for m in messages)


def test_sighup_swaps_the_model_between_batches_under_load(
    mosquitto: Mosquitto, start_worker, collect, tmp_path: Path, tiny_artifact: Path
) -> None:
    v1 = version_of(tiny_artifact, tmp_path / "v1", "reload-v1")
    v2 = version_of(
        tiny_artifact, tmp_path / "v2", "reload-v2", {"calibration": recalibrated(tiny_artifact)}
    )
    v3 = version_of(tiny_artifact, tmp_path / "v3", "reload-v3")
    link = tmp_path / "model"
    link.symlink_to(v1)
    out = collect("scores/#")
    alerts = collect("alerts/#")
    env = {
        "IOTAD_MODEL__PATH": str(link),
        "IOTAD_OUTPUT__SCORES": "true",
        "IOTAD_MODEL__RELOAD_CHECK_S": "0",  # SIGHUP only
    }
    worker = start_worker(env=env)
    stream = numbered(500, TINY_SERIES)
    n = len(TINY_SERIES)
    first, second = stream[: 40 * n], stream[40 * n : 60 * n]
    # A spike in the second part: its alert names the model that raised it.
    topic, payload = second[10 * n]
    doc = json.loads(payload)
    second[10 * n] = (topic, json.dumps({**doc, "value": doc["value"] + 15.0}).encode())
    publish_all(mosquitto.port, first)
    worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= len(first))
    warming = worker.sample("iotad_readings_warming_total")
    assert warming == WINDOW * n

    # 1. An idle swap, to see the documented rule on the first reading after it.
    point(link, v2)
    worker.signal(signal.SIGHUP)
    worker.wait_metric("iotad_model_reloads_total", lambda v: v == 1)
    assert model_version(worker) == "reload-v2"
    publish_all(mosquitto.port, second)
    out.wait_for(lambda ms: len(ms) >= len(first) + len(second) - warming)
    # No cold start: nothing warmed again.
    assert worker.sample("iotad_readings_warming_total") == warming
    # Error statistics restart from the new calibration: the band of the first reading
    # after the swap is expected ± 3 · CAL_STD in scaled units (mean 0).
    scale = json.loads((v2 / "artifact.json").read_text())["scaling"]["per_series"][
        "line1/temperature"
    ]["scale"]
    ts_first = json.loads(second[0][1])["ts"]
    after = [
        json.loads(m.payload)
        for m in out.snapshot("scores/line1/temperature")
        if json.loads(m.payload)["ts"] == ts_first
    ]
    assert len(after) == 1
    assert after[0]["upper"] - after[0]["lower"] == pytest.approx(2 * 3 * CAL_STD * scale, rel=1e-6)
    fired = alerts.wait_for(lambda ms: any(json.loads(m.payload)["state"] == "firing" for m in ms))
    assert {json.loads(m.payload)["model"] for m in fired} == {"reload-v2"}

    # 2. A swap while readings flow: the last part is published only once the new model
    # runs, so readings go to both models; /readyz answers 200 all along.
    third = stream[60 * n :]
    swapped = threading.Event()
    signal_now = threading.Event()

    def publish() -> None:
        for start in range(0, len(third), 60):
            if start == 600:
                signal_now.set()
            if start == 900:
                swapped.wait(60)
            publish_all(mosquitto.port, third[start : start + 60])

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    assert signal_now.wait(60)
    point(link, v3)
    worker.signal(signal.SIGHUP)
    codes: list[int] = []

    def swapped_yet() -> bool:
        codes.append(worker.get("/readyz")[0])
        return worker.sample("iotad_model_reloads_total") >= 2

    wait_until(swapped_yet, what="the second swap")
    swapped.set()
    at_swap = worker.sample("iotad_readings_accepted_total")
    publisher.join(60)
    total = len(first) + len(second) + len(third)
    worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= total)
    assert at_swap < total  # the swap did happen mid-stream
    assert codes and set(codes) == {200}
    assert model_version(worker) == "reload-v3"

    # Every reading accounted for once: accepted, then scored or warming, never a repeat.
    m = worker.metrics()
    assert m[("iotad_readings_accepted_total", ())] == total
    assert m[("iotad_readings_scored_total", ())] == total - warming
    assert m[("iotad_readings_warming_total", ())] == warming
    assert not [k for (name, k), v in m.items() if name == "iotad_readings_rejected_total" and v]
    msgs = out.wait_for(lambda ms: len(ms) >= total - warming)
    counts = score_counts(msgs)
    assert len(counts) == total - warming and set(counts.values()) == {1}
    assert worker.sample("iotad_model_reload_failures_total") == 0
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def _broken_tflite(src: Path, dst: Path) -> Path:
    version_of(src, dst, "broken-tflite")
    (dst / "model.tflite").write_bytes(b"not a flatbuffer")
    return dst


def _lambda_layer(src: Path, dst: Path) -> Path:
    """A .keras file whose config holds a Lambda layer (code): safe mode refuses it."""
    import zipfile

    version_of(src, dst, "lambda-layer")
    keras_file = dst / "model.keras"
    with zipfile.ZipFile(keras_file) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"].append(
        {"module": "keras.layers", "class_name": "Lambda", "config": {"function": "x"}}
    )
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(keras_file, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return dst


def _unknown_schema(src: Path, dst: Path) -> Path:
    return version_of(src, dst, "schema-99", {"schema_version": 99})


def test_a_bad_artifact_keeps_the_old_model(
    mosquitto: Mosquitto, start_worker, tmp_path: Path, tiny_artifact: Path
) -> None:
    v1 = version_of(tiny_artifact, tmp_path / "v1", "keep-v1")
    link = tmp_path / "model"
    link.symlink_to(v1)
    # Found by watching the model path (no signal).
    worker = start_worker(
        env={"IOTAD_MODEL__PATH": str(link), "IOTAD_MODEL__RELOAD_CHECK_S": "0.1"}
    )
    stream = numbered(60, TINY_SERIES)
    n = len(TINY_SERIES)
    publish_all(mosquitto.port, stream[: 20 * n])
    worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= 20 * n)
    bad = [
        (_broken_tflite, "not a loadable LiteRT model"),
        (_lambda_layer, "Lambda layer carries code"),
        (_unknown_schema, "unknown schema_version 99"),
    ]
    for k, (make, reason) in enumerate(bad, start=1):
        point(link, make(tiny_artifact, tmp_path / f"bad{k}"))
        worker.wait_metric("iotad_model_reload_failures_total", lambda v, k=k: v == k)
        lines = [line for line in worker.log().splitlines() if "model reload from" in line]
        assert len(lines) == k and reason in lines[-1], lines
        assert "model keep-v1 keeps running" in lines[-1]
        assert model_version(worker) == "keep-v1"
    # Still working, with the old model and its state: nothing warms again.
    publish_all(mosquitto.port, stream[20 * n :])
    worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= len(stream))
    assert worker.sample("iotad_readings_scored_total") == len(stream) - WINDOW * n
    # A good one after the bad ones is taken; the broken ones were not retried meanwhile.
    point(link, version_of(tiny_artifact, tmp_path / "v2", "keep-v2"))
    worker.wait_metric("iotad_model_reloads_total", lambda v: v == 1)
    assert model_version(worker) == "keep-v2"
    assert worker.sample("iotad_model_reload_failures_total") == len(bad)
    assert worker.get("/readyz")[0] == 200


def test_a_restart_with_a_new_artifact_keeps_the_windows(
    mosquitto: Mosquitto, start_worker, tmp_path: Path, tiny_artifact: Path
) -> None:
    state = tmp_path / "state.npz"
    v1 = version_of(tiny_artifact, tmp_path / "v1", "restart-v1")
    v2 = version_of(tiny_artifact, tmp_path / "v2", "restart-v2")
    env = {"IOTAD_CHECKPOINT__PATH": str(state), "IOTAD_MODEL__PATH": str(v1)}
    stream = numbered(30, TINY_SERIES)
    n = len(TINY_SERIES)
    cut = 20 * n
    first = start_worker(env=env, worker_id="w-restart-new-model")
    publish_all(mosquitto.port, stream[:cut])
    first.wait_metric("iotad_readings_accepted_total", lambda v: v >= cut)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0

    second = start_worker(
        env={**env, "IOTAD_MODEL__PATH": str(v2)}, worker_id="w-restart-new-model"
    )
    assert second.sample("iotad_series_restored") == n
    assert "state of model restart-v1 carried over to restart-v2" in second.log()
    assert second.sample("iotad_checkpoint_failures_total", op="restore") == 0
    publish_all(mosquitto.port, stream[cut : cut + n])  # one reading per series
    second.wait_metric("iotad_readings_scored_total", lambda v: v >= n)
    assert second.sample("iotad_readings_warming_total") == 0  # no cold start
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
