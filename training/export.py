"""LiteRT export at fixed batch sizes, and the check that it forecasts what Keras does.

Converting the dynamic-batch model fails for LSTMs (``TensorListReserve`` needs a static
shape), so each batch size gets a copy of the network built with a fixed batch dimension and
the trained weights. One file per batch size: a multi-signature file was tried and fails at
invoke time with READ_VARIABLE.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.models import ModelSpec, build_model

if TYPE_CHECKING:
    import keras

TFLITE_TOLERANCE = 1e-4
"""Largest LiteRT-vs-Keras forecast difference accepted at training time, in units of the
forecast itself (at least one scaled unit): see `forecast_diff`."""
MAIN_BATCH = 64
"""The batch size exported as plain ``model.tflite`` (the worker's usual batch)."""
# Batch-1 inference is one invoke per window; checking this many is plenty and stays fast.
_B1_CHECK_WINDOWS = 2048


class ExportMismatchError(RuntimeError):
    """The LiteRT export does not forecast what the Keras model does."""


def tflite_file_names(batch_sizes: Sequence[int]) -> dict[int, str]:
    """File name per batch size: ``model.tflite`` for the main batch, ``model_b{B}`` else.

    The main batch is 64 when exported, otherwise the largest one asked for.
    """
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError("batch sizes must be positive integers")
    main = MAIN_BATCH if MAIN_BATCH in sizes else sizes[-1]
    return {b: "model.tflite" if b == main else f"model_b{b}.tflite" for b in sizes}


def convert(model: keras.Model, spec: ModelSpec, batch_size: int) -> bytes:
    """LiteRT flatbuffer of `model` with its batch dimension fixed to `batch_size`."""
    import tensorflow as tf

    fixed = build_model(spec, batch_size=batch_size)
    fixed.set_weights(model.get_weights())
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    # The converter prints the traced signature to stdout; that is noise for our users.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def export_tflite(
    model: keras.Model, spec: ModelSpec, batch_sizes: Sequence[int], directory: Path
) -> dict[int, str]:
    """Write one LiteRT file per batch size into `directory`; returns batch -> file name."""
    names = tflite_file_names(batch_sizes)
    for batch, name in names.items():
        (directory / name).write_bytes(convert(model, spec, batch))
    return names


def tflite_predict(path: Path, inputs: np.ndarray, num_threads: int = 2) -> np.ndarray:
    """Forecasts ``(N,)`` of a fixed-batch LiteRT model, padding the last partial batch."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    batch = int(inp["shape"][0])
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    n = inputs.shape[0]
    pad = (-n) % batch
    if pad:
        inputs = np.concatenate([inputs, np.zeros((pad, *inputs.shape[1:]), np.float32)])
    result = np.empty(n + pad, dtype=np.float32)
    for start in range(0, n + pad, batch):
        interpreter.set_tensor(inp["index"], inputs[start : start + batch])
        interpreter.invoke()
        result[start : start + batch] = interpreter.get_tensor(out["index"]).reshape(-1)
    return result[:n]


def compare_exports(
    directory: Path, names: dict[int, str], inputs: np.ndarray, reference: np.ndarray
) -> dict[int, float]:
    """`forecast_diff` of LiteRT against `reference` per exported batch size, on `inputs`
    (batch 1 on a prefix)."""
    diffs: dict[int, float] = {}
    for batch, name in names.items():
        n = min(len(inputs), _B1_CHECK_WINDOWS) if batch == 1 else len(inputs)
        got = tflite_predict(directory / name, inputs[:n])
        diffs[batch] = forecast_diff(got, reference[:n])
    return diffs


def forecast_diff(got: np.ndarray, reference: np.ndarray) -> float:
    """Largest ``|got - reference| / max(1, |reference|)``; NaN anywhere counts as infinite.

    Forecasts are in scaled units (a series' training data has mean 0 and std 1), where the
    model works. Within a unit or so of 0 this is the plain difference. Further out it is
    relative: float32, in which both runtimes compute, only knows a forecast of 1500 scaled
    units (a series far from its training range) to 1.2e-4, so two faithful runtimes can
    differ there by more than any absolute tolerance near 0 allows (a large-valued NAB file
    failed training that way at 1.22e-4). A wrong export is off by far more either way.
    """
    a = np.asarray(got, dtype=np.float64).reshape(-1)
    b = np.asarray(reference, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare {a.size} forecasts with {b.size}")
    if a.size == 0:
        return 0.0
    diff = np.abs(a - b) / np.maximum(1.0, np.abs(b))
    return float("inf") if np.isnan(diff).any() else float(diff.max())


def check_agreement(diffs: dict[int, float], tolerance: float = TFLITE_TOLERANCE) -> float:
    """Raise `ExportMismatchError` when any export's `forecast_diff` exceeds `tolerance`.

    Returns the largest difference.
    """
    worst = max(diffs.values(), default=0.0)
    bad = {b: d for b, d in sorted(diffs.items()) if not d <= tolerance}
    if bad:
        detail = ", ".join(f"batch {b}: {d:.3g}" for b, d in bad.items())
        raise ExportMismatchError(
            f"LiteRT export disagrees with model.keras by more than {tolerance:g} "
            f"(max diff {detail}, relative to the forecast, at least 1 scaled unit); "
            "not writing the artifact"
        )
    return worst
