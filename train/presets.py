"""Training presets: the notebook's `seed` model, reproduced exactly, and the better `default`.

A preset is data (hyper-parameters) plus `build_model`, which makes its Keras model. Models take
`FeatureSpec.model_input` of raw vectors (row means transformed, physics values in bels); any
selection, pooling, gain removal or standardization is a layer inside the model, so the daemon
feeds every model the same input and the model keeps what it was trained on.

Presets: `seed` (the notebook), `rowmeans` (the 513 log row means only: the default before the
physics block, kept for comparison), `default` (the physics block) and `bands` (the physics
block with coarse gain-free spectrum bands).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final, Literal

import keras
import numpy as np

from daemon.analyse.featurespec import FeatureSpec, PhysicsSpec
from daemon.analyse.physics import NAMES, LineSetting
from daemon.constants import N_BINS, SAMPLE_RATE
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
    physics: bool = False
    """Whether the model consumes the physics block (FeatureSpec.physics)."""
    physics_names: tuple[str, ...] = NAMES
    """Which physics values it consumes (a subset of daemon.analyse.physics.NAMES, in that
    order)."""
    spectrum: Literal["bins", "bands", "none"] = "bins"
    """How the row means enter: all 513 bins, `bands` log-spaced band levels, or not at all."""
    bands: int = 8
    """Number of log-spaced bands (50 Hz-22 kHz) when spectrum is 'bands'."""
    eq_augment_db: float = 0.0
    """Training copies get a random smooth microphone response of up to +-this many dB
    (0 = none): the spectrum part must not learn one microphone's colour."""
    eq_copies: int = 0
    """Augmented copies per training window (with eq_augment_db > 0)."""
    l2: float = 0.0
    """L2 penalty on the hidden layer's weights."""

    def feature_spec(self, *, window_s: float, line_hz: LineSetting = "auto") -> FeatureSpec:
        """The FeatureSpec a model of this preset consumes."""
        physics = PhysicsSpec(line_hz=line_hz, names=self.physics_names) if self.physics else None
        return FeatureSpec(transform=self.transform, window_s=window_s, physics=physics)

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

