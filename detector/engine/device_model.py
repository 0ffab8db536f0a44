"""A machine's sensors judged together: the device model (a learnt, nonlinear nowcast).

One series at a time, a machine's start-up, stop or load change is a large forecast error on
every sensor; judged against what the machine's other sensors are doing now and did over the
last readings, it is what the machine does. The device model learns that from the history:
for a device whose metrics match its signature (the sorted metric names it was trained on),
it forecasts each metric's next value from

- the device's last `window` readings of every metric (the machine's recent state, and each
  sensor's lag behind it), and
- the other metrics' readings now (what the machine is doing at this very timestamp),

as a Gaussian: a mean change from the metric's last reading and a log standard deviation, so
that a start-up may be uncertain and a steady machine precise. Its deviation is
``z = (value - mean) / sigma``.

A faulty sensor must not make its siblings look faulty through the inputs, and must not
hide behind them either. Every metric is forecast with every sibling visible and with each
sibling hidden in turn (its column zeroed and its visibility flag off, as in training). The
device then gets one suspect: nobody (every metric judged with every sibling seen), or the
sibling whose hiding leaves the others most consistent (the others judged without it, the
suspect itself with every sibling seen), whichever hypothesis has the smallest sum of squared
deviations, a suspect's own term charged 1, its expectation under the model. Letting each
metric keep its own smallest |z| over the variants (before 2026-12-01) let a fault hide
behind the very sibling that shows it: a vibration oscillating was judged with the current
it follows hidden, a current creeping up with the vibration hidden.

Inference is plain numpy from the trained weights (an `.npz` read with ``allow_pickle=False``:
nothing in the file can run code), one LSTM layer over the window and a small dense head; the
training pipeline checks this forward pass against Keras' before it writes the artifact.

Input layout (the contract between `training.device_training` and this module), for a device
with M metrics in signature order, all in the artifact's per-series scaled units:

- ``past`` ``(B, window, M)``: the readings before the judged one, hidden columns zeroed;
- ``head`` ``(B, 3M)``: the readings now with the judged and hidden metrics zeroed, the
  one-hot of the judged metric, and the visibility flags of the others;
- output ``(B, 2)``: mean change from ``past[:, -1, judged]`` and log sigma (clipped to
  [`LOG_SIGMA_MIN`, `LOG_SIGMA_MAX`]).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.engine.artifact import MAX_DEVICE_METRICS

LOG_SIGMA_MIN = -7.0
LOG_SIGMA_MAX = 5.0
DENSE_PREFIX = "dense"


class DeviceModelError(ValueError):
    """A device model file that does not match its description."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|
    return out


