"""Reloading the rules file while the worker runs: on change, and when asked (SIGHUP).

The detection thread calls `RulesReloader.poll` between batches (the core is its own, so
new rules never race a batch). At most every `check_interval_s` it compares the file's
modification time, size and inode with what it loaded; when they moved it reads the file
and compares the content (a hash), so a touch alone reloads nothing. `request` (any thread,
a signal handler too) makes the next `poll` reload whatever the file says.

A file that cannot be read or does not pass the checks changes nothing: the previous rules
stay in force, each problem is logged on one line, and the failure is counted
(``iotad_rules_reload_failures_total``), once per bad content (not every few seconds while
it stays bad; a SIGHUP asks again).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detector.engine.rules import RuleSet
from detector.worker.rules_file import MAX_FILE_BYTES, RulesError, load_rules, parse_rules

log = logging.getLogger("iotad.rules")

_Signature = tuple[int, int, int]


class RulesReloader:
    """Keeps the rules of the file at `path` applied through `apply`.

    Args:
        path: the rules file.
        apply: takes new rules (the core's `set_rules`), called on the thread that polls.
        metrics: `detector.worker.metrics.WorkerMetrics` (or None): reloads, failures, rule count.
        check_interval_s: how often `poll` looks at the file.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        path: str | Path,
        apply: Callable[[RuleSet], None] | None = None,
        *,
        metrics: Any = None,
        check_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.apply = apply
        self.metrics = metrics
        self.check_interval_s = check_interval_s
        self.clock = clock
        self.rules = RuleSet()
        self._requested = threading.Event()
        self._next_check = 0.0
        self._signature: _Signature | None = None
        self._digest = b""
        self._failed_digest: bytes | None = None

    def load(self) -> RuleSet:
        """The first load, before the worker starts; raises `RulesError` (no previous rules
        to fall back on: the worker refuses to start)."""
        signature = self._stat()
        data = self._read()
        if data is None:
            load_rules(self.path)  # raises, saying why it cannot be read
        rules = parse_rules(data or b"", str(self.path))
        self._accept(rules, data, signature)
        self._next_check = self.clock() + self.check_interval_s
        return rules

    def request(self) -> None:
        """Reload at the next `poll`, changed or not (SIGHUP). Safe from a signal handler."""
        self._requested.set()

    def poll(self) -> bool:
        """Reload when asked or when the file changed; True when new rules were applied."""
        forced = self._requested.is_set()
        now = self.clock()
        if not forced and now < self._next_check:
            return False
        self._next_check = now + self.check_interval_s
        self._requested.clear()
        signature = self._stat()
        if not forced and signature == self._signature:
            return False
        if signature is None:
            return self._fail(None, [f"{self.path}: cannot read: no such file"], forced)
        data = self._read()
        if data is None:
            return self._fail(None, [f"{self.path}: cannot read"], forced)
        digest = hashlib.sha256(data).digest()
        if not forced and digest == self._digest:
            self._signature = signature  # touched, not changed
            return False
        if not forced and digest == self._failed_digest:
            return False  # the same bad content: reported already
        try:
            rules = parse_rules(data, str(self.path))
        except RulesError as exc:
            return self._fail(digest, exc.lines, forced)
        self._accept(rules, data, signature)
        if self.apply is not None:
            self.apply(rules)
        if self.metrics is not None:
            self.metrics.rules_reloads.inc()
        log.info("rules reloaded from %s: %d rules", self.path, len(rules))
        return True

    def _accept(self, rules: RuleSet, data: bytes | None, signature: _Signature | None) -> None:
        self.rules = rules
        self._signature = signature
        self._digest = hashlib.sha256(data or b"").digest()
        self._failed_digest = None
        if self.metrics is not None:
            self.metrics.rules_loaded.set(len(rules))
            self.metrics.rules_stale.set(0)

    def _fail(self, digest: bytes | None, lines: list[str], forced: bool) -> bool:
        if digest is None and self._failed_digest == b"" and not forced:
            return False  # still unreadable: reported already
        self._failed_digest = b"" if digest is None else digest
        self._signature = None  # look again at the next check
        for line in lines:
            log.error("rules reload: %s", line)
        log.error("rules reload failed: keeping the %d rules in force", len(self.rules))
        if self.metrics is not None:
            self.metrics.rules_reload_failures.inc()
            self.metrics.rules_stale.set(1)
        return False

    def _stat(self) -> _Signature | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read(MAX_FILE_BYTES + 1)  # parse_rules refuses a larger one
        except OSError:
            return None
