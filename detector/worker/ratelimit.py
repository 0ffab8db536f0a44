"""Bounded logging: at most N lines per interval per key, then one "suppressed K" summary.

A flood of bad messages must not become a flood of log lines (one per message at 50k/s would
cost more than the detection itself and drown everything else in the log).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Window:
    start: float
    emitted: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """Logs through `logger`, at most `max_lines` per `interval_s` for each key.

    Lines past the limit are counted; the count is logged once as
    ``"<key>: suppressed K similar messages in the last N s"`` when the key's window ends
    (on its next message, or on `flush`, which the worker calls periodically). Thread-safe.

    Example::

        log = RateLimitedLog(logging.getLogger("iotad.rejects"), max_lines=5, interval_s=10)
        log.warning("bad_ts", "rejected %s: %s", topic, detail)
    """

    def __init__(
        self,
        logger: logging.Logger,
        max_lines: int = 5,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_lines < 0 or interval_s <= 0:
            raise ValueError("max_lines must be >= 0 and interval_s > 0")
        self.logger = logger
        self.max_lines = max_lines
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log `msg % args` under `key` unless its budget is spent; True if it was logged."""
        now = self._clock()
        summary: tuple[int, float] | None = None
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.start >= self.interval_s:
                if window is not None and window.suppressed:
                    summary = (window.suppressed, now - window.start)
                window = self._windows[key] = _Window(start=now)
            if window.emitted < self.max_lines:
                window.emitted += 1
                emit = True
            else:
                window.suppressed += 1
                emit = False
        if summary is not None:
            self._summary(level, key, *summary)
        if emit:
            self.logger.log(level, msg, *args)
        return emit

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def flush(self, level: int = logging.WARNING) -> int:
        """Log the summaries of windows that have ended; returns how many lines it wrote."""
        now = self._clock()
        due: list[tuple[str, int, float]] = []
        with self._lock:
            for key, window in list(self._windows.items()):
                if now - window.start >= self.interval_s:
                    if window.suppressed:
                        due.append((key, window.suppressed, now - window.start))
                    del self._windows[key]  # idle keys do not accumulate
        for key, count, span in due:
            self._summary(level, key, count, span)
        return len(due)

    def _summary(self, level: int, key: str, count: int, span_s: float) -> None:
        self.logger.log(
            level, "%s: suppressed %d similar messages in the last %.0f s", key, count, span_s
        )