@dataclass(frozen=True)
class DeviceModel:
    """One signature's weights and how to run them."""

    metrics: tuple[str, ...]
    window: int
    kernel: np.ndarray
    """LSTM input kernel ``(M, 4U)``, Keras' gate order i, f, c, o."""
    recurrent: np.ndarray
    """LSTM recurrent kernel ``(U, 4U)``."""
    bias: np.ndarray
    """LSTM bias ``(4U,)``."""
    dense: tuple[tuple[np.ndarray, np.ndarray], ...]
    """Head layers (kernel, bias); ReLU between them, the last one linear with 2 outputs."""

    @property
    def n_metrics(self) -> int:
        return len(self.metrics)

    @property
    def units(self) -> int:
        return int(self.recurrent.shape[0])

    def validate(self) -> None:
        m, u = self.n_metrics, self.units
        if not 2 <= m <= MAX_DEVICE_METRICS:
            raise DeviceModelError(
                f"a device model needs 2 to {MAX_DEVICE_METRICS} metrics, got {m}"
            )
        if len(set(self.metrics)) != m or list(self.metrics) != sorted(self.metrics):
            raise DeviceModelError("a device model's metrics must be distinct and sorted")
        if self.window < 1:
            raise DeviceModelError("a device model's window must be at least 1")
        want = {"kernel": (m, 4 * u), "recurrent": (u, 4 * u), "bias": (4 * u,)}
        for name, shape in want.items():
            if getattr(self, name).shape != shape:
                raise DeviceModelError(f"LSTM {name} has shape {getattr(self, name).shape}")
        width = u + 3 * m
        for i, (k, b) in enumerate(self.dense):
            if k.ndim != 2 or k.shape[0] != width or b.shape != (k.shape[1],):
                raise DeviceModelError(f"dense layer {i} has shapes {k.shape}, {b.shape}")
            width = k.shape[1]
        if not self.dense or width != 2:
            raise DeviceModelError("the head must end in 2 outputs (mean, log sigma)")
        for array in (
            self.kernel,
            self.recurrent,
            self.bias,
            *(a for kb in self.dense for a in kb),
        ):
            if not np.all(np.isfinite(array)):
                raise DeviceModelError("a device model holds non-finite weights")

    # -- the forward pass -----------------------------------------------------------------------

    def encode(self, past: np.ndarray) -> np.ndarray:
        """The LSTM's last hidden state of each window ``(B, window, M)``."""
        b = past.shape[0]
        u = self.units
        h = np.zeros((b, u))
        c = np.zeros((b, u))
        x_proj = past @ self.kernel + self.bias  # (B, W, 4U) in one product
        for t in range(past.shape[1]):
            z = x_proj[:, t] + h @ self.recurrent
            i = _sigmoid(z[:, :u])
            f = _sigmoid(z[:, u : 2 * u])
            g = np.tanh(z[:, 2 * u : 3 * u])
            o = _sigmoid(z[:, 3 * u :])
            c = f * c + i * g
            h = o * np.tanh(c)
        return h

    def head(self, encoded: np.ndarray, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean change and log sigma from the encoded window and the head input."""
        x = np.concatenate([encoded, head], axis=1)
        for k, (kernel, bias) in enumerate(self.dense):
            x = x @ kernel + bias
            if k < len(self.dense) - 1:
                x = np.maximum(x, 0.0)
        return x[:, 0], np.clip(x[:, 1], LOG_SIGMA_MIN, LOG_SIGMA_MAX)

    def predict(self, past: np.ndarray, head: np.ndarray) -> np.ndarray:
        """``(B, 2)``: the model's raw output for inputs laid out as the module says."""
        mean, log_sigma = self.head(self.encode(past), head)
        return np.stack([mean, log_sigma], axis=1)

    def judge(
        self, past: np.ndarray, now: np.ndarray, hiding: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each metric of B devices judged against the others.

        `past` ``(B, window, M)`` and `now` ``(B, M)`` are scaled readings in signature
        order. Returns ``(z, expected, sigma)``, each ``(B, M)``: for every metric its
        variant under the device's suspect (see the module docstring); with `hiding` off,
        the forecast with every sibling visible (what a forecast error is measured on).
        """
        b, m = now.shape
        variants = m + 1 if hiding else 1  # 0: nothing hidden; 1 + k: sibling k hidden
        hide = np.zeros((variants, m))
        hide[np.arange(1, variants), np.arange(variants - 1)] = 1.0
        keep = 1.0 - hide  # (V, M)
        pasts = past[None, :, :, :] * keep[:, None, None, :]  # (V, B, W, M)
        encoded = self.encode(pasts.reshape(variants * b, self.window, m)).reshape(variants, b, -1)
        eye = np.eye(m)
        # z, expected and sigma of every metric in every variant: (3, M, V, B). Hiding the
        # judged metric itself is moot: that variant is not computed, it holds the one with
        # every sibling seen.
        out = np.empty((3, m, variants, b))
        last = past[:, -1, :]
        for i in range(m):
            vs = [v for v in range(variants) if v != 1 + i]
            visible = keep[vs] * (1.0 - eye[i])  # (V', M)
            cur = now[None, :, :] * visible[:, None, :]
            onehot = np.broadcast_to(eye[i], (len(vs), b, m))
            flags = np.broadcast_to(visible[:, None, :], (len(vs), b, m))
            head = np.concatenate([cur, onehot, flags], axis=2).reshape(len(vs) * b, 3 * m)
            mean, log_sigma = self.head(encoded[vs].reshape(len(vs) * b, -1), head)
            expected = last[:, i][None, :] + mean.reshape(len(vs), b)
            sigma = np.exp(log_sigma).reshape(len(vs), b)
            out[:, i, vs] = np.stack([(now[:, i][None, :] - expected) / sigma, expected, sigma])
            if hiding:
                out[:, i, 1 + i] = out[:, i, 0]
        if not hiding:
            return out[0, :, 0].T, out[1, :, 0].T, out[2, :, 0].T
        # Which sibling, if any, is the device's suspect: the hypothesis whose deviations are
        # smallest in sum of squares. "None": every metric judged with every sibling seen.
        # "k": the others judged with k hidden, k itself with every sibling seen; k's own term
        # is free under that hypothesis, so it is charged its expectation under the model (1)
        # to weigh M terms against M. Each metric taking its own smallest |z| over the
        # variants let a fault hide behind the very sibling that shows it: vibration
        # oscillating was judged with current (which it follows) hidden, current creeping up
        # with vibration hidden.
        z_sq = out[0] ** 2  # (M, V, B)
        costs = np.empty((variants, b))
        costs[0] = np.sum(z_sq[:, 0], axis=0)
        costs[1:] = np.sum(z_sq[:, 1:] * (1.0 - eye)[:, :, None], axis=0) + 1.0
        best = np.argmin(costs, axis=0)  # (B,) 0: nobody; 1 + k: sibling k
        picked = out[:, np.arange(m)[None, :], best[:, None], np.arange(b)[:, None]]  # (3, B, M)
        z, expected, sigma = picked
        return z, expected, sigma


# -- files ------------------------------------------------------------------------------------


def weight_arrays(model: DeviceModel) -> dict[str, np.ndarray]:
    """The arrays an `.npz` holds for `model`."""
    arrays = {
        "lstm_kernel": model.kernel,
        "lstm_recurrent": model.recurrent,
        "lstm_bias": model.bias,
    }
    for i, (k, b) in enumerate(model.dense):
        arrays[f"{DENSE_PREFIX}{i}_kernel"] = k
        arrays[f"{DENSE_PREFIX}{i}_bias"] = b
    return arrays


def save_device_model(model: DeviceModel, path: Path) -> None:
    with open(path, "wb") as f:
        np.savez(f, **weight_arrays(model))  # type: ignore[arg-type]  # numpy's stub: allow_pickle


def load_device_model(path: Path, metrics: tuple[str, ...], window: int) -> DeviceModel:
    """Read and check one device model file (no pickles: plain arrays only)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name], dtype=np.float64) for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DeviceModelError(f"{path}: not a readable device model ({exc})") from None
    try:
        dense: list[tuple[np.ndarray, np.ndarray]] = []
        while f"{DENSE_PREFIX}{len(dense)}_kernel" in arrays:
            i = len(dense)
            dense.append((arrays[f"{DENSE_PREFIX}{i}_kernel"], arrays[f"{DENSE_PREFIX}{i}_bias"]))
        model = DeviceModel(
            metrics=tuple(metrics),
            window=int(window),
            kernel=arrays["lstm_kernel"],
            recurrent=arrays["lstm_recurrent"],
            bias=arrays["lstm_bias"],
            dense=tuple(dense),
        )
    except KeyError as exc:
        raise DeviceModelError(f"{path}: missing array {exc}") from None
    try:
        model.validate()
    except DeviceModelError as exc:
        raise DeviceModelError(f"{path}: {exc}") from None
    return model


def describe(model: DeviceModel, file: str) -> dict[str, Any]:
    """The artifact.json entry of a device model."""
    return {
        "metrics": list(model.metrics),
        "window": model.window,
        "units": model.units,
        "file": file,
    }
