"""Keras forecasters: a (stacked, optionally bidirectional) recurrent encoder and one output.

Keras is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

CELLS = ("lstm", "gru", "simplernn")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to rebuild the network (e.g. at a fixed batch size for export)."""

    window_len: int
    n_features: int
    cell: str = "lstm"
    units: tuple[int, ...] = (32,)
    bidirectional: bool = False

    def as_json(self) -> dict[str, object]:
        """The artifact's ``model`` section."""
        return {
            "cell": self.cell,
            "units": list(self.units),
            "layers": len(self.units),
            "bidirectional": self.bidirectional,
        }


def resolve_units(units: Sequence[int], layers: int) -> tuple[int, ...]:
    """Units per layer from ``--units`` (one number or one per layer) and ``--layers``.

    >>> resolve_units((32,), 2), resolve_units((32, 16), 1), resolve_units((32, 16), 2)
    ((32, 32), (32, 16), (32, 16))
    """
    units = tuple(int(u) for u in units)
    if not units or any(u < 1 for u in units):
        raise ValueError("units must be positive integers")
    if layers < 1:
        raise ValueError("layers must be at least 1")
    if len(units) == 1:
        return units * layers
    if layers not in (1, len(units)):
        raise ValueError(f"{len(units)} unit sizes given for {layers} layers")
    return units


def build_model(spec: ModelSpec, batch_size: int | None = None) -> keras.Model:
    """The forecaster: input ``(W, F)``, output ``(1,)``, the next scaled value.

    `batch_size` fixes the batch dimension; the LiteRT export needs that for recurrent
    layers (their while loop needs static shapes to convert).
    """
    import keras

    layer_class = {
        "lstm": keras.layers.LSTM,
        "gru": keras.layers.GRU,
        "simplernn": keras.layers.SimpleRNN,
    }[spec.cell]
    inputs = keras.Input(shape=(spec.window_len, spec.n_features), batch_size=batch_size)
    hidden = inputs
    for i, units in enumerate(spec.units):
        last = i == len(spec.units) - 1
        # Layer names are fixed so that fixed-batch copies line up weight for weight.
        layer = layer_class(units, return_sequences=not last, name=f"{spec.cell}_{i}")
        if spec.bidirectional:
            # Reads the past window both ways; still causal: it never sees the target.
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")
        hidden = layer(hidden)
    outputs = keras.layers.Dense(1, name="forecast")(hidden)
    return keras.Model(inputs, outputs, name=f"iotad_{spec.cell}")
