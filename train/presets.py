"""Training presets: the notebook's `seed` model, reproduced exactly, and the better `default`.

A preset is data (hyper-parameters) plus `build_model`, which makes its Keras model. Models take
TRANSFORMED features (daemon.features.apply_transform(preset.transform, raw)); anything else
(gain removal, standardization) is a layer inside the model so the daemon feeds the same input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

import keras
import numpy as np

from daemon.constants import N_BINS
from daemon.errors import DataError

POWER_MEAN: Final = "power_mean"
LOG10_POWER_MEAN: Final = "log10_power_mean"


@dataclass(frozen=True)
class Preset:
    """Everything that decides how a model is built and trained."""

    name: str
    transform: str
    """Feature transform the model's input expects (recorded in run.json and the metadata)."""
    output: str
    """'softmax' (2 units, classes [normal, anomalous]) or 'sigmoid' (1 unit = P(anomalous))."""
    hidden_units: int
    dropout: float
    gain_invariant: bool
    """Subtract each window's mean log power across bins inside the model: a microphone gain
    change multiplies power by g^2, i.e. adds one constant to every log bin, which this removes."""
    standardize: bool
    """A Normalization layer (per-bin mean and variance) adapted on the training split."""
    class_weights: bool
    """Weight classes inversely to their window counts in the training split."""
    batch_size: int
    epochs: int
    """Epochs to train; with early stopping, the most it may train."""
    patience: int | None
    """Early stopping patience in epochs on validation loss; None trains all epochs."""
    validation_fraction: float
    """Share of training FILES carved off as validation part (early stopping, threshold)."""
    tune_threshold: bool
    """Choose the decision threshold on the validation part (best balanced accuracy)."""
    learning_rate: float
    loss: str
    optimizer: str = "adam"
    fixed_threshold: float = 0.5

    def replace(self, **changes: object) -> Preset:
        """A copy with some fields changed (used by --epochs and ablations)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


SEED: Final = Preset(
    name="seed",
    transform=POWER_MEAN,
    output="softmax",
    hidden_units=16,
    dropout=0.3,
    gain_invariant=False,
    standardize=False,
    class_weights=False,
    batch_size=25,
    epochs=50,
    patience=None,
    validation_fraction=0.0,
    tune_threshold=False,
    learning_rate=0.001,  # keras' adam default, as the notebook's optimizer="adam"
    loss="binary_crossentropy",
)
"""The notebook: raw power means -> Dense(16, relu) -> Dropout(0.3) -> Dense(2, softmax)."""

DEFAULT: Final = Preset(
    name="default",
    transform=LOG10_POWER_MEAN,
    output="sigmoid",
    hidden_units=16,
    dropout=0.3,
    gain_invariant=True,
    standardize=True,
    class_weights=True,
    batch_size=25,
    epochs=300,
    patience=30,
    validation_fraction=0.2,
    tune_threshold=False,
    learning_rate=0.001,
    loss="binary_crossentropy",
)
"""log10 features, gain removed and standardized inside the model, class weights, early stopping
and a threshold tuned on a validation part of the training files (choices measured with --cv)."""

PRESETS: Final = {"seed": SEED, "default": DEFAULT}


def get(name: str) -> Preset:
    """The preset of that name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise DataError(f"unknown preset {name!r}: choose {' or '.join(PRESETS)}") from None


def build_model(preset: Preset, train_inputs: np.ndarray) -> keras.Model:
    """A compiled Keras model for `preset`; `train_inputs` (transformed training features) adapt
    the standardization layer and are not used otherwise."""
    if preset.name == SEED.name:
        # Exactly the notebook's Sequential stack (layer types, units, activations, dropout).
        model: keras.Model = keras.Sequential(
            [
                keras.Input(shape=(N_BINS,), name="features"),
                keras.layers.Dense(preset.hidden_units, activation="relu"),
                keras.layers.Dropout(preset.dropout),
                keras.layers.Dense(2, activation="softmax"),
            ],
            name="seed",
        )
    else:
        model = _build_default(preset, train_inputs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=preset.learning_rate),
        loss=preset.loss,
        metrics=["accuracy"],
    )
    return model


def _build_default(preset: Preset, train_inputs: np.ndarray) -> keras.Model:
    inputs = keras.Input(shape=(N_BINS,), name="features")
    x = inputs
    if preset.gain_invariant:
        if preset.transform != LOG10_POWER_MEAN:
            raise DataError("gain_invariant needs the log10_power_mean transform")
        # Mean over bins as a frozen Dense(1) and a broadcast Subtract: built-in layers only, so
        # the saved model loads without custom code and converts to int8 TFLite.
        mean = keras.layers.Dense(
            1,
            use_bias=False,
            trainable=False,
            kernel_initializer=keras.initializers.Constant(1.0 / N_BINS),
            name="bin_mean",
        )(x)
        x = keras.layers.Subtract(name="gain_removed")([x, mean])
    if preset.standardize:
        norm = keras.layers.Normalization(axis=-1, name="standardize")
        before = keras.Model(inputs, x)
        norm.adapt(np.asarray(before.predict(train_inputs, verbose=0), np.float32))
        x = norm(x)
    x = keras.layers.Dense(preset.hidden_units, activation="relu", name="hidden")(x)
    if preset.dropout > 0:
        x = keras.layers.Dropout(preset.dropout, name="dropout")(x)
    if preset.output == "sigmoid":
        outputs = keras.layers.Dense(1, activation="sigmoid", name="p_anomalous")(x)
    else:
        outputs = keras.layers.Dense(2, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name=preset.name)
