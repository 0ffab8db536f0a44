"""Reading and checking the rules file (TOML, stdlib `tomllib`). See docs/rules.md.

::

    [[rule]]
    name = "line 2 weekly stop"        # optional, shown in messages
    device = "line2-*"                 # fnmatch glob, default "*"
    metric = "*"                       # fnmatch glob, default "*"
    threshold = 0.7                    # anomaly score threshold in (0, 1]
    mute = false
    severity = "critical"
    labels = { team = "line2" }

    [[rule.maintenance]]               # recurring: days (default every day), times, zone
    days = ["sun"]
    start = "06:00"
    end = "10:00"
    timezone = "Europe/Berlin"

    [[rule.maintenance]]               # one-off: two datetimes with a UTC offset
    start = 2026-12-01T06:00:00+01:00
    end = 2026-12-01T10:00:00+01:00

Every problem is one line, ``<file>:<line>: rule <n> "<name>": <field>: <problem>``; all of
them are reported at once (`RulesError.lines`), never only the first.
"""

from __future__ import annotations

import re
import tomllib
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from detector.engine.rule_windows import ALL_DAYS, DAY_NAMES, OneOffWindow, RecurringWindow
from detector.engine.rules import Rule, RuleSet

MAX_FILE_BYTES = 1_048_576
MAX_RULES = 10_000
MAX_WINDOWS = 1_000
"""Maintenance windows of one rule at most."""
MAX_LABELS = 32
MAX_TEXT = 256
"""Longest pattern, name, severity or label value."""
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""Prometheus / Alertmanager label names (names starting ``__`` are reserved there)."""
RESERVED_LABELS = frozenset({"alertname", "device", "metric", "severity"})
"""Labels the Alertmanager sink sets itself (`detector.worker.alertmanager.alert_payload`);
``severity`` has a field of its own."""
_RULE_FIELDS = frozenset(
    {"name", "device", "metric", "threshold", "mute", "severity", "labels", "maintenance"}
)
_ONE_OFF_FIELDS = frozenset({"start", "end"})
_RECURRING_FIELDS = frozenset({"days", "start", "end", "timezone"})
_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")
_WINDOW_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\.\s*maintenance\s*\]\]")
_AT_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_DAY_ALIASES = {
    **{name: i for i, name in enumerate(DAY_NAMES)},
    **{
        full: i
        for i, full in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}


class RulesError(Exception):
    """An unusable rules file; `lines` holds one line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_rules(path: str | Path) -> RuleSet:
    """Read and check the rules file at `path`; raises `RulesError` (one line per problem)."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RulesError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    return parse_rules(data, name)


def parse_rules(data: bytes, source: str = "<rules>") -> RuleSet:
    """The rules in `data` (the file's bytes); raises `RulesError`."""
    if len(data) > MAX_FILE_BYTES:
        raise RulesError([f"{source}: larger than {MAX_FILE_BYTES} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError([f"{source}: not UTF-8 (byte {exc.start})"]) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _AT_LINE.search(str(exc))
        where = f"{source}:{m.group(1)}" if m else source
        msg = _AT_LINE.sub("", str(exc)).strip()
        raise RulesError([f"{where}: not valid TOML: {msg}"]) from None
    return _Checker(text, source).check(doc)


class _Checker:
    """Turns the parsed document into rules, collecting every problem on the way."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = text.splitlines()
        self.headers = [i + 1 for i, ln in enumerate(self.lines) if _HEADER.match(ln)]
        self.errors: list[str] = []

    def check(self, doc: dict[str, Any]) -> RuleSet:
        for key in doc:
            if key != "rule":
                self.errors.append(
                    f"{self.source}:{self._top_line(key)}: {key}: unknown table or key "
                    "(rules go in [[rule]] tables)"
                )
        raw = doc.get("rule", [])
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            self.errors.append(f"{self.source}: rule: must be [[rule]] tables")
            raw = []
        if len(raw) > MAX_RULES:
            self.errors.append(f"{self.source}: {len(raw)} rules, more than {MAX_RULES}")
            raw = raw[:MAX_RULES]
        rules = [self._rule(i, r) for i, r in enumerate(raw)]
        if self.errors:
            raise RulesError(self.errors)
        return RuleSet([r for r in rules if r is not None], self.source)

    # -- where ------------------------------------------------------------------------------

    def _top_line(self, key: str) -> int | str:
        pat = re.compile(rf"^\s*(\[\[?\s*{re.escape(key)}\b|{re.escape(key)}\s*=)")
        for i, ln in enumerate(self.lines):
            if pat.match(ln):
                return i + 1
        return "?"

    def _block(self, index: int) -> tuple[int, int]:
        """First and last line (1-based) of rule `index`'s block; (0, 0) when unknown
        (a rule written as an inline array, ``rule = [{...}]``)."""
        if index >= len(self.headers):
            return 0, 0
        start = self.headers[index]
        end = self.headers[index + 1] - 1 if index + 1 < len(self.headers) else len(self.lines)
        return start, end

    def _line(self, index: int, key: str, window: int | None = None) -> int:
        """Best line for `key` of rule `index` (of its `window`-th maintenance window)."""
        start, end = self._block(index)
        if not start:
            return 0
        if window is not None:
            windows = [i for i in range(start, end + 1) if _WINDOW_HEADER.match(self.lines[i - 1])]
            if window < len(windows):
                start = windows[window]
                end = windows[window + 1] - 1 if window + 1 < len(windows) else end
            else:
                key = "maintenance"
        pat = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i in range(start, end + 1):
            if pat.match(self.lines[i - 1]):
                return i
        return start

    def _error(
        self, index: int, name: str, key: str, problem: str, window: int | None = None
    ) -> None:
        line = self._line(index, key.split(".")[0], window)
        where = f"{self.source}:{line}" if line else self.source
        title = f"rule {index + 1}" + (f' "{name}"' if name else "")
        field = key if window is None else f"maintenance[{window + 1}].{key}"
        self.errors.append(f"{where}: {title}: {field}: {problem}")

    # -- fields -----------------------------------------------------------------------------

    def _rule(self, index: int, raw: dict[str, Any]) -> Rule | None:
        before = len(self.errors)
        name = raw.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_TEXT:
            self._error(index, "", "name", f"must be text of at most {MAX_TEXT} characters")
            name = ""

        def err(key: str, problem: str, window: int | None = None) -> None:
            self._error(index, name, key, problem, window)

        for key in raw:
            if key not in _RULE_FIELDS:
                err(key, f"unknown field (misspelt?); known: {', '.join(sorted(_RULE_FIELDS))}")
        device = self._pattern(raw.get("device", "*"), "device", err)
        metric = self._pattern(raw.get("metric", "*"), "metric", err)
        threshold = raw.get("threshold")
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0 < threshold <= 1
        ):
            err("threshold", f"must be a number in (0, 1] (an anomaly score), got {threshold!r}")
        mute = raw.get("mute")
        if mute is not None and not isinstance(mute, bool):
            err("mute", f"must be true or false, got {mute!r}")
        severity = raw.get("severity")
        if severity is not None and not _short_text(severity):
            err("severity", f"must be 1-{MAX_TEXT} printable characters, got {severity!r}")
        labels = self._labels(raw.get("labels", {}), err)
        windows = self._windows(raw.get("maintenance", []), err)
        if len(self.errors) > before:
            return None
        return Rule(
            device=device,
            metric=metric,
            name=name,
            threshold=None if threshold is None else float(threshold),
            mute=mute,
            severity=severity,
            labels=labels,
            maintenance=tuple(windows),
            line=self._block(index)[0],
        )

    @staticmethod
    def _pattern(value: Any, key: str, err: Any) -> str:
        if not _short_text(value):
            err(key, f"must be a glob pattern of 1-{MAX_TEXT} printable characters, got {value!r}")
            return "*"
        return str(value)

    @staticmethod
    def _labels(value: Any, err: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            err("labels", 'must be a table of name = "value"')
            return {}
        if len(value) > MAX_LABELS:
            err("labels", f"{len(value)} labels, more than {MAX_LABELS}")
        out: dict[str, str] = {}
        for key, text in value.items():
            if not LABEL_NAME.match(key) or key.startswith("__"):
                err(f"labels.{key}", "not a label name ([A-Za-z_][A-Za-z0-9_]*, not __...)")
            elif key in RESERVED_LABELS:
                err(
                    f"labels.{key}",
                    "set by the worker itself"
                    + ("; use the severity field" if key == "severity" else ""),
                )
            elif not _short_text(text):
                err(f"labels.{key}", f"value must be 1-{MAX_TEXT} printable characters")
            else:
                out[key] = text
        return out

    def _windows(self, value: Any, err: Any) -> list[OneOffWindow | RecurringWindow]:
        if not isinstance(value, list) or not all(isinstance(w, dict) for w in value):
            err("maintenance", "must be [[rule.maintenance]] tables")
            return []
        if len(value) > MAX_WINDOWS:
            err("maintenance", f"{len(value)} windows, more than {MAX_WINDOWS}")
            return []
        out: list[OneOffWindow | RecurringWindow] = []
        for k, raw in enumerate(value):
            window = self._window(raw, lambda key, p, k=k: err(key, p, k))
            if window is not None:
                out.append(window)
        return out

    def _window(self, raw: dict[str, Any], err: Any) -> OneOffWindow | RecurringWindow | None:
        recurring = "days" in raw or "timezone" in raw or _is_clock(raw.get("start"))
        allowed = _RECURRING_FIELDS if recurring else _ONE_OFF_FIELDS
        for key in raw:
            if key not in allowed:
                kind = "a recurring" if recurring else "a one-off"
                err(key, f"unknown field for {kind} window; known: {', '.join(sorted(allowed))}")
        for key in ("start", "end"):
            if key not in raw:
                err(key, "required")
        if "start" not in raw or "end" not in raw:
            return None
        if recurring:
            return self._recurring(raw, err)
        start = _instant(raw["start"], "start", err)
        end = _instant(raw["end"], "end", err)
        if start is None or end is None:
            return None
        if end <= start:
            err("end", "must be after start")
            return None
        return OneOffWindow(
            start.timestamp(), end.timestamp(), f"{start.isoformat()} .. {end.isoformat()}"
        )

    @staticmethod
    def _recurring(raw: dict[str, Any], err: Any) -> RecurringWindow | None:
        ok = True
        zone = raw.get("timezone", "UTC")
        try:
            if not isinstance(zone, str):
                raise ValueError
            ZoneInfo(zone)
        except Exception:  # ZoneInfoNotFoundError, ValueError for odd keys
            err("timezone", f"not a known time zone (e.g. Europe/Berlin, UTC), got {zone!r}")
            ok = False
        days = raw.get("days")
        day_set: frozenset[int] = ALL_DAYS
        if days is not None:
            names = [days] if isinstance(days, str) else days
            if not isinstance(names, list) or not names:
                err("days", 'must be a list of day names, e.g. ["sat", "sun"]')
                ok = False
            else:
                found = [_DAY_ALIASES.get(n.lower()) if isinstance(n, str) else None for n in names]
                if None in found:
                    err("days", f"day names are {', '.join(DAY_NAMES)} (or in full), got {days!r}")
                    ok = False
                else:
                    day_set = frozenset(d for d in found if d is not None)
        start = _clock(raw["start"], "start", err)
        end = _clock(raw["end"], "end", err)
        if start is None or end is None or not ok:
            return None
        if start == end:
            err("end", "equals start (a window of no length; for a whole day use 00:00-23:59)")
            return None
        return RecurringWindow(day_set, start, end, zone)


def _short_text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT and value.isprintable()


def _is_clock(value: Any) -> bool:
    return isinstance(value, time) or (isinstance(value, str) and bool(_CLOCK.match(value)))


def _clock(value: Any, key: str, err: Any) -> time | None:
    """A wall-clock time: TOML ``06:00:00`` or the text ``"06:00"``."""
    if isinstance(value, time):
        if value.tzinfo is not None:
            err(key, "a wall-clock time takes no offset; the zone is the timezone field")
            return None
        return value
    m = _CLOCK.match(value) if isinstance(value, str) else None
    if m is None:
        err(key, f'must be a time of day like "06:00", got {value!r}')
        return None
    hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if hour > 23 or minute > 59 or second > 59:
        err(key, f"not a time of day: {value!r}")
        return None
    return time(hour, minute, second)


def _instant(value: Any, key: str, err: Any) -> datetime | None:
    """A datetime with a UTC offset: TOML ``2026-12-01T06:00:00+01:00`` or that text."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            err(
                key,
                f"must be an ISO datetime with offset (2026-12-01T06:00:00+01:00), got {value!r}",
            )
            return None
    if not isinstance(value, datetime):
        err(key, f"must be a datetime with offset (a one-off window), got {value!r}")
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        err(key, f"needs a UTC offset (e.g. +01:00 or Z): {value.isoformat()} is ambiguous")
        return None
    return value
