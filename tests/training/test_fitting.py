"""The fitting loop's rules (per-epoch sampling, early stopping) with a scripted fake model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from training.fitting import FitPlan, fit_model


class ScriptedModel:
    """Stands in for a Keras model: validation losses come from a script, weights count up."""

    def __init__(self, val_losses: list[float]) -> None:
        self.val_losses = list(val_losses)
        self.epoch = 0
        self.weights = [np.zeros(1)]
        self.fit_sizes: list[int] = []

    def compile(self, **kwargs: object) -> None:
        self.compiled = kwargs

    def fit(self, x: np.ndarray, y: np.ndarray, **kwargs: object) -> object:
        self.epoch += 1
        self.weights = [np.full(1, float(self.epoch))]  # "the weights after epoch k" = k
        self.fit_sizes.append(len(x))

        return SimpleNamespace(history={"loss": [1.0 / self.epoch]})

    def evaluate(self, x: np.ndarray, y: np.ndarray, **kwargs: object) -> float:
        return self.val_losses[self.epoch - 1]

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.weights = weights


def plan(**overrides: object) -> FitPlan:
    base = dict(
        epochs=10, batch_size=4, lr=1e-3, patience=2, windows_per_epoch=None, seed=0, verbose=False
    )
    return FitPlan(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.mark.slow  # imports Keras for the optimiser
def test_stops_after_patience_epochs_without_improvement_and_restores_the_best() -> None:
    model = ScriptedModel([3.0, 2.0, 2.5, 2.0, 2.6, 1.0])
    seen: list[np.ndarray] = []

    def batch(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(pos)
        return pos[:, None, None].astype(np.float32), pos.astype(np.float32)

    history = fit_model(model, batch, np.arange(10, 30), (np.zeros((1, 1, 1)), np.zeros(1)), plan())
    # Best 2.0 at epoch 2; epoch 4 only equals it (no improvement), so epochs 3 and 4 use up
    # the patience of 2 and epoch 6's 1.0 is never reached.
    assert history["val_loss"] == [3.0, 2.0, 2.5, 2.0]
    assert history["loss"] == [1.0, 0.5, 1 / 3, 0.25]
    assert model.weights[0][0] == 2.0
    # Without a cap every epoch sees every training window, in a new order each time.
    assert all(sorted(p.tolist()) == list(range(10, 30)) for p in seen)
    assert seen[0].tolist() != seen[1].tolist()


@pytest.mark.slow
def test_a_cap_draws_a_fresh_seeded_sample_each_epoch() -> None:
    def run() -> list[list[int]]:
        seen: list[list[int]] = []

        def batch(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            seen.append(pos.tolist())
            return pos[:, None, None].astype(np.float32), pos.astype(np.float32)

        model = ScriptedModel([5.0, 4.0, 3.0])
        fit_model(model, batch, np.arange(100), (np.zeros((1, 1, 1)), np.zeros(1)),
                  plan(epochs=3, windows_per_epoch=7))  # fmt: skip
        assert model.fit_sizes == [7, 7, 7]
        return seen

    first, second = run(), run()
    assert first == second  # seeded
    assert all(len(set(p)) == 7 and set(p) <= set(range(100)) for p in first)
    assert first[0] != first[1]  # a fresh sample per epoch, not one fixed subset
