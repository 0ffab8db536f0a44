"""Many NAB files through one detection core at once, under one set of settings.

The core keeps its state per series and works on all the series of a batch together, so
replaying every file of the corpus as its own series of one core gives each file exactly
what its own replay (`training.nab_replay.replay_fitted`) gives, at a fraction of the cost:
one pass over the longest file instead of one per file. Forecasts come from the files'
recorded replays (`training.nab_forecasts`), so no model runs; the naive forecast is a
function of its window alone and runs as it is.

What a replay varies is a `Variant`: the core's `DetectionConfig`, and the rule that gives
a series its seasonal period (the one setting of the seasonal signal, stored per series in
the artifact, so it is set here by rewriting the files' scales, not in the core).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np

from detector.engine.artifact import Artifact
from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.forecaster import Forecaster
from detector.engine.readings import Reading
from detector.engine.seasonality import MIN_AUTOCORRELATION, estimate_period
from training.nab_forecasts import CachedForecaster, ForecastTable, disjoint_groups
from training.nab_replay import LastValueForecaster, nab_anomaly_score, series_names
from training.windowing import PERIOD_SAMPLE


@dataclass(frozen=True, slots=True)
class Variant:
    """Settings of one replay: the core's config and the seasonal period rule.

    `min_autocorrelation` None turns the seasonal signal off; `MIN_AUTOCORRELATION` keeps
    the period the artifact holds; any other value re-estimates it from the file's history.
    """

    name: str
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    min_autocorrelation: float | None = MIN_AUTOCORRELATION


@dataclass(frozen=True, slots=True)
class FittedFile:
    """One file, ready to replay: its rows, its fitted artifact and its recorded forecasts.

    `forecasts` None means the naive (last-value) forecast. `error` says why fitting or the
    first replay failed; such a file has no artifact and scores as no detections.
    """

    name: str
    ts: np.ndarray
    values: np.ndarray
    history_rows: int
    artifact: Artifact | None
    forecasts: ForecastTable | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return "/".join(series_names(self.name))


def period_for(f: FittedFile, min_autocorrelation: float | None) -> int | None:
    """The seasonal period file `f` replays with under a variant's rule."""
    assert f.artifact is not None
    if min_autocorrelation is None:
        return None
    if min_autocorrelation == MIN_AUTOCORRELATION:
        scale = f.artifact.scale_for(f.key)
        return None if scale is None else scale.period
    history = f.values[: f.history_rows][-PERIOD_SAMPLE:]
    return estimate_period(history, min_autocorrelation=min_autocorrelation)


@dataclass(frozen=True, slots=True)
class _Series:
    """One file playing as one series of the combined core, with its period."""

    file: FittedFile
    copy: int
    period: int | None

    @property
    def names(self) -> tuple[str, str]:
        device, metric = series_names(self.file.name)
        return f"{device[:60]}.v{self.copy}", metric


def combined_artifact(series: list[_Series], tag: str) -> Artifact:
    """One artifact holding every series' scale, range, period and calibration."""
    base = series[0].file.artifact
    assert base is not None
    scales, errors = {}, {}
    for s in series:
        a, key = s.file.artifact, s.file.key
        assert a is not None
        shape = (a.window_len, a.features, a.scaling_method)
        if shape != (base.window_len, base.features, base.scaling_method):
            raise ValueError(f"{s.file.name}: window, features or scaling differ from the rest")
        scale = a.scale_for(key)
        if scale is None:
            raise ValueError(f"{s.file.name}: its artifact has no series {key}")
        own = "/".join(s.names)
        if own in scales:
            raise ValueError(f"{s.file.name}: two files play as series {own}")
        scales[own] = dataclasses.replace(scale, period=s.period)
        errors[own] = a.errors_for(key)
    return dataclasses.replace(
        base, version=f"nab-multi-{tag}", series_scales=scales, series_errors=errors
    )


def _chunks(f: FittedFile, chunk_rows: int) -> list[tuple[int, int]]:
    """The row ranges `replay_series` sends: all history at once, then `chunk_rows` each."""
    n = len(f.ts)
    bounds = [0, *range(f.history_rows, n, chunk_rows), n]
    return [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]


