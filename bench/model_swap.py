"""What swapping the model does to false alerts, on a simulated fleet, through the core.

A fault-free simulated plant (every alert is a false one) is replayed through the worker's
`DetectionCore`. Model A is trained on its first days; at the swap point the core changes to
model B, in four ways:

* ``no swap``     — model A all along (the baseline);
* ``carry``       — B takes A's state over with the default rule (error statistics of the
                    series B knows restart from B's calibration; docs/model-lifecycle.md);
* ``carry-keep``  — B takes A's state over keeping A's error statistics;
* ``cold``        — B starts from nothing (what a new model did before: every series warms
                    up for a window and relearns its ranges, levels and errors).

B is trained twice: continued from A on later days (``iotad train --from``, normalisation
kept), and afresh on those days with another seed (normalisation refit: the state is
converted). Prints the false alerts in the first day after the swap and over the rest.
A third B is B continued with its forecast errors doubled and its calibration saying so: a
model whose errors differ from A's, where the error rule matters.

    .venv/bin/python bench/model_swap.py [--days 8] [--devices 6] [--alone]

Not a test: it trains three tiny models (about a minute on two cores) and prints figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAY = 86_400.0


def main(argv: list[str]) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO))
    import numpy as np

    from detector.engine.artifact import load_artifact
    from detector.engine.core import DetectionCore
    from detector.engine.detection_config import DetectionConfig
    from detector.engine.forecaster import LiteRTForecaster
    from detector.engine.readings import Reading
    from detector.sim.simulation import FactoryConfig, generate_history
    from training.pipeline import TrainConfig, train_series

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--devices", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--worse",
        type=float,
        default=2.0,
        help="how many times larger the forecast errors of 'B worse' are (2)",
    )
    parser.add_argument("--only-worse", action="store_true", help="only A and 'B worse' (faster)")
    parser.add_argument(
        "--alert-budget",
        type=float,
        default=0.05,
        help="the models' alert calibration (0: none, every deviation counts as it is)",
    )
    parser.add_argument(
        "--alone",
        action="store_true",
        help="judge every series on its own (IOTAD_DETECTION__RELATE_DEVICES=false): the "
        "forecast error then drives the score, and the error rule shows",
    )
    args = parser.parse_args(argv)

    history = generate_history(
        FactoryConfig(n_devices=args.devices, seed=args.seed), duration_s=args.days * DAY
    )
    t0 = float(history.ts[0])
    train_a_end, train_b = t0 + 3 * DAY, (t0 + 2 * DAY, t0 + 5 * DAY)
    swap_at, replay_from = t0 + 5 * DAY, t0 + 3 * DAY

    def series(lo: float, hi: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        keep = (history.ts >= lo) & (history.ts < hi)
        keys = np.char.add(np.char.add(history.device[keep].astype(str), "/"), history.metric[keep])
        out = {}
        for key in np.unique(keys).tolist():
            sel = keys == key
            out[key] = (history.ts[keep][sel], history.value[keep][sel])
        return out

    base = {
        "window": 16,
        "units": (16,),
        "epochs": 4,
        "quiet": True,
        "plots": False,
        "alert_budget": args.alert_budget,
    }
    work = Path(tempfile.mkdtemp(prefix="model_swap."))
    print(f"training in {work} ...", file=sys.stderr)
    a = train_series(series(t0, train_a_end), TrainConfig(**base), work / "a").artifact_dir
    b_cont = train_series(
        series(*train_b), TrainConfig(**base, parent=a, seed=1), work / "b_continued"
    ).artifact_dir
    b_fresh_dir = None
    if not args.only_worse:
        b_fresh = train_series(series(*train_b), TrainConfig(**base, seed=1), work / "b_fresh")
        b_fresh_dir = b_fresh.artifact_dir

    def core_of(path: Path | tuple[Path, float]) -> DetectionCore:
        """The core of an artifact; (path, c): its forecasts made worse by noise of std c
        (scaled units) and its calibration saying so (a model whose errors differ)."""
        noise = 0.0
        if isinstance(path, tuple):
            path, noise = path
        art = load_artifact(path)
        forecaster: Any = LiteRTForecaster.from_artifact(art)
        if noise:
            art = dataclasses.replace(
                art,
                version=art.version + "-noisy",
                series_errors={k: noisier(e, noise) for k, e in art.series_errors.items()},
                global_errors=noisier(art.global_errors, noise),
            )
            forecaster = Noisy(forecaster, noise)
        return DetectionCore(art, forecaster, DetectionConfig(relate_devices=not args.alone))

    keep = history.ts >= replay_from
    ticks = np.unique(history.ts[keep])
    rows = np.flatnonzero(keep)
    by_tick = np.split(rows, np.flatnonzero(np.diff(history.ts[rows])) + 1)
    readings = [
        [
            Reading(str(history.device[i]), str(history.metric[i]), float(history.ts[i]),
                    float(history.value[i]))
            for i in idx.tolist()
        ]
        for idx in by_tick
    ]  # fmt: skip

    def replay(new: Any, how: str, start: Any = a) -> tuple[int, int, int, float, float]:
        core = core_of(start)
        first_day = rest = warming = 0
        peak = 0.0  # the largest likelihood deviation on day 6, before the alert divisor
        scores: list[float] = []
        for tick, batch in zip(ticks.tolist(), readings, strict=True):
            if tick == swap_at and new is not None:
                fresh = core_of(new)
                if how != "cold":
                    fresh.carry_errors = "keep" if how == "carry-keep" else "calibration"
                    fresh.restore(core.snapshot())
                core = fresh
            result = core.process(batch, now=tick)
            if tick < swap_at:
                continue
            fired = sum(1 for e in result.events if e.state == "firing")
            scores.extend(x.score for x in result.scored)
            if tick < swap_at + DAY:
                first_day += fired
                warming += result.warming
                if result.scored:
                    peak = max(peak, float(core.scorer.last_z.max()))
            else:
                rest += fired
        return first_day, rest, warming, float(np.mean(scores)) if scores else 0.0, peak

    n_series = len({(d, m) for d, m in zip(history.device, history.metric, strict=True)})
    print(
        f"{n_series} series, fault-free; model A trained on days 1-3, B on days 3-5; "
        f"replay from day 4, swap at the start of day 6"
        + ("; every series judged alone" if args.alone else "")
        + "; false alerts (firing events):"
    )
    head = f"{'model':<14} {'swap':<11} {'day 6':>6} {f'days 7-{args.days}':>9} {'warming':>8}"
    print(head + f" {'mean score':>10} {'peak z day 6':>12}")

    def show(name: str, how: str, got: tuple[int, int, int, float, float]) -> None:
        print(
            f"{name:<14} {how:<11} {got[0]:>6} {got[1]:>9} {got[2]:>8} {got[3]:>10.4f} "
            f"{got[4]:>12.1f}"
        )

    show("A", "no swap", replay(None, "none"))
    retrained = () if args.only_worse else (("B continued", b_cont), ("B fresh", b_fresh_dir))
    for name, path in retrained:
        # The same model all along (from day 4, so it is warm at the swap point): what the
        # swap should come close to once the state has re-learnt.
        show(name, "all along", replay(None, "none", start=path))
        for how in ("carry", "carry-keep", "cold"):
            show(name, how, replay(path, how))
    # A model whose errors differ: B continued with its forecast errors `--worse` times as
    # large (noise added), its calibration saying so.
    c = math.sqrt(args.worse**2 - 1.0) * load_artifact(b_cont).global_errors.std
    worse = (b_cont, c)
    print(
        f"B worse: B continued with forecast noise of std {c:.3f} (scaled; errors about "
        f"{args.worse:g} times as large), calibrated for it"
    )
    show("B worse", "all along", replay(None, "none", start=worse))
    for how in ("carry", "carry-keep", "cold"):
        show("B worse", how, replay(worse, how))
    return 0


class Noisy:
    """A forecaster's forecasts plus seeded Gaussian noise (a model with larger errors)."""

    def __init__(self, inner: Any, std: float) -> None:
        import numpy as np

        self.inner, self.std = inner, std
        self.rng = np.random.default_rng(0)

    def predict(self, windows: Any) -> Any:
        out = self.inner.predict(windows)
        return out + self.rng.normal(0.0, self.std, out.shape).astype(out.dtype)


def noisier(stats: Any, c: float) -> Any:
    """Residual statistics with independent noise of std `c` added (normal law for |r|)."""
    std = math.sqrt(stats.std**2 + c**2)
    return dataclasses.replace(
        stats,
        std=std,
        abs_mean=std * math.sqrt(2 / math.pi),
        abs_std=std * math.sqrt(1 - 2 / math.pi),
        abs_quantiles={},
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
