"""Benchmark inference: the worker's batched LiteRT path against the tutorial's way.

The tutorial forecasts with ``model.predict`` on one window per reading. The worker collects
every ready window of a drain and runs them through LiteRT in fixed-size batches. Both run the
same trained model here, in the same process, and the ratio is printed. A third figure runs
the whole detection core (windows, forecast, scoring, episodes) on readings of many series.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/inference.py
    .venv/bin/python bench/inference.py --model models/factory      # an existing artifact

Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detector.engine.artifact import load_artifact  # noqa: E402
from detector.engine.core import DetectionCore  # noqa: E402
from detector.engine.detection_config import DetectionConfig  # noqa: E402
from detector.engine.features import model_input  # noqa: E402
from detector.engine.forecaster import LiteRTForecaster  # noqa: E402
from detector.engine.readings import Reading  # noqa: E402


def train_model(out: Path, units: int, window: int) -> Path:
    """A model like the design's measurement: LSTM(units) on `window`-step windows."""
    from training.pipeline import TrainConfig, train_series

    rng = np.random.default_rng(0)
    t = np.arange(6000, dtype=np.float64) * 60.0
    series = {
        f"m{i}/temp": (t, 20 + 5 * np.sin(2 * np.pi * t / 86_400 + i) + rng.normal(0, 0.3, t.size))
        for i in range(4)
    }
    cfg = TrainConfig(
        window=window,
        units=(units,),
        epochs=2,
        quiet=True,
        plots=False,
        batch_sizes=(1, 64, 1024),
    )
    return train_series(series, cfg, out).artifact_dir


def timed(fn: Callable[[], object], min_s: float = 2.0) -> tuple[float, int]:
    """Run `fn` until `min_s` passed; returns (seconds, calls)."""
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_s:
        fn()
        calls += 1
    return elapsed, calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="artifact directory (default: train one)")
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096, help="windows per worker drain")
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="LiteRT threads")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or train_model(Path(tmp) / "model", args.units, args.window)
        artifact = load_artifact(model_dir)
        forecaster = LiteRTForecaster.from_artifact(artifact, num_threads=args.threads)
        w, f = artifact.window_len, artifact.n_features
        rng = np.random.default_rng(1)
        windows = rng.normal(0, 1, (args.batch, w)).astype(np.float32)
        ts = np.arange(w, dtype=np.float64)[None, :].repeat(args.batch, 0) * 60
        x = model_input(windows, ts, artifact.features)

        lite_s, lite_calls = timed(lambda: forecaster.predict(x))
        lite_rate = lite_calls * args.batch / lite_s

        import keras

        model = keras.models.load_model(artifact.keras_path, safe_mode=True)
        one = x[:1]
        keras_s, keras_calls = timed(lambda: model.predict(one, verbose=0), min_s=3.0)
        keras_rate = keras_calls / keras_s

        # The whole core: one reading per series per drain, every series ready.
        core = DetectionCore(artifact, forecaster, DetectionConfig())
        keys = [(f"d{i}", "m") for i in range(args.series)]
        t0 = 1.7e9
        warm = [
            Reading(d, m, t0 + k, float(np.sin(k + i)))
            for k in range(w)
            for i, (d, m) in enumerate(keys)
        ]
        core.process(warm)
        step = [w]

        def drain() -> None:
            k = step[0]
            core.process(
                [Reading(d, m, t0 + k, float(np.sin(k + i))) for i, (d, m) in enumerate(keys)]
            )
            step[0] += 1

        core_s, core_calls = timed(drain)
        core_rate = core_calls * args.series / core_s

    print(
        f"model: {artifact.cell.upper()}({','.join(map(str, artifact.units))}), "
        f"window {w}, {f} feature(s), LiteRT batch sizes {list(artifact.batch_sizes)}, "
        f"{args.threads} thread(s)"
    )
    print(
        f"tutorial  model.predict, one window per call : {keras_rate:12,.0f} windows/s "
        f"({1e3 / keras_rate:.2f} ms a call)"
    )
    print(f"worker    LiteRT, {args.batch} windows per drain   : {lite_rate:12,.0f} windows/s")
    print(f"ratio     worker / tutorial                  : {lite_rate / keras_rate:12,.0f}x")
    print(
        f"core      process(), {args.series} series per drain : {core_rate:12,.0f} readings/s "
        "(windows + forecast + scoring + episodes)"
    )
    print(
        "reproduce: OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/inference.py "
        + " ".join(sys.argv[1:])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
