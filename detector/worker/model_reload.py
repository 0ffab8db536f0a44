"""Swapping the worker's model while it runs, between two batches, without a cold start.

A reload is asked for by SIGHUP (`run_cli` sets the flag) or found by watching the model
path: every `check_every_s` the worker compares a stamp of the artifact directory (name,
size, mtime and inode of each file in it, through a symlink if the path is one) with the
stamp of the artifact it runs. A changed stamp must be seen twice in a row before it is
loaded, so an artifact still being copied into place is not read half-written.

The detection thread does the swap (`Worker` calls `due()` and `reload()` between batches):
load the artifact, check it (schema, files, the Keras file's safe-mode rules, the LiteRT
models on one window), build a new core, carry the old core's state over (see
`detector.engine.model_carry`: in place on a copy of its arrays,
`detector.engine.model_takeover`, or through a snapshot when the window length changed) and
hand the new core back. The batch before was processed by the old model, the batch after by
the new one: no reading is lost or scored twice, and readiness never drops (messages wait in
the bounded queue meanwhile). Anything that fails keeps the old model running: one error
line, and ``iotad_model_reload_failures_total`` counts it; the same broken artifact is not
tried again until it changes or SIGHUP asks.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detector.engine.artifact import Artifact, ArtifactError, load_artifact
from detector.engine.model_takeover import can_take_over, take_over

if TYPE_CHECKING:
    from detector.engine.core import DetectionCore
    from detector.worker.metrics import WorkerMetrics

log = logging.getLogger("iotad.reload")

Stamp = tuple[tuple[str, int, int, int], ...]

_UNSAFE_CLASSES = frozenset({"Lambda", "__lambda__"})
"""Keras layers and objects that carry Python code; safe mode refuses to load them."""
MAX_KERAS_CONFIG_BYTES = 16 * 1024 * 1024


def artifact_stamp(path: Path) -> Stamp:
    """What changes when another artifact appears at `path`; empty when none is there."""
    try:
        directory = path.resolve()
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
        out = []
        for entry in entries:
            st = entry.stat()
            out.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ino))
        return (("", 0, 0, directory.stat().st_ino), *out)
    except OSError:
        return ()


def check_keras_safe(artifact: Artifact) -> None:
    """Refuse a Keras file that Keras' safe mode would refuse, without importing Keras.

    The file must be a ``.keras`` zip with a ``config.json`` whose objects all come from
    Keras' own modules and include no Lambda (code serialised into the model).
    """
    path = artifact.keras_path
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > MAX_KERAS_CONFIG_BYTES:
                raise ArtifactError(f"{path}: config.json is {info.file_size} bytes")
            config = json.loads(archive.read(info))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing (named in artifact.json)") from None
    except KeyError:
        raise ArtifactError(f"{path} holds no config.json: not a .keras file") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a readable .keras file: {exc}") from None
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            cls, module = node.get("class_name"), node.get("module")
            if cls in _UNSAFE_CLASSES:
                raise ArtifactError(f"{path}: a {cls} layer carries code; safe mode refuses it")
            if isinstance(module, str) and module.split(".")[0] != "keras":
                raise ArtifactError(
                    f"{path}: object {cls!r} comes from module {module!r}, not Keras; "
                    "safe mode refuses custom code"
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:300] if text else "") or type(exc).__name__


class ModelReloader:
    """Decides when to reload the model and builds the new core (on the detection thread).

    Args:
        path: the model path of the settings (a directory, or a symlink to one).
        build: a core for an artifact (loads its LiteRT models; raises `ArtifactError`).
        metrics: ``iotad_model_reloads_total``, ``..._failures_total``, ``iotad_model_info``.
        requested: the flag SIGHUP sets (a fresh one by default).
        check_every_s: how often the model path is looked at; 0: only on request.
        on_swap: called with the new core after a swap (alert payloads, status).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        path: Path,
        build: Callable[[Artifact], DetectionCore],
        metrics: WorkerMetrics,
        *,
        requested: threading.Event | None = None,
        check_every_s: float = 5.0,
        on_swap: Callable[[DetectionCore], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.build = build
        self.metrics = metrics
        self.requested = requested if requested is not None else threading.Event()
        self.check_every_s = check_every_s
        self.on_swap = on_swap
        self.clock = clock
        self._next_check = clock() + check_every_s
        self._known = artifact_stamp(self.path)  # the running artifact's, or a refused one's
        self._pending: Stamp | None = None

    def request(self) -> None:
        """Reload at the next batch boundary (what SIGHUP does)."""
        self.requested.set()

    def due(self) -> bool:
        """Whether to reload now: asked for, or a new artifact has settled at the path."""
        if self.requested.is_set():
            return True
        if self.check_every_s <= 0:
            return False
        now = self.clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.check_every_s
        stamp = artifact_stamp(self.path)
        if stamp == self._known or not stamp:
            self._pending = None
            return False
        if stamp != self._pending:  # changed since the last look: may still be copying
            self._pending = stamp
            return False
        return True

    def reload(self, core: DetectionCore) -> DetectionCore | None:
        """The core of the artifact now at the path, carrying `core`'s state; None when
        there is nothing new or it cannot be used (then `core` keeps running)."""
        self.requested.clear()
        self._pending = None
        stamp = artifact_stamp(self.path)
        self._known = stamp
        started = time.perf_counter()
        old = core.artifact.version
        try:
            artifact = load_artifact(self.path)
            if artifact.version == old:
                log.info("model at %s is still %s: nothing to reload", self.path, old)
                return None
            check_keras_safe(artifact)
            new = self.build(artifact)
            _check_forecasts(new, artifact)
            if can_take_over(new, core):  # the fast path: no series copied one by one
                take_over(new, core)
                series = new.active_series
            else:  # another window: re-laid through a snapshot
                series = new.restore(core.snapshot())
        except Exception as exc:  # whatever it is, the running model stays
            self.metrics.model_reload_failures.inc()
            log.error(
                "model reload from %s failed, model %s keeps running: %s",
                self.path,
                old,
                _first_line(exc),
            )
            return None
        self.metrics.model_reloads.inc()
        self.metrics.set_model(artifact.version, artifact.cell, artifact.window_len)
        carry = new.last_carry.line() if new.last_carry is not None else ""
        log.info(
            "model %s swapped in for %s in %.3f s (%d series kept); %s",
            artifact.version,
            old,
            time.perf_counter() - started,
            series,
            carry,
        )
        if self.on_swap is not None:
            try:
                self.on_swap(new)
            except Exception:  # what names the model may lag; detection must go on
                log.exception("after the model swap")
        return new


def _check_forecasts(core: DetectionCore, artifact: Artifact) -> None:
    """One forecast of an all-zero window at each exported batch size: a LiteRT model that
    loads but fails to run (a multi-signature export did, at invoke time) is caught here,
    not on the first batch of readings."""
    for batch in artifact.batch_sizes:
        windows = np.zeros((batch, artifact.window_len, artifact.n_features), dtype=np.float32)
        out = np.asarray(core.forecaster.predict(windows))
        if out.shape != (batch,) or not np.isfinite(out).all():
            raise ArtifactError(f"the model forecasts {out.shape} non-finite or misshapen values")
