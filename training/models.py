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
    residual: bool = True
    """Forecast = last value + learned change (see `build_model`)."""

    def as_json(self) -> dict[str, object]:
        """The artifact's ``model`` section."""
        return {
            "cell": self.cell,
            "units": list(self.units),
            "layers": len(self.units),
            "bidirectional": self.bidirectional,
            "residual": self.residual,
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


def _last_value(inputs: keras.KerasTensor, spec: ModelSpec) -> keras.KerasTensor:
    """The window's last scaled value ``(B, 1)``, from built-in layers only.

    No Lambda or custom layer: the model must load with ``safe_mode=True`` anywhere and
    convert to LiteRT as plain slices and transposes.
    """
    import keras

    w, f = spec.window_len, spec.n_features
    x = inputs
    if f > 1:  # keep feature 0 ("value"): crop the feature axis after moving it to axis 1
        x = keras.layers.Permute((2, 1), name="features_first")(x)
        x = keras.layers.Cropping1D((0, f - 1), name="value_feature")(x)
        x = keras.layers.Permute((2, 1), name="steps_first")(x)
    x = keras.layers.Cropping1D((w - 1, 0), name="last_step")(x)
    return keras.layers.Reshape((1,), name="last_value")(x)


def build_model(spec: ModelSpec, batch_size: int | None = None) -> keras.Model:
    """The forecaster: input ``(W, F)``, output ``(1,)``, the next scaled value.

    With `spec.residual` the network learns the *change* from the last value, so even an
    untrained model is close to the naive "repeat the last value" forecast and training
    only has to learn what is predictable beyond it (trends, cycles, the approach to a
    setpoint). On slowly varying plant sensors (examples/generate.py) this beat the naive
    forecast where forecasting the value itself did not, in the same training time.
    (A zero-initialised output layer, i.e. starting *exactly* at naive, learned slower.)

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
    if not spec.residual:
        outputs = keras.layers.Dense(1, name="forecast")(hidden)
    else:
        change = keras.layers.Dense(1, name="change")(hidden)
        outputs = keras.layers.Add(name="forecast")([_last_value(inputs, spec), change])
    return keras.Model(inputs, outputs, name=f"iotad_{spec.cell}")
