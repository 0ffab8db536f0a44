"""Checkpoints of the detection state, so that a restarted worker does not go blind.

What is saved is `DetectionCore.snapshot()`: every active series' window, normalisation,
residual and score statistics and episode state, as plain numpy arrays. The file is an
``.npz`` written atomically (a temp file in the same directory, created exclusively with a
random name and mode 0600, fsync, ``os.replace``), so a crash mid-write leaves the previous
checkpoint intact and nobody can plant or read the temp file. Series keys are stored as a
fixed unicode array, never as objects, and files are read with ``allow_pickle=False``:
loading a checkpoint can never execute code.

A checkpoint of another model version is carried over (`detector.engine.model_carry`: windows and
value statistics kept, error statistics from the new calibration) and says so in one line.
A checkpoint that is missing, corrupt, truncated or made for another configuration is
reported in one log line and ignored: the worker then starts cold, which is never fatal. An
ignored file is first moved aside to ``<name>.bad`` (replacing an older one), so the next
save does not destroy what someone may want to inspect or roll back to. Series whose saved
state is not finite (written before values were bounded) are left out of a restore and warm
up again; the others are restored.

Checkpoints are taken on the detection thread, which owns the core: the `Worker` saves
between batches once the interval has passed and no acks wait for alert confirmations (so a
checkpoint never holds a reading the broker would redeliver), and the worker's owner saves
once more after the detection thread has stopped. `CheckpointingCore` is the earlier form of
the same rule as a wrapper of the core; the worker no longer uses it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detector.engine.readings import valid_name
from detector.worker.durable_files import fsync_dir

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from detector.engine.core import DetectionCore
    from detector.engine.events import BatchResult, Eviction
    from detector.engine.readings import Reading

log = logging.getLogger("iotad.checkpoint")

# Arrays with one row per series (besides the core's per-slot arrays, checked by the core).
_ROW_ARRAYS = ("values", "ts", "count", "last_ts", "last_value", "last_seen")
_SCALARS = ("format", "model_version", "window_len", "short_window")


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message is one line saying why."""


def save_state(path: str | Path, state: dict[str, np.ndarray]) -> int:
    """Write `state` to `path` atomically; returns the file size in bytes.

    Object arrays (the series keys of a snapshot) are converted to fixed-width unicode; any
    other object array is refused, so nothing is ever pickled.
    """
    path = Path(path)
    arrays = plain_arrays(state)
    # mkstemp: O_EXCL with a random name, mode 0600. A predictable name (it was the pid)
    # could be pre-created, or linked elsewhere, by anyone who can write to the directory.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return path.stat().st_size


