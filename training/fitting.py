"""Fitting the forecaster: seeding, Adam + MSE, early stopping on the validation loss."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Hold back what native code writes to file descriptor 2 (TensorFlow's C++ logging).

    TensorFlow logs oneDNN, CUDA and graph notices through absl before any of its settings
    apply, so only redirecting the descriptor silences them. Should the block fail, the
    captured text is written out after all: an error must never be hidden.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))


def import_tensorflow() -> None:
    """Import TensorFlow without its start-up chatter on stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_captured():
        import tensorflow as tf

        # Device discovery (e.g. a failed cuInit on a machine without GPU) logs too.
        tf.config.list_logical_devices()


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow; optionally make TensorFlow's ops deterministic.

    Determinism costs little on CPU for these small recurrent models and makes a rerun with
    the same data and seed give the same artifact weights.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


@dataclass
class FitPlan:
    """How to fit: the optimiser, the stopping rule and the windows seen per epoch."""

    epochs: int
    batch_size: int
    lr: float
    patience: int
    windows_per_epoch: int | None
    """None: every training window each epoch; else a fresh seeded sample of this many."""
    seed: int
    verbose: bool


def fit_model(
    model: keras.Model,
    train_batch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    train_pos: np.ndarray,
    val: tuple[np.ndarray, np.ndarray],
    plan: FitPlan,
) -> dict[str, list[float]]:
    """Fit with Adam on MSE, stopping when the validation loss stops improving.

    Each epoch draws its windows afresh (all of them shuffled, or a sample of
    `plan.windows_per_epoch`), so a cap bounds the time of an epoch while the epochs together
    still cover the whole training set; `train_batch(positions)` builds their inputs and
    targets, so memory holds one epoch's windows at most. Shuffling stays inside the
    training set: validation windows are later in time and never seen by the optimiser.
    As Keras' EarlyStopping with ``restore_best_weights``: after `patience` epochs without
    a lower validation loss, training stops and the best epoch's weights are put back.
    Returns the per-epoch ``loss`` and ``val_loss``.
    """
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=plan.lr), loss="mse")
    rng = np.random.default_rng(plan.seed)
    n_epoch = len(train_pos)
    if plan.windows_per_epoch is not None:
        n_epoch = min(n_epoch, plan.windows_per_epoch)
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    best, best_weights, waited = math.inf, None, 0
    for epoch in range(1, plan.epochs + 1):
        started = time.perf_counter()
        x, y = train_batch(rng.permutation(train_pos)[:n_epoch])
        fitted = model.fit(x, y, batch_size=plan.batch_size, epochs=1, shuffle=False, verbose=0)
        loss = float(fitted.history["loss"][-1])
        val_loss = float(model.evaluate(*val, batch_size=max(plan.batch_size, 1024), verbose=0))
        history["loss"].append(loss)
        history["val_loss"].append(val_loss)
        improved = val_loss < best
        if plan.verbose:
            print(
                f"epoch {epoch}/{plan.epochs}: loss {loss:.5f}, val_loss {val_loss:.5f}"
                f"{' (best)' if improved else ''}, {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        if improved:
            best, best_weights, waited = val_loss, model.get_weights(), 0
        else:
            waited += 1
            if waited >= plan.patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    return history


def predict(model: keras.Model, inputs: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Scaled forecasts ``(N,)`` float32 of `model` on `inputs` ``(N, W, F)``."""
    if len(inputs) == 0:
        return np.empty(0, dtype=np.float32)
    out = model.predict(inputs, batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float32).reshape(-1)
