"""The demo's model: a small LSTM trained once on simulated history, then cached.

`ensure_model` returns a cached artifact for the demo's plant (devices, interval, seed) or
trains one in a child process (``python -m detector.sim.demo_model``): TensorFlow costs ~2 s
and ~620 MB to import and the demo process, which runs the worker, never needs it. The
child trains with `training.pipeline.train_series` on `demo_history`.

Why the history is segments spread over days: the live demo starts whenever the user runs
it, temperatures follow the daily ambient cycle and the weather, and the scorer flags values
outside the range the model was trained on. Measured with the default detection settings,
eight 10-minute runs at different times of day (a spike injected in each, always caught):
two contiguous hours of history gave 89 false alerts, twelve 10-minute segments over one
day 5 (cold nights below the trained range), 36 segments over three days none (nor in six
more runs of 30 minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.sim.simulation import LEGACY_KINDS, FactoryConfig, FactorySimulator

RECIPE = {
    "format": 2,  # bump when anything below changes: cached models of older recipes retrain
    "window": 16,
    "units": 16,
    "epochs": 6,
    "patience": 3,
    "max_windows": 12_000,
    # A fifth of `iotad train`'s default: the demo's first start trains in under a minute,
    # and its six machines are one signature with about 520,000 rows to draw from.
    "device_rows": 60_000,
    "segments": 36,
    "segment_readings": 600,
    "history_days": 3,
    "history_start_ts": 1_704_326_400.0,  # Thursday 2024-01-04 00:00 UTC
}
# The demo runs around the clock: machines never stop, so every minute shows activity.
DEMO_SHIFTS = "24/7"
TRAIN_TIMEOUT_S = 600.0
_DAY_S = 86_400.0


class ModelError(RuntimeError):
    """No model could be had; the message says why in a line or two."""


class Interrupted(Exception):
    """The demo was asked to stop while the model was being trained."""


@dataclass(frozen=True)
class DemoPlant:
    """What the demo simulates; a model is trained (and cached) for each distinct plant."""

    devices: int = 6
    interval_s: float = 1.0
    seed: int = 0

    def factory(
        self, fault_rate_per_h: float = 0.0, fault_kinds: tuple[str, ...] = ()
    ) -> FactoryConfig:
        """The simulator's config for this plant (random faults only in the live run)."""
        return FactoryConfig(
            n_devices=self.devices,
            shifts=DEMO_SHIFTS,
            interval_s=self.interval_s,
            seed=self.seed,
            fault_rate_per_h=fault_rate_per_h,
            fault_kinds=fault_kinds or LEGACY_KINDS,
        )

    @property
    def cache_prefix(self) -> str:
        return f"model-d{self.devices}-i{self.interval_s:g}-s{self.seed}-"

    def cache_name(self) -> str:
        """Directory name of this plant's model under the cache dir: a new recipe or new
        training code makes a new name, so a stale model is never reused."""
        return self.cache_prefix + training_fingerprint()