def plain_arrays(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`state` with object arrays (series keys) as fixed-width unicode; any other object
    array is refused, so nothing is ever pickled."""
    arrays: dict[str, np.ndarray] = {}
    for name, array in state.items():
        a = np.asarray(array)
        if a.dtype == object:
            if not all(isinstance(x, str) for x in a.ravel().tolist()):
                raise CheckpointError(f"array {name!r} holds objects that are not strings")
            a = np.array(a.tolist(), dtype=np.str_) if a.size else np.zeros(a.shape, "<U1")
        arrays[name] = a
    return arrays


def state_bytes(state: dict[str, np.ndarray]) -> bytes:
    """`state` as the bytes of an ``.npz`` file (what `save_state` writes)."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **plain_arrays(state))
    return buffer.getvalue()


def state_from_bytes(data: bytes) -> dict[str, np.ndarray]:
    """The inverse of `state_bytes`, without unpickling anything; raises `CheckpointError`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except ValueError as exc:
        raise CheckpointError(f"not a plain-array checkpoint ({_first_line(exc)})") from None
    except Exception as exc:
        raise CheckpointError(f"unreadable ({type(exc).__name__}: {_first_line(exc)})") from None


def load_state(path: str | Path) -> dict[str, np.ndarray]:
    """Read a checkpoint file without unpickling anything; raises `CheckpointError`."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise
    except ValueError as exc:  # e.g. an object array: would need pickle
        raise CheckpointError(f"not a plain-array checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # zipfile.BadZipFile, EOFError, OSError, ...
        raise CheckpointError(f"unreadable ({type(exc).__name__}: {_first_line(exc)})") from None


def check_state(state: dict[str, np.ndarray], window_len: int, model_version: str = "") -> int:
    """Validate the shape of a loaded snapshot before it touches a core; returns its series.

    Series keys must be ``device/metric`` with valid names (they come from a file, and keys
    end up in topics and labels); every per-series array must have one row per key. Windows
    must be `window_len` long unless the snapshot is of another model than `model_version`
    (the core then carries it over, see `detector.engine.model_carry`).
    """
    missing = [n for n in ("keys", *_ROW_ARRAYS, *_SCALARS) if n not in state]
    if missing:
        raise CheckpointError(f"lacks {', '.join(missing)}")
    keys = state["keys"]
    if keys.ndim != 1 or keys.dtype.kind != "U":
        raise CheckpointError("series keys are not a 1-D unicode array")
    n = int(keys.shape[0])
    names = keys.tolist()
    for key in names:
        device, sep, metric = key.partition("/")
        if not sep or not valid_name(device) or not valid_name(metric):
            raise CheckpointError(f"series key {key[:80]!r} is not device/metric")
    if len(set(names)) != n:
        raise CheckpointError("series keys repeat")
    for name, array in state.items():
        if name in ("keys", "model_version"):
            continue
        if array.dtype.kind not in "biuf":
            raise CheckpointError(f"array {name!r} is not numeric ({array.dtype})")
        if name not in _SCALARS and (array.ndim == 0 or array.shape[0] != n):
            raise CheckpointError(f"array {name!r} has {array.shape} rows, not {n}")
    # The windows must be as long as the snapshot says; a snapshot of another model may
    # have another length (the core re-lays them when it carries the state over).
    saved_len = int(state["window_len"])
    if saved_len < 1 or state["values"].shape != (n, saved_len):
        raise CheckpointError(
            f"windows are {state['values'].shape[1:]} long, the snapshot says ({saved_len},)"
        )
    if saved_len != window_len and str(state["model_version"]) == model_version:
        raise CheckpointError(
            f"windows are {state['values'].shape[1:]} long, the model's are ({window_len},)"
        )
    return n


# Per-series arrays whose non-finite values are sentinels, not damage: an empty range (low
# +inf, high -inf), a series that has no reading yet (its ts -inf, last value NaN), a
# typical interval not learnt yet (NaN).
_INF_ALLOWED = frozenset({"low", "high", "last_ts", "order_ts"})
_NAN_ALLOWED = frozenset({"last_value", "gap"})  # gap: no interval learnt yet


def finite_rows(state: dict[str, np.ndarray]) -> np.ndarray:
    """Which series of a checked snapshot have finite state (sentinels aside)."""
    n = int(state["keys"].shape[0])
    ok = np.ones(n, dtype=bool)
    for name, array in state.items():
        if name in ("keys", *_SCALARS) or array.dtype.kind != "f" or array.ndim == 0:
            continue
        rows = array.reshape(n, -1)
        nan = np.isnan(rows)
        if name not in _NAN_ALLOWED:
            ok &= ~nan.any(axis=1)
        if name not in _INF_ALLOWED:
            ok &= ~np.isinf(rows).any(axis=1)
    return ok


def select_rows(state: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The snapshot with only the series `keep` marks."""
    return {
        name: array if name in _SCALARS or name == "model_version" else array[keep]
        for name, array in state.items()
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class Checkpointer:
    """Saves and restores a `DetectionCore`'s state at `path`, every `interval_s`.

    Metrics (on `registry`): ``iotad_checkpoint_seconds`` (time to snapshot and write),
    ``iotad_checkpoint_series`` (series in the last checkpoint written),
    ``iotad_checkpoint_failures_total{op="save"|"restore"}`` and ``iotad_series_restored``.

    Not thread-safe: call it from the thread that owns the core.
    """

    def __init__(
        self,
        path: str | Path,
        interval_s: float = 60.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self.clock = clock
        self.next_due = clock() + interval_s
        from detector.worker.metrics import CheckpointMetrics

        m = CheckpointMetrics(registry)
        self.seconds, self.series, self.failures, self.restored = (
            m.seconds,
            m.series,
            m.failures,
            m.restored,
        )

    def restore(self, core: DetectionCore) -> int:
        """Load the checkpoint into `core` (fresh, not yet used); returns series restored.

        Any problem is one warning line and a cold start, never an exception.
        """
        try:
            state = load_state(self.path)
            check_state(state, core.window_len, core.artifact.version)
            finite = finite_rows(state)
            if not finite.all():
                log.warning(
                    "checkpoint %s: %d series with non-finite state left out (they warm up again)",
                    self.path,
                    int(np.count_nonzero(~finite)),
                )
                state = select_rows(state, finite)
            n = core.restore(state)
        except FileNotFoundError:
            log.info("no checkpoint at %s: starting cold", self.path)
            return 0
        except Exception as exc:  # CheckpointError, ValueError from the core, anything else
            _forget_all(core)
            self.failures.labels("restore").inc()
            aside = self._move_aside()
            log.warning(
                "checkpoint %s ignored, starting cold%s: %s",
                self.path,
                f" (kept as {aside})" if aside else "",
                _first_line(exc),
            )
            return 0
        self.restored.set(n)
        log.info("restored %d series from checkpoint %s", n, self.path)
        log_carry(core)
        return n

    def _move_aside(self) -> Path | None:
        """Rename an unusable checkpoint to ``<name>.bad`` so the next save cannot destroy
        it; None when that failed too (then it is overwritten as before)."""
        aside = self.path.with_name(self.path.name + ".bad")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            log.warning("could not move %s aside: %s", self.path, exc.strerror or exc)
            return None
        return aside

    def save(self, core: DetectionCore) -> bool:
        """Snapshot `core` and write it; False (and one warning line) when that failed."""
        started = time.perf_counter()
        self.next_due = self.clock() + self.interval_s
        try:
            state = core.snapshot()
            save_state(self.path, state)
        except Exception as exc:  # a full disk must not stop detection
            self.failures.labels("save").inc()
            log.warning("checkpoint to %s failed: %s", self.path, _first_line(exc))
            return False
        self.seconds.observe(time.perf_counter() - started)
        self.series.set(len(state["keys"]))
        return True

    def due(self) -> bool:
        return self.clock() >= self.next_due


def log_carry(core: DetectionCore) -> None:
    """One line when the restore carried another model's state over."""
    carry = getattr(core, "last_carry", None)
    if carry is not None:
        log.info("%s", carry.line())


def _forget_all(core: DetectionCore) -> None:
    """Undo a partial restore: release every series (all their state, every part's)."""
    keys = core.store.keys()  # a copy: releasing changes the store
    for key in keys:
        core.release(key)


class CheckpointingCore:
    """The core as the worker sees it, checkpointing between batches on the detection thread.

    At the start of a batch, once `interval_s` has passed, the state is saved before the new
    readings are processed: the previous batch's messages are acknowledged by then, so a
    checkpoint never holds a reading the broker would redeliver (which the restored core
    would drop as a duplicate). `busy()` true postpones the checkpoint to a later batch; the
    worker passes "acks are waiting for alert confirmations".
    """

    def __init__(
        self,
        core: DetectionCore,
        checkpointer: Checkpointer,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.core = core
        self.checkpointer = checkpointer
        self.busy = busy

    def process(self, readings: Sequence[Reading], now: float | None = None) -> BatchResult:
        if self.checkpointer.due() and not self.busy():
            self.checkpointer.save(self.core)
        return self.core.process(readings, now)

    @property
    def active_series(self) -> int:
        return self.core.active_series

    @property
    def warming_series(self) -> int:
        return self.core.warming_series

    def evict_idle(self, now: float) -> Eviction:
        return self.core.evict_idle(now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)