def replay_together(
    series: list[_Series], detection: DetectionConfig, forecaster: Forecaster, chunk_rows: int
) -> list[np.ndarray]:
    """NAB anomaly scores of every series (fitted files, same window shape), one core."""
    core = DetectionCore(combined_artifact(series, "replay"), forecaster, detection)
    plans = [_chunks(s.file, chunk_rows) for s in series]
    names = [s.names for s in series]
    traces = []
    for s in series:
        n = len(s.file.ts)
        traces.append((np.full(n, np.nan), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)))
    for r in range(max((len(p) for p in plans), default=0)):
        batch: list[Reading] = []
        owner: dict[int, tuple[int, int]] = {}
        for i, (s, plan) in enumerate(zip(series, plans, strict=True)):
            if r >= len(plan):
                continue
            lo, hi = plan[r]
            device, metric = names[i]
            ts, values = s.file.ts[lo:hi].tolist(), s.file.values[lo:hi].tolist()
            for row, t, v in zip(range(lo, hi), ts, values, strict=True):
                reading = Reading(device, metric, t, v)
                owner[id(reading)] = (i, row)
                batch.append(reading)
        result = core.process(batch, now=0.0)
        for scored in result.scored:
            i, row = owner[id(scored.reading)]
            if row < series[i].file.history_rows:
                continue  # priming: the core learns, nothing is reported
            score, anomalous, onset = traces[i]
            score[row], anomalous[row], onset[row] = scored.score, scored.is_anomaly, scored.onset
    return [nab_anomaly_score(*trace, detection.threshold) for trace in traces]


class MultiReplay:
    """Replays a corpus' fitted files under any `Variant`s, many times over.

    Variants that share a `DetectionConfig` replay in one core, each file once per variant
    (their periods are per series). Files that failed (`FittedFile.error`) score 0 on every
    row: no detections.
    """

    def __init__(self, files: list[FittedFile], chunk_rows: int = 256) -> None:
        self.files = {f.name: f for f in files}
        self.chunk_rows = chunk_rows
        fitted = [f for f in files if f.error is None]
        naive = [f for f in fitted if f.forecasts is None]
        cached = {f.name: f.forecasts for f in fitted if f.forecasts is not None}
        if naive and cached:
            raise ValueError("files mix the naive forecast with recorded ones")
        self.groups: list[tuple[list[FittedFile], Forecaster]] = []
        if naive:
            self.groups.append((naive, LastValueForecaster()))
        for members in disjoint_groups(cached):
            group = [self.files[n] for n in members]
            self.groups.append((group, CachedForecaster([cached[n] for n in members])))
        self._periods: dict[tuple[str, float | None], int | None] = {}

    def _period(self, f: FittedFile, min_autocorrelation: float | None) -> int | None:
        memo = (f.name, min_autocorrelation)
        if memo not in self._periods:
            self._periods[memo] = period_for(f, min_autocorrelation)
        return self._periods[memo]

    @property
    def failed(self) -> dict[str, str]:
        return {n: f.error for n, f in sorted(self.files.items()) if f.error is not None}

    def scores(self, variants: list[Variant]) -> dict[str, dict[str, np.ndarray]]:
        """Per variant name, every file's NAB anomaly scores (failed files: all zeros)."""
        zeros = {n: np.zeros(len(f.ts)) for n, f in self.files.items() if f.error is not None}
        out: dict[str, dict[str, np.ndarray]] = {v.name: dict(zeros) for v in variants}
        by_config: dict[DetectionConfig, list[Variant]] = {}
        for v in variants:
            by_config.setdefault(v.detection, []).append(v)
        for detection, same in by_config.items():
            for group, forecaster in self.groups:
                if isinstance(forecaster, CachedForecaster):
                    forecaster.rewind(copies=len(same))
                series = [
                    _Series(f, j, self._period(f, v.min_autocorrelation))
                    for f in group
                    for j, v in enumerate(same)
                ]
                scores = replay_together(series, detection, forecaster, self.chunk_rows)
                for s, file_scores in zip(series, scores, strict=True):
                    out[same[s.copy].name][s.file.name] = file_scores
        return out
