"""Where the core asks the device models (`detector.engine.device_model`) about a batch's readings.

A device's readings are judged together when, in one round of a batch, they carry the same
timestamp and hold every metric of a trained signature, and the windows of those metrics end
on the same timestamps (the last `window` readings of each were taken together). Anything
else (a missing sibling, windows out of step after a dropout, a device nobody trained) is
left to the linear device relations and the series' own signals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detector.engine.artifact import Artifact, ArtifactError
from detector.engine.device_model import DeviceModel, DeviceModelError, load_device_model
from detector.engine.readings import Reading


def load_models(artifact: Artifact) -> tuple[DeviceModel, ...]:
    models = []
    for entry in artifact.device_models:
        try:
            models.append(
                load_device_model(artifact.device_model_path(entry), entry.metrics, entry.window)
            )
        except DeviceModelError as exc:
            raise ArtifactError(str(exc)) from None
    # The largest signature a device holds is the one that judges it.
    return tuple(sorted(models, key=lambda m: -m.n_metrics))


class DeviceJudge:
    """The device models of one artifact, applied to rounds of readings."""

    def __init__(self, models: tuple[DeviceModel, ...], known: frozenset[str]) -> None:
        self.models = models
        self.known = known
        """Series keys the artifact scaled: a model judges readings in its training units
        only, never in a scale guessed from a new series' first window."""
        self.calls = 0

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> DeviceJudge:
        return cls(load_models(artifact), frozenset(artifact.series_scales))

    @property
    def active(self) -> bool:
        return bool(self.models)

    def judge(
        self,
        readings: Sequence[Reading],
        scaled_now: np.ndarray,
        windows: np.ndarray,
        window_ts: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(z, expected, sigma)`` per reading (scaled units; NaN where not judged).

        `readings` are one round's, at most one per series; `scaled_now` their scaled
        values; `windows` ``(n, W)`` the scaled readings before each, `window_ts` their
        timestamps.
        """
        n = len(readings)
        z = np.full(n, np.nan)
        expected = np.full(n, np.nan)
        sigma = np.full(n, np.nan)
        if not self.models or window_ts is None or n < 2:
            return z, expected, sigma
        groups: dict[tuple[str, float], dict[str, int]] = {}
        known = self.known
        for i, r in enumerate(readings):
            if r.key in known:
                groups.setdefault((r.device, r.ts), {})[r.metric] = i
        batches: dict[int, list[list[int]]] = {}
        for members in groups.values():
            if len(members) < 2:
                continue
            for k, model in enumerate(self.models):
                if all(m in members for m in model.metrics):
                    rows = [members[m] for m in model.metrics]
                    stamps = window_ts[rows, -model.window :]
                    if np.all(stamps == stamps[0]) and np.all(np.isfinite(stamps)):
                        batches.setdefault(k, []).append(rows)
                    break
        for k, groups_rows in batches.items():
            model = self.models[k]
            idx = np.array(groups_rows)  # (B, M)
            past = np.transpose(windows[idx, -model.window :], (0, 2, 1))
            gz, ge, gs = model.judge(past.astype(np.float64), scaled_now[idx])
            z[idx], expected[idx], sigma[idx] = gz, ge, gs
            self.calls += 1
        return z, expected, sigma