def training_fingerprint() -> str:
    """Hash of the recipe and of the code a demo model depends on (training, artifact
    format, model inputs, the simulator), read from the source files: nothing is imported."""
    digest = hashlib.sha256(repr(sorted(RECIPE.items())).encode())
    here = Path(__file__).resolve().parent
    engine = here.parent / "engine"
    simulator = ("simulation.py", "plant_config.py", "plant_schedule.py", "faults.py")
    files = [engine / name for name in ("artifact.py", "features.py")]
    files += [here / name for name in simulator]
    spec = importlib.util.find_spec("training")
    for location in (spec.submodule_search_locations or []) if spec else []:
        files += sorted(Path(location).glob("*.py"))
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def default_cache_dir() -> Path:
    """``$IOTAD_DEMO_CACHE``, else ``$XDG_CACHE_HOME/iotad/demo`` (``~/.cache/iotad/demo``)."""
    configured = os.environ.get("IOTAD_DEMO_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iotad" / "demo"


def demo_history(plant: DemoPlant) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Training series ``{"device/metric": (ts, values)}``: segments of one simulation.

    One simulator is stepped through `history_days` days in `segments` stretches of
    `segment_readings` readings at the plant's interval, evenly spread; between stretches
    it jumps ahead (its processes step exactly over any gap), so load, weather and the
    daily temperature cycle all vary across the history.
    """
    n_seg, seg_len = int(RECIPE["segments"]), int(RECIPE["segment_readings"])
    interval = plant.interval_s
    every_s = max(float(RECIPE["history_days"]) * _DAY_S / n_seg, (seg_len + 1) * interval)
    start = float(RECIPE["history_start_ts"])
    ts = np.concatenate([start + k * every_s + np.arange(seg_len) * interval for k in range(n_seg)])
    sim = FactorySimulator(plant.factory(), start)
    values = np.empty((ts.size, len(sim.devices), len(sim.metrics)))
    for i, t in enumerate(ts.tolist()):
        values[i] = sim.step_arrays(t)[0]
    return {
        f"{device}/{metric}": (ts, values[:, d, m])
        for d, device in enumerate(sim.devices)
        for m, metric in enumerate(sim.metrics)
    }


def train_demo_model(plant: DemoPlant, out: Path) -> Path:
    """Train the demo model for `plant` into `out` (imports TensorFlow; run in a child)."""
    from training.pipeline import TrainConfig, train_series

    cfg = TrainConfig(
        window=int(RECIPE["window"]),
        units=(int(RECIPE["units"]),),
        epochs=int(RECIPE["epochs"]),
        patience=int(RECIPE["patience"]),
        max_windows=int(RECIPE["max_windows"]),
        device_rows=int(RECIPE["device_rows"]),
        seed=plant.seed,
        quiet=True,
        plots=False,
    )
    return Path(train_series(demo_history(plant), cfg, out).artifact_dir)


def cached_model(plant: DemoPlant, cache_dir: Path) -> Path | None:
    """The cached model of `plant` if there is a loadable one."""
    from detector.engine.artifact import ArtifactError, load_artifact

    path = cache_dir / plant.cache_name()
    if not (path / "artifact.json").is_file():
        return None
    try:
        load_artifact(path)
    except ArtifactError:
        return None  # written by another version of the code: train again
    return path


def ensure_model(
    plant: DemoPlant,
    cache_dir: Path,
    stop: threading.Event,
    say: Callable[[str], None],
) -> tuple[Path, bool]:
    """The cached model of `plant`, trained first if need be; returns ``(path, reused)``.

    Raises `ModelError` when training fails and `Interrupted` when `stop` is set meanwhile
    (the child is terminated and its half-written output removed).
    """
    found = cached_model(plant, cache_dir)
    if found is not None:
        return found, True
    from training.extras import train_extra_problem

    # Checked here: the training child would fail with a long ModuleNotFoundError in its log.
    problem = train_extra_problem("iotad demo")
    if problem is not None:
        raise ModelError(problem)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / plant.cache_name()
    staging = cache_dir / f".{target.name}.{os.getpid()}"
    log_path = cache_dir / "train.log"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [sys.executable, "-m", "detector.sim.demo_model", "--out", str(staging)]
    cmd += ["--devices", str(plant.devices), "--interval-s", repr(plant.interval_s)]
    cmd += ["--seed", str(plant.seed)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OPENBLAS_NUM_THREADS": "1"}
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        try:
            next_note = started + 15.0
            while proc.poll() is None:
                if stop.wait(0.2):
                    raise Interrupted
                if time.monotonic() > started + TRAIN_TIMEOUT_S:
                    raise ModelError(f"training took over {TRAIN_TIMEOUT_S:.0f} s; see {log_path}")
                if time.monotonic() >= next_note:
                    next_note += 15.0
                    say(f"           still training ({time.monotonic() - started:.0f} s)")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.returncode != 0:
                shutil.rmtree(staging, ignore_errors=True)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise ModelError(
            f"training the demo model failed (exit {proc.returncode}); log {log_path}:\n    "
            + "\n    ".join(tail)
        )
    try:
        staging.rename(target)  # atomic: a concurrent demo sees all of a model or none
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another demo got there first
    for stale in cache_dir.glob(plant.cache_prefix + "*"):
        if stale != target:  # the same plant's models of older code
            shutil.rmtree(stale, ignore_errors=True)
    if cached_model(plant, cache_dir) is None:
        raise ModelError(f"the trained model in {target} does not load; see {log_path}")
    return target, False


def main(argv: list[str] | None = None) -> int:
    """The child process: train one demo model into ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m detector.sim.demo_model")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--devices", type=int, default=6)
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    plant = DemoPlant(args.devices, args.interval_s, args.seed)
    out = train_demo_model(plant, args.out)
    print(f"trained {out} in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
