from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np

from detector.engine.decision import EpisodeTracker, event_id


def run(tracker: EpisodeTracker, flags: list[bool]) -> list[tuple[int, str]]:
    out = []
    for t, flag in enumerate(flags):
        for _, state, _ in tracker.step(np.array([0]), np.array([flag]), np.array([float(t)])):
            out.append((t, state))
    return out


def test_a_50_reading_level_shift_is_one_firing_and_one_resolved() -> None:
    tracker = EpisodeTracker(capacity=1, resolve_after=5)
    flags = [False] * 10 + [True] * 50 + [False] * 10
    assert run(tracker, flags) == [(10, "firing"), (64, "resolved")]


def test_short_gaps_inside_an_episode_do_not_resolve_it() -> None:
    tracker = EpisodeTracker(capacity=1, resolve_after=3)
    flags = [True, False, False, True, False, True] + [False] * 3
    assert run(tracker, flags) == [(0, "firing"), (8, "resolved")]


def test_event_id_is_stable_and_distinguishes_episodes() -> None:
    # Stable means: the same in another process and another version, since consumers drop
    # duplicates by it after a restart. Worked out independently: the first 16 hex digits of
    # SHA-1 of "key|onset with 6 decimals".
    assert event_id("m1/temp", 100.0) == hashlib.sha1(b"m1/temp|100.000000").hexdigest()[:16]
    assert event_id("m1/temp", 100.0) == "dd62f4da3e32ab5a"
    assert _in_a_child("m1/temp", 100.0) == "dd62f4da3e32ab5a"
    assert event_id("m1/temp", 100.0) != event_id("m1/temp", 101.0)
    assert event_id("m1/temp", 100.0) != event_id("m2/temp", 100.0)


def _in_a_child(key: str, onset: float) -> str:
    """`event_id` computed by another interpreter (another hash seed)."""
    code = f"from detector.engine.decision import event_id; print(event_id({key!r}, {onset!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    return out.stdout.strip()


def test_episode_counters_are_int32_and_stay_so_when_grown() -> None:
    tracker = EpisodeTracker(2, resolve_after=2)
    tracker.ensure_capacity(5)
    assert tracker.normal_run.dtype == np.int32 and tracker.since_onset.dtype == np.int32
    assert tracker.normal_run.shape == (5,)
