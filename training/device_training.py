"""Training the device models (`detector.engine.device_model`) on a history.

Devices are grouped by signature (the sorted names of their metrics); each signature with a
device of two or more metrics gets one model, shared by its devices (a fleet of like machines
teaches one model far more than one machine would). A device's readings are aligned on the
timestamps all its metrics share, scaled with the per-series scales the artifact carries, and
cut where the first of its series' training parts ends: the validation part, which the alert
calibration replays, is never trained on.

Each training row judges one metric at one timestamp, with the previous `window` aligned
readings of every metric and the other metrics' readings now; in a share of the rows
(`hide_share`) one sibling is hidden, as the core hides it when judging (see the module
docstring of `detector.engine.device_model`). The loss is the Gaussian negative log likelihood of
the change from the metric's last reading.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.engine.artifact import MAX_DEVICE_METRICS
from detector.engine.device_model import (
    LOG_SIGMA_MAX,
    LOG_SIGMA_MIN,
    DeviceModel,
    describe,
    save_device_model,
)

Series = Mapping[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class DeviceTrainConfig:
    window: int = 16
    units: int = 32
    head: tuple[int, ...] = (64, 32)
    epochs: int = 6
    max_rows: int = 300_000
    """Training rows drawn (with their judged metric and hidden sibling) per signature."""
    batch_size: int = 512
    lr: float = 2e-3
    hide_share: float = 0.3
    transition_share: float = 0.5
    """Share of the training rows drawn in proportion to how far the device moved in the
    step before (the sum of its metrics' last changes, scaled), the rest uniformly. A plant
    runs steady most of the time; drawn uniformly, its start-ups, stops and load changes are
    a few rows in a hundred, the model's spread there is learnt from too few, and its
    deviations at every change of state had tails heavy enough to set the alert divisors.
    The weight looks at the inputs only (the step before, not the change forecast), so what
    the model learns of a reading given its inputs is not biased. Set once before the
    benchmark run, not tuned."""
    seed: int = 0
    min_rows: int = 500
    """Aligned training timestamps a signature needs, or it gets no model."""


@dataclass
class DeviceData:
    """One signature's aligned, scaled readings, device by device."""

    metrics: tuple[str, ...]
    devices: list[str]
    values: list[np.ndarray]
    """Per device ``(T, M)`` scaled readings at the timestamps all its metrics share."""
    n_train: list[int]
    """Per device, how many of its aligned timestamps belong to the training part."""


def signatures(keys: list[str]) -> dict[tuple[str, ...], list[str]]:
    """Devices by the sorted names of their metrics, for devices with 2..MAX_DEVICE_METRICS."""
    by_device: dict[str, list[str]] = {}
    for key in keys:
        device, sep, metric = key.partition("/")
        if sep and metric:
            by_device.setdefault(device, []).append(metric)
    out: dict[tuple[str, ...], list[str]] = {}
    for device, metrics in sorted(by_device.items()):
        if 2 <= len(metrics) <= MAX_DEVICE_METRICS:
            out.setdefault(tuple(sorted(metrics)), []).append(device)
    return out


def device_data(
    series: Series,
    scales: Mapping[str, tuple[float, float]],
    n_train: Mapping[str, int],
    metrics: tuple[str, ...],
    devices: list[str],
) -> DeviceData:
    data = DeviceData(metrics, [], [], [])
    for device in devices:
        keys = [f"{device}/{m}" for m in metrics]
        if any(k not in scales or k not in n_train for k in keys):
            continue
        ts = series[keys[0]][0]
        for k in keys[1:]:
            ts = np.intersect1d(ts, series[k][0], assume_unique=True)
        if ts.size <= 1:
            continue
        cols, train_end = [], math.inf
        for k in keys:
            k_ts, k_values = series[k]
            idx = np.searchsorted(k_ts, ts)
            offset, scale = scales[k]
            cols.append((k_values[idx] - offset) / scale)
            train_end = min(train_end, float(k_ts[n_train[k] - 1]))
        data.devices.append(device)
        data.values.append(np.stack(cols, axis=1))
        data.n_train.append(int(np.searchsorted(ts, train_end, side="right")))
    return data


def rows(
    data: DeviceData,
    window: int,
    train: bool,
    n: int | None,
    hide_share: float,
    seed: int,
    transition_share: float = 0.0,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Model inputs ``[past, head]``, targets (change from the last reading) and the naive
    error of each row. ``n`` rows drawn at random (all rows, nothing hidden, when None), a
    `transition_share` of them in proportion to the device's movement in the step before
    (`DeviceTrainConfig.transition_share`)."""
    m = len(data.metrics)
    where = []  # (device index, position)
    for d, values in enumerate(data.values):
        lo, hi = (window, data.n_train[d]) if train else (max(window, data.n_train[d]), len(values))
        if hi > lo:
            where.append(np.stack([np.full(hi - lo, d), np.arange(lo, hi)], axis=1))
    if not where:
        empty = np.zeros((0, window, m), np.float32)
        return [empty, np.zeros((0, 3 * m), np.float32)], np.zeros(0), np.zeros(0)
    pairs = np.concatenate(where)
    rng = np.random.default_rng(seed)
    if n is None:
        pairs = np.repeat(pairs, m, axis=0)
        target = np.tile(np.arange(m), len(pairs) // m)
        hidden = np.full(len(pairs), -1)
    else:
        pairs = pairs[_draw(data, pairs, n, transition_share if window >= 2 else 0.0, rng)]
        target = rng.integers(0, m, n)
        other = (target + rng.integers(1, m, n)) % m if m > 1 else target
        hidden = np.where(rng.random(n) < hide_share, other, -1)
    past = np.empty((len(pairs), window, m), np.float32)
    now = np.empty((len(pairs), m), np.float32)
    for d in np.unique(pairs[:, 0]).tolist():
        sel = np.flatnonzero(pairs[:, 0] == d)
        pos = pairs[sel, 1]
        values = data.values[d]
        past[sel] = values[pos[:, None] + np.arange(-window, 0)]
        now[sel] = values[pos]
    keep = np.ones((len(pairs), m), np.float32)
    has_hidden = hidden >= 0
    keep[np.flatnonzero(has_hidden), hidden[has_hidden]] = 0.0
    past *= keep[:, None, :]
    onehot = np.eye(m, dtype=np.float32)[target]
    visible = keep * (1.0 - onehot)
    head = np.concatenate([now * visible, onehot, visible], axis=1)
    last = past[np.arange(len(pairs)), -1, target]
    y = now[np.arange(len(pairs)), target] - last
    return [past, head], y.astype(np.float32), y.astype(np.float64)


def moved_before(data: DeviceData, pairs: np.ndarray) -> np.ndarray:
    """For each (device, position) of `pairs`, the sum over the device's metrics of their
    absolute change from position - 2 to position - 1 (scaled units)."""
    out = np.zeros(len(pairs))
    for d in np.unique(pairs[:, 0]).tolist():
        sel = np.flatnonzero(pairs[:, 0] == d)
        pos = pairs[sel, 1]
        values = data.values[d]
        out[sel] = np.abs(values[pos - 1] - values[pos - 2]).sum(axis=1)
    return out


def _draw(
    data: DeviceData, pairs: np.ndarray, n: int, share: float, rng: np.random.Generator
) -> np.ndarray:
    """Indices into `pairs` of `n` training rows: `share` of them in proportion to
    `moved_before`, the rest uniformly (all uniformly when the device never moved)."""
    k = round(n * share)
    weight = moved_before(data, pairs) if k else None
    total = 0.0 if weight is None else float(weight.sum())
    if weight is None or not 0 < total < np.inf:
        return rng.integers(0, len(pairs), n)
    uniform = rng.integers(0, len(pairs), n - k)
    return np.concatenate([uniform, rng.choice(len(pairs), k, p=weight / total)])


def _build(m: int, cfg: DeviceTrainConfig) -> Any:
    import keras
    from keras import layers

    past = keras.Input((cfg.window, m), name="past")
    head = keras.Input((3 * m,), name="head")
    x = layers.Concatenate()([layers.LSTM(cfg.units)(past), head])
    for width in cfg.head:
        x = layers.Dense(width, activation="relu")(x)
    return keras.Model([past, head], layers.Dense(2)(x))


def _loss(y: Any, out: Any) -> Any:
    import keras

    ops = keras.ops
    log_sigma = ops.clip(out[:, 1], LOG_SIGMA_MIN, LOG_SIGMA_MAX)
    return ops.mean(0.5 * ops.square(y[:, 0] - out[:, 0]) * ops.exp(-2.0 * log_sigma) + log_sigma)


def to_device_model(keras_model: Any, metrics: tuple[str, ...], window: int) -> DeviceModel:
    """The numpy model of a trained Keras one (layers as `_build` makes them)."""
    lstm = next(layer for layer in keras_model.layers if layer.__class__.__name__ == "LSTM")
    dense = [layer for layer in keras_model.layers if layer.__class__.__name__ == "Dense"]
    kernel, recurrent, bias = (np.asarray(w, np.float64) for w in lstm.get_weights())
    model = DeviceModel(
        metrics=metrics,
        window=window,
        kernel=kernel,
        recurrent=recurrent,
        bias=bias,
        dense=tuple(tuple(np.asarray(w, np.float64) for w in d.get_weights()) for d in dense),  # type: ignore[misc]
    )
    model.validate()
    return model


def train_signature(
    data: DeviceData, cfg: DeviceTrainConfig, log: Callable[[str], None]
) -> tuple[DeviceModel, dict[str, Any]] | None:
    """Fit one signature's model; None when its history is too short."""
    import keras

    m = len(data.metrics)
    available = sum(max(0, n - cfg.window) for n in data.n_train)
    if available < cfg.min_rows:
        log(f"device model {'+'.join(data.metrics)}: {available} aligned readings, too few")
        return None
    x, y, _ = rows(
        data,
        cfg.window,
        True,
        min(cfg.max_rows, available * m),
        cfg.hide_share,
        cfg.seed,
        cfg.transition_share,
    )
    net = _build(m, cfg)
    net.compile(optimizer=keras.optimizers.Adam(cfg.lr), loss=_loss)
    net.fit(x, y[:, None], batch_size=cfg.batch_size, epochs=cfg.epochs, verbose=0, shuffle=True)
    model = to_device_model(net, data.metrics, cfg.window)
    # The worker runs the numpy forward pass: it must be the network that was trained.
    sample = [a[:512] for a in x]
    keras_out = np.asarray(net.predict(sample, verbose=0), np.float64)
    keras_out[:, 1] = np.clip(keras_out[:, 1], LOG_SIGMA_MIN, LOG_SIGMA_MAX)
    diff = float(np.max(np.abs(model.predict(*(a.astype(np.float64) for a in sample)) - keras_out)))
    if diff > 1e-3:
        raise RuntimeError(f"device model: numpy and Keras disagree by {diff:.3g}")
    report = evaluate(model, data)
    report.update(
        devices=len(data.devices),
        training_rows=len(y),
        numpy_keras_max_diff=diff,
        metrics=list(data.metrics),
    )
    log(
        f"device model {'+'.join(data.metrics)}: {len(data.devices)} devices, validation RMSE "
        f"{report['rmse_vs_naive']:.3f} x naive"
    )
    return model, report


def evaluate(model: DeviceModel, data: DeviceData, chunk: int = 8192) -> dict[str, Any]:
    """Validation figures with every sibling visible: RMSE of the expected value against the
    last reading's (naive), per metric and pooled, and the share of |z| above 4 (as the
    core judges: the least deviating variant)."""
    m = len(data.metrics)
    sq_model = np.zeros(m)
    sq_naive = np.zeros(m)
    count = np.zeros(m)
    beyond = 0
    z_of: dict[str, list[np.ndarray]] = {}
    for d, values in enumerate(data.values):
        pos = np.arange(max(model.window, data.n_train[d]), len(values))
        for start in range(0, len(pos), chunk):
            p = pos[start : start + chunk]
            past = values[p[:, None] + np.arange(-model.window, 0)]
            now = values[p]
            _, expected, _ = model.judge(past, now, hiding=False)
            z, _, _ = model.judge(past, now)
            sq_model += np.sum((now - expected) ** 2, axis=0)
            sq_naive += np.sum((now - past[:, -1, :]) ** 2, axis=0)
            count += len(p)
            beyond += int(np.count_nonzero(np.abs(z) > 4))
            for i, metric in enumerate(data.metrics):
                z_of.setdefault(f"{data.devices[d]}/{metric}", []).append(z[:, i])
    deviations = {key: np.concatenate(parts) for key, parts in z_of.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        per_metric = np.sqrt(sq_model / sq_naive)
    total = float(count.sum())
    return {
        "validation_readings": int(total),
        "rmse_vs_naive": float(np.sqrt(sq_model.sum() / sq_naive.sum())) if total else None,
        "rmse_vs_naive_per_metric": {
            name: (float(v) if np.isfinite(v) else None)
            for name, v in zip(data.metrics, per_metric, strict=True)
        },
        "share_abs_z_above_4": beyond / total if total else None,
        "deviations": deviations,
    }


def train_device_models(
    series: Series,
    scales: Mapping[str, tuple[float, float]],
    n_train: Mapping[str, int],
    cfg: DeviceTrainConfig,
    directory: Path,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, np.ndarray]]:
    """Train every signature's model, write its weights into `directory`; returns the
    artifact.json entries, the report's, and each judged series' deviations (z) on its
    validation part: the residuals the core's error statistics see for that series."""
    entries: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    deviations: dict[str, np.ndarray] = {}
    for metrics, devices in signatures(sorted(scales)).items():
        data = device_data(series, scales, n_train, metrics, devices)
        if not data.devices:
            continue
        trained = train_signature(data, cfg, log)
        if trained is None:
            continue
        model, report = trained
        deviations.update(report.pop("deviations"))
        name = f"device_{len(entries)}.npz"
        save_device_model(model, directory / name)
        entries.append(describe(model, name))
        reports.append(report)
    return entries, reports, deviations
