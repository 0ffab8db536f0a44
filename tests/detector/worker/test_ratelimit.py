"""Bounded logging: N lines per interval per key, then a "suppressed K" summary."""

from __future__ import annotations

import logging

import pytest

from detector.worker.ratelimit import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_at_most_n_lines_per_interval_then_a_summary(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    log = RateLimitedLog(logging.getLogger("t.rl"), max_lines=3, interval_s=10, clock=clock)
    with caplog.at_level(logging.WARNING, "t.rl"):
        results = [log.warning("bad_ts", "bad %d", i) for i in range(1000)]
        assert results.count(True) == 3
        assert messages(caplog) == ["bad 0", "bad 1", "bad 2"]
        clock.now = 10.0
        log.warning("bad_ts", "bad again")
    assert messages(caplog)[3:] == [
        "bad_ts: suppressed 997 similar messages in the last 10 s",
        "bad again",
    ]


def test_keys_have_separate_budgets(caplog: pytest.LogCaptureFixture, clock: Clock) -> None:
    log = RateLimitedLog(logging.getLogger("t.rl2"), max_lines=1, interval_s=5, clock=clock)
    with caplog.at_level(logging.WARNING, "t.rl2"):
        for _ in range(5):
            log.warning("a", "a")
            log.warning("b", "b")
    assert messages(caplog) == ["a", "b"]


def test_flush_writes_due_summaries_and_forgets_idle_keys(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    log = RateLimitedLog(logging.getLogger("t.rl3"), max_lines=1, interval_s=5, clock=clock)
    with caplog.at_level(logging.WARNING, "t.rl3"):
        log.warning("x", "first")
        log.warning("x", "second")
        log.warning("y", "only")
        assert log.flush() == 0  # window not over yet
        clock.now = 6.0
        assert log.flush() == 1  # x suppressed one; y suppressed none: no line
        assert log.flush() == 0
    assert messages(caplog) == ["first", "only", "x: suppressed 1 similar messages in the last 6 s"]
    assert log._windows == {}


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimitedLog(logging.getLogger("t"), max_lines=1, interval_s=0)
