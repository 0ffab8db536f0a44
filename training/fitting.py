"""Fitting the forecaster: seeding, Adam + MSE, early stopping on the validation loss."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
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


def fit_model(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int,
    verbose: int,
) -> dict[str, list[float]]:
    """Fit with Adam on MSE, stopping when the validation loss stops improving.

    The best epoch's weights are restored at the end. Training windows are shuffled within
    the training set only; validation windows come from later in time and are never seen
    by the optimiser. Returns the per-epoch ``loss`` and ``val_loss``.
    """
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="mse")
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    history = model.fit(
        train[0],
        train[1],
        validation_data=val,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=[stop],
        verbose=verbose,
    )
    return {
        "loss": [float(v) for v in history.history.get("loss", [])],
        "val_loss": [float(v) for v in history.history.get("val_loss", [])],
    }


def predict(model: keras.Model, inputs: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Scaled forecasts ``(N,)`` float32 of `model` on `inputs` ``(N, W, F)``."""
    if len(inputs) == 0:
        return np.empty(0, dtype=np.float32)
    out = model.predict(inputs, batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float32).reshape(-1)
