"""Forecasters: window batches in, one-step forecasts out. LiteRT in the worker.

LiteRT models of an LSTM have a fixed batch size (see docs/architecture.md), so an artifact
carries one `.tflite` per batch size (e.g. 1, 64, 1024). `LiteRTForecaster` cuts a batch of
any size into runs of the exported sizes, padding the last partial one.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from detector.engine.artifact import Artifact, ArtifactError


class Forecaster(Protocol):
    """Anything that forecasts the next scaled value of each window in a batch."""

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """`windows` is ``(B, W, F)`` float32; returns ``(B,)`` float32 scaled forecasts."""
        ...


class _Runner:
    """One LiteRT interpreter for one fixed batch size."""

    def __init__(self, path: str, batch: int, num_threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.batch = batch
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ArtifactError(f"{path}: expected one input and one output tensor")
        self.input_index = int(inp[0]["index"])
        self.output_index = int(out[0]["index"])
        self.input_shape = tuple(int(d) for d in inp[0]["shape"])

    def run(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        out: np.ndarray = self.interpreter.get_tensor(self.output_index)
        return out.reshape(self.batch, -1)[:, 0]


class LiteRTForecaster:
    """Runs an artifact's LiteRT exports on batches of any size."""

    def __init__(self, runners: dict[int, Any], window_len: int, n_features: int) -> None:
        self._runners = dict(sorted(runners.items()))
        self._sizes = list(self._runners)
        self.window_len = window_len
        self.n_features = n_features
        self.calls = 0

    @classmethod
    def from_artifact(cls, artifact: Artifact, num_threads: int = 1) -> LiteRTForecaster:
        """Load every exported batch size of `artifact` (only `.tflite` files inside it)."""
        runners: dict[int, _Runner] = {}
        expected = (artifact.window_len, artifact.n_features)
        for batch in artifact.batch_sizes:
            path = artifact.tflite_path(batch)
            try:
                runner = _Runner(str(path), batch, num_threads)
            except (ValueError, RuntimeError) as exc:
                raise ArtifactError(f"{path} is not a loadable LiteRT model: {exc}") from None
            if runner.input_shape != (batch, *expected):
                raise ArtifactError(
                    f"{path} takes input {runner.input_shape}, artifact.json says "
                    f"{(batch, *expected)}"
                )
            runners[batch] = runner
        return cls(runners, artifact.window_len, artifact.n_features)

    def _plan(self, n: int) -> list[tuple[int, int]]:
        """Cut `n` windows into ``(batch_size, rows)`` runs of exported sizes."""
        plan: list[tuple[int, int]] = []
        largest = self._sizes[-1]
        while n >= largest:
            plan.append((largest, largest))
            n -= largest
        if n == 0:
            return plan
        fitting = next(size for size in self._sizes if size >= n)
        plan.append((fitting, n))
        return plan

    def predict(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        n = windows.shape[0]
        out = np.empty(n, dtype=np.float32)
        start = 0
        for size, rows in self._plan(n):
            chunk = windows[start : start + rows]
            if rows < size:
                padded = np.zeros((size, *windows.shape[1:]), dtype=np.float32)
                padded[:rows] = chunk
                chunk = padded
            out[start : start + rows] = self._runners[size].run(chunk)[:rows]
            self.calls += 1
            start += rows
        return out