_ROWMEANS_DEFAULT: Final = Preset(
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

ROWMEANS: Final = _ROWMEANS_DEFAULT.replace(name="rowmeans")
"""The default before the physics block (513 log row means only), kept for comparison."""

DEFAULT: Final = _ROWMEANS_DEFAULT.replace(
    physics=True,
    physics_names=("mod_db", "hum_db", "sub_db", "crackle_db"),
    spectrum="none",
    dropout=0.1,
    patience=None,
    epochs=150,
)
"""The physics block alone (line-locked modulation, hum, sub-harmonic lines, crackle) into
Dense 16 -> Dense 1, trained to the end (no early stopping, no L2, light dropout).

Chosen on audio the training never touched (bench/robustness.py, README): with spectrum bands
beside it the model transferred worse to the independent simulator (file accuracy 0.83 vs
0.87); with `mod_depth` (which falls as unmodulated background rises) the threshold carried
over worse (0.78 vs 0.80); early stopping on a noisy validation part left the output so flat
that a 10 dB line-locked modulation scored below 0.5."""

BANDS: Final = DEFAULT.replace(
    name="bands", spectrum="bands", bands=8, eq_augment_db=6.0, eq_copies=2
)
"""DEFAULT plus 8 log-spaced gain-free band levels, with a random microphone response on
training copies (an ablation: how much the spectrum adds, or costs, on other sources)."""

PRESETS: Final = {"seed": SEED, "default": DEFAULT, "bands": BANDS, "rowmeans": ROWMEANS}


def get(name: str) -> Preset:
    """The preset of that name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise DataError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None


def build_model(preset: Preset, spec: FeatureSpec, train_inputs: np.ndarray) -> keras.Model:
    """A compiled Keras model for `preset` on `spec`'s input; `train_inputs` (model inputs of the
    training split) adapt the standardization layer and are not used otherwise."""
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
        model = _build_default(preset, spec, train_inputs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=preset.learning_rate),
        loss=preset.loss,
        metrics=["accuracy"],
    )
    return model


def band_matrix(spec: FeatureSpec, bands: int, *, gain_free: bool) -> np.ndarray:
    """(spec.width, bands): each column averages the log row means of one log-spaced band
    (50 Hz to Nyquist, DC left out); gain_free subtracts the mean over bands, which removes a
    microphone gain (a constant added to every log bin). Physics rows are zero."""
    freqs = np.arange(spec.n_bins) * spec.sample_rate / spec.n_fft
    edges = np.geomspace(50.0, spec.sample_rate / 2, bands + 1)
    matrix = np.zeros((spec.width, bands), np.float32)
    for band in range(bands):
        inside = np.flatnonzero((freqs >= edges[band]) & (freqs < edges[band + 1]))
        if inside.size == 0:  # a band narrower than one bin takes the nearest bin
            inside = np.array([int(np.argmin(np.abs(freqs - edges[band])))])
        matrix[inside, band] = 1.0 / inside.size
    if gain_free:
        matrix[: spec.n_bins] -= matrix[: spec.n_bins].mean(axis=1, keepdims=True)
    return matrix


def _selection(width: int, columns: range) -> np.ndarray:
    matrix = np.zeros((width, len(columns)), np.float32)
    for out, column in enumerate(columns):
        matrix[column, out] = 1.0
    return matrix


def _frozen(matrix: np.ndarray, name: str) -> keras.layers.Dense:
    """A fixed linear map as a frozen Dense: built-in layers only, so int8 conversion works."""
    return keras.layers.Dense(
        matrix.shape[1],
        use_bias=False,
        trainable=False,
        kernel_initializer=keras.initializers.Constant(matrix),
        name=name,
    )


def _build_default(preset: Preset, spec: FeatureSpec, train_inputs: np.ndarray) -> keras.Model:
    inputs = keras.Input(shape=(spec.width,), name="features")
    if preset.spectrum == "bins":
        x = _all_bins(preset, spec, inputs, train_inputs)
    else:
        x = _projected(preset, spec, inputs, train_inputs)
    regularizer = keras.regularizers.L2(preset.l2) if preset.l2 > 0 else None
    x = keras.layers.Dense(
        preset.hidden_units, activation="relu", kernel_regularizer=regularizer, name="hidden"
    )(x)
    if preset.dropout > 0:
        x = keras.layers.Dropout(preset.dropout, name="dropout")(x)
    if preset.output == "sigmoid":
        outputs = keras.layers.Dense(1, activation="sigmoid", name="p_anomalous")(x)
    else:
        outputs = keras.layers.Dense(2, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name=preset.name)


def _all_bins(
    preset: Preset, spec: FeatureSpec, inputs: keras.KerasTensor, train_inputs: np.ndarray
) -> keras.KerasTensor:
    """All 513 log bins, gain removed, standardized per bin (the `rowmeans` preset's stack)."""
    x = inputs
    if spec.physics is not None:
        x = _frozen(_selection(spec.width, range(spec.n_bins)), "row_means")(x)
    if preset.gain_invariant:
        if preset.transform != LOG10_POWER_MEAN:
            raise DataError("gain_invariant needs the log10_power_mean transform")
        # Mean over bins as a frozen Dense(1) and a broadcast Subtract: built-in layers only.
        mean = _frozen(np.full((spec.n_bins, 1), 1.0 / spec.n_bins, np.float32), "bin_mean")(x)
        x = keras.layers.Subtract(name="gain_removed")([x, mean])
    if preset.standardize:
        norm = keras.layers.Normalization(axis=-1, name="standardize")
        before = keras.Model(inputs, x)
        norm.adapt(np.asarray(before.predict(train_inputs, verbose=0), np.float32))
        x = norm(x)
    return x


def _projected(
    preset: Preset, spec: FeatureSpec, inputs: keras.KerasTensor, train_inputs: np.ndarray
) -> keras.KerasTensor:
    """Band levels and physics values, gain removed and standardized, in two frozen Dense maps.

    1. ``pooled``: each band's mean log level and the physics columns (every kernel column
       holds one repeated weight, so int8 quantizes it exactly, per channel);
    2. ``standardized_inputs``: the mean band level subtracted (a microphone gain) and every
       value standardized on the training split, folded into a small kernel and bias.

    Not a Normalization layer: TFLite quantizes its mean vector with one scale for all
    features, which clipped features whose means differ (bels of hum beside band levels), and
    not one combined kernel: int8 rounded the gain subtraction's tiny weights to zero.
    """
    matrices = []
    n_bands = 0
    if preset.spectrum == "bands":
        matrices.append(band_matrix(spec, preset.bands, gain_free=False))
        n_bands = preset.bands
    if preset.physics:
        if spec.physics is None:
            raise DataError(f"preset {preset.name} needs the physics block in its FeatureSpec")
        matrices.append(_selection(spec.width, range(spec.n_bins, spec.width)))
    if not matrices:
        raise DataError(f"preset {preset.name} consumes nothing (no spectrum, no physics)")
    pooling = np.concatenate(matrices, axis=1).astype(np.float32)
    size = pooling.shape[1]
    affine = np.eye(size)
    if preset.gain_invariant and n_bands:
        affine[:n_bands, :n_bands] -= 1.0 / n_bands
    bias = np.zeros(size)
    if preset.standardize:
        projected = (np.asarray(train_inputs, np.float64) @ pooling) @ affine
        mean = projected.mean(axis=0)
        std = np.maximum(projected.std(axis=0), 1e-3)
        affine, bias = affine / std, -mean / std
    pooled = _frozen(pooling, "pooled")(inputs)
    return keras.layers.Dense(
        size,
        use_bias=True,
        trainable=False,
        kernel_initializer=keras.initializers.Constant(affine.astype(np.float32)),
        bias_initializer=keras.initializers.Constant(bias.astype(np.float32)),
        name="standardized_inputs",
    )(pooled)


def augment_eq(
    inputs: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    spec: FeatureSpec,
    max_db: float,
    copies: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training rows plus `copies` copies of each with a random microphone response.

    A response is a smooth curve over log frequency (a tilt, a low cut and a resonance, each up
    to +-max_db) added to the log10 row means (dB / 10); physics columns are ratios the curve
    does not change and stay as they are. Returns (inputs, labels, groups) with the copies.
    """
    if copies <= 0 or max_db <= 0 or spec.transform != LOG10_POWER_MEAN:
        return inputs, labels, groups
    freqs = np.maximum(np.arange(spec.n_bins) * spec.sample_rate / spec.n_fft, 20.0)
    octaves = np.log2(freqs / 1000.0)  # -5.6 .. +4.4
    out, out_labels, out_groups = [inputs], [labels], [groups]
    for _ in range(copies):
        n = inputs.shape[0]
        tilt = rng.uniform(-1, 1, (n, 1)) * max_db / 5.0 * octaves  # dB
        cut_hz = np.exp(rng.uniform(np.log(30.0), np.log(400.0), (n, 1)))
        low_cut = -max_db * rng.uniform(0, 1, (n, 1)) / (1.0 + (freqs / cut_hz) ** 2)
        centre = rng.uniform(0.0, np.log2(SAMPLE_RATE / 4 / 1000), (n, 1))  # 1 kHz-11 kHz
        peak = rng.uniform(-1, 1, (n, 1)) * max_db * np.exp(-0.5 * ((octaves - centre) / 0.5) ** 2)
        curve_bels = (tilt + low_cut + peak) / 10.0
        copy = inputs.copy()
        copy[:, : spec.n_bins] += curve_bels.astype(np.float32)
        out.append(copy)
        out_labels.append(labels)
        out_groups.append(groups)
    return np.concatenate(out), np.concatenate(out_labels), np.concatenate(out_groups)
