"""Checkpoints: a restart through the real file scores exactly like no restart; bad files are
reported in one line and ignored; files hold plain arrays only and are replaced atomically."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.readings import Reading
from detector.worker.checkpoint import (
    Checkpointer,
    CheckpointError,
    CheckpointingCore,
    load_state,
    save_state,
)
from tests.detector.core_fixtures import LastValueForecaster, make_artifact

CFG = DetectionConfig(resolve_after=3, quiet_period=5, error_halflife=20)
SERIES = ("m1/temp", "m1/rpm", "m2/temp")


def stream(n: int = 60, spike_at: int = 45) -> list[Reading]:
    """Three interleaved series (one with a trained scale), a spike on m1/temp after the
    restart point so that events are compared too."""
    rng = random.Random(3)
    out = []
    for i in range(n):
        for k, key in enumerate(SERIES):
            device, metric = key.split("/")
            value = 10.0 * k + math.sin(i / 4 + k) + rng.gauss(0, 0.1)
            if key == "m1/temp" and i == spike_at:
                value += 25.0
            out.append(Reading(device, metric, 1_700_000_000.0 + 60.0 * i, value))
    return out


def new_core(window_len: int = 4, features: tuple[str, ...] = ("value",)) -> DetectionCore:
    art = make_artifact(
        window_len=window_len,
        per_series={"m1/temp": (0.0, 2.0)},
        errors={"m1/temp": (0.0, 0.3)},
        features=features,
    )
    return DetectionCore(art, LastValueForecaster(), CFG)


def checkpointer(path: Path, registry: CollectorRegistry | None = None) -> Checkpointer:
    return Checkpointer(path, interval_s=60.0, registry=registry or CollectorRegistry())


@pytest.mark.parametrize("features", [("value",), ("value", "tod_sin", "tod_cos")])
def test_restart_through_the_file_scores_like_no_restart(
    tmp_path: Path, features: tuple[str, ...]
) -> None:
    readings = stream()
    cut = 30 * len(SERIES)
    straight = new_core(features=features).process(readings)
    expected = [(s.reading, s.score, s.expected, s.is_anomaly) for s in straight.scored]
    expected = [e for e in expected if e[0] in set(readings[cut:])]
    assert any(e.state == "firing" for e in straight.events)

    first = new_core(features=features)
    first.process(readings[: cut // 2])
    first.process(readings[cut // 2 : cut])
    path = tmp_path / "state.npz"
    registry = CollectorRegistry()
    assert checkpointer(path, registry).save(first)
    assert registry.get_sample_value("iotad_checkpoint_series") == len(SERIES)
    assert registry.get_sample_value("iotad_checkpoint_seconds_count") == 1

    second = new_core(features=features)
    reg2 = CollectorRegistry()
    assert checkpointer(path, reg2).restore(second) == len(SERIES)
    assert reg2.get_sample_value("iotad_series_restored") == len(SERIES)
    after = second.process(readings[cut:])
    assert after.warming == 0  # the first reading after the restart is scored at once
    got = [(s.reading, s.score, s.expected, s.is_anomaly) for s in after.scored]
    assert got == expected
    assert [e.id for e in after.events] == [
        e.id for e in straight.events if e.ts >= readings[cut].ts
    ]


def test_file_holds_plain_arrays_only(tmp_path: Path) -> None:
    core = new_core()
    core.process(stream(10))
    path = tmp_path / "state.npz"
    checkpointer(path).save(core)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    assert all(a.dtype != object for a in arrays.values())
    assert arrays["keys"].dtype.kind == "U"
    assert sorted(arrays["keys"].tolist()) == sorted(SERIES)
    assert str(arrays["model_version"]) == "test-model"
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]  # no temp file left


def test_an_empty_core_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    checkpointer(path).save(new_core())
    assert load_state(path)["keys"].shape == (0,)
    assert checkpointer(path).restore(new_core()) == 0


def test_a_failed_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    core = new_core()
    core.process(stream(10))
    path = tmp_path / "state.npz"
    registry = CollectorRegistry()
    cp = checkpointer(path, registry)
    assert cp.save(core)
    before = path.read_bytes()

    def disk_full(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        file.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with caplog.at_level(logging.WARNING, logger="iotad.checkpoint"):
        assert not cp.save(core)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]
    assert registry.get_sample_value("iotad_checkpoint_failures_total", {"op": "save"}) == 1
    (line,) = caplog.messages
    assert "No space left on device" in line


def test_the_temp_file_is_private_and_never_a_planted_one(tmp_path: Path) -> None:
    # The temp name used to be predictable (".state.npz.<pid>.tmp", opened without O_EXCL):
    # anyone able to write to the directory could plant a symlink there and have the
    # worker overwrite the file it points to.
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / f".state.npz.{os.getpid()}.tmp").symlink_to(victim)
    core = new_core()
    core.process(stream(10))
    path = tmp_path / "state.npz"
    assert checkpointer(path).save(core)
    assert victim.read_bytes() == b"precious"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(load_state(path)["keys"].tolist()) == sorted(SERIES)


def test_series_with_non_finite_state_are_left_out_of_a_restore(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A checkpoint written before values were bounded may carry a poisoned series (a 1e308
    # made its statistics inf and NaN): it warms up again, the others are restored.
    path = good_file(tmp_path)
    state = load_state(path)
    poisoned = state["keys"].tolist().index("m1/rpm")
    state["err_var"][poisoned] = np.inf
    state["recent_value_total"][poisoned] = np.nan
    save_state(path, state)
    core = new_core()
    with caplog.at_level(logging.WARNING, logger="iotad.checkpoint"):
        assert checkpointer(path).restore(core) == len(SERIES) - 1
    assert "1 series with non-finite state left out" in caplog.text
    assert sorted(core.store.keys()) == sorted(k for k in SERIES if k != "m1/rpm")
    # Sentinels are not damage: a series without a range yet (low +inf, high -inf) restores.
    fresh = new_core()
    fresh.process(stream(10))
    state = fresh.snapshot()
    state["low"][0], state["high"][0] = np.inf, -np.inf
    save_state(path, state)
    assert checkpointer(path).restore(new_core()) == len(SERIES)


def test_object_arrays_other_than_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        save_state(tmp_path / "x.npz", {"keys": np.array([{"a": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []


# -- files that must be ignored -------------------------------------------------------------


def good_file(tmp_path: Path, core: DetectionCore | None = None) -> Path:
    core = core or new_core()
    core.process(stream(10))
    path = tmp_path / "good.npz"
    save_state(path, core.snapshot())
    return path


def _rewrite(path: Path, **changes: np.ndarray) -> None:
    state = load_state(path)
    state.update(changes)
    save_state(path, state)


def _drop(path: Path, name: str) -> None:
    state = load_state(path)
    del state[name]
    save_state(path, state)


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not a checkpoint")


def empty(path: Path) -> None:
    path.write_bytes(b"")


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def other_window(path: Path) -> None:
    core = new_core(window_len=6)
    core.process(stream(10))
    save_state(path, core.snapshot())


def other_format(path: Path) -> None:
    _rewrite(path, format=np.array(99))


def bad_key(path: Path) -> None:
    keys = load_state(path)["keys"].copy().astype("<U64")
    keys[0] = "../../etc/passwd"
    _rewrite(path, keys=keys)


def wildcard_key(path: Path) -> None:
    keys = load_state(path)["keys"].copy().astype("<U64")
    keys[0] = "m1/#"
    _rewrite(path, keys=keys)


def repeated_key(path: Path) -> None:
    keys = load_state(path)["keys"].copy()
    keys[1] = keys[0]
    _rewrite(path, keys=keys)


def short_rows(path: Path) -> None:
    _rewrite(path, err_mean=np.zeros(1))


def missing_array(path: Path) -> None:
    _drop(path, "err_var")


def missing_window(path: Path) -> None:
    _drop(path, "values")


def text_array(path: Path) -> None:
    _rewrite(path, offset=np.array(["a", "b", "c"]))


def wrong_width(path: Path) -> None:
    # Passes the row checks, fails inside the core after series were allocated.
    _rewrite(path, offset=np.zeros((3, 2)))


def pickled_keys(path: Path) -> None:
    state = load_state(path)
    state["keys"] = state["keys"].astype(object)
    with path.open("wb") as f:
        np.savez(f, allow_pickle=True, **state)


CORRUPTIONS = [
    garbage,
    empty,
    truncated,
    other_window,
    other_format,
    bad_key,
    wildcard_key,
    repeated_key,
    short_rows,
    missing_array,
    missing_window,
    text_array,
    wrong_width,
    pickled_keys,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_unusable_checkpoint_is_one_line_and_a_cold_start(
    tmp_path: Path, corrupt, caplog: pytest.LogCaptureFixture
) -> None:
    path = good_file(tmp_path)
    corrupt(path)
    bad_bytes = path.read_bytes()
    core = new_core()
    registry = CollectorRegistry()
    with caplog.at_level(logging.INFO, logger="iotad.checkpoint"):
        assert checkpointer(path, registry).restore(core) == 0
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "ignored, starting cold" in record.getMessage()
    assert "\n" not in record.getMessage()
    # Kept aside, so the next save does not destroy it (it used to be overwritten at exit).
    aside = path.with_name("good.npz.bad")
    assert f"kept as {aside}" in record.getMessage()
    assert aside.read_bytes() == bad_bytes and not path.exists()
    assert checkpointer(path).save(core)
    assert aside.read_bytes() == bad_bytes
    assert registry.get_sample_value("iotad_checkpoint_failures_total", {"op": "restore"}) == 1
    assert registry.get_sample_value("iotad_series_restored") == 0
    # Nothing half-restored: the core starts cold and behaves like a fresh one.
    assert core.active_series == 0
    fresh = new_core().process(stream(10))
    assert [s.score for s in core.process(stream(10)).scored] == [s.score for s in fresh.scored]


def test_a_pickle_in_a_checkpoint_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = good_file(tmp_path)
    state = load_state(path)
    state["keys"] = np.array([_Exploit(str(marker))] * 3, dtype=object)
    with path.open("wb") as f:
        np.savez(f, allow_pickle=True, **state)
    assert checkpointer(path).restore(new_core()) == 0
    assert not marker.exists()


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_missing_checkpoint_is_a_quiet_cold_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    with caplog.at_level(logging.INFO, logger="iotad.checkpoint"):
        assert checkpointer(tmp_path / "none.npz", registry).restore(new_core()) == 0
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert registry.get_sample_value("iotad_checkpoint_failures_total", {"op": "restore"}) == 0


def test_other_model_version_is_carried_over(tmp_path: Path) -> None:
    """Not refused any more (a new model does not start cold): tests/detector/
    test_model_carry.py checks what is carried."""
    path = good_file(tmp_path)
    core = new_core()
    other = DetectionCore(
        dataclasses.replace(core.artifact, version="v2"), LastValueForecaster(), CFG
    )
    assert checkpointer(path).restore(other) == len(SERIES)
    assert other.last_carry is not None and other.last_carry.to_version == "v2"


# -- when checkpoints are taken ---------------------------------------------------------------


def test_checkpointing_core_saves_between_batches_when_due(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "state.npz"
    cp = Checkpointer(path, interval_s=10.0, registry=CollectorRegistry(), clock=lambda: now[0])
    busy = [False]
    core = CheckpointingCore(new_core(), cp, busy=lambda: busy[0])
    batches = [stream(30)[i : i + 9] for i in range(0, 90, 9)]
    core.process(batches[0])
    assert not path.exists()  # not due yet
    now[0] = 11.0
    busy[0] = True
    core.process(batches[1])
    assert not path.exists()  # acks are waiting: postponed
    busy[0] = False
    core.process(batches[2])
    # Saved before batch 2 was processed: the state of batches 0 and 1 only.
    state = load_state(path)
    assert state["last_ts"].max() == batches[1][-1].ts
    mtime = path.stat().st_mtime_ns
    core.process(batches[3])
    assert path.stat().st_mtime_ns == mtime  # next one only after another interval
    assert core.active_series == len(SERIES)
    assert core.evict_idle(now=1e12).series == len(SERIES)


def test_checkpoint_path_directory_must_exist(tmp_path: Path) -> None:
    from detector.config.settings import SettingsError, load_settings

    with pytest.raises(SettingsError) as err:
        load_settings(
            {"model": {"path": str(tmp_path)}, "checkpoint": {"path": str(tmp_path / "no/x")}},
            env_file=None,
        )
    assert "IOTAD_CHECKPOINT__PATH" in err.value.lines[0]
    ok = load_settings(
        {"model": {"path": str(tmp_path)}, "checkpoint": {"path": str(tmp_path / "x.npz")}},
        env_file=None,
    )
    assert ok.checkpoint.interval_s == 60.0


def test_a_redelivered_older_reading_counts_as_duplicate() -> None:
    # After a restart (or a reconnect) the broker redelivers every unacknowledged message of
    # a batch, not only the last one; all are repeats of readings already taken.
    core = new_core()
    readings = stream(8)
    core.process(readings)
    again = core.process(readings[-6:])
    assert [d.reason for d in again.dropped] == ["duplicate"] * 6
