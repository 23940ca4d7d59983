"""`FeatureSpec`: the single source of truth of what a model consumes.

Export writes it into the model metadata (``features`` and ``window_s``); the daemon, the
Windower, `corona-train` featurize/evaluate and the feature cache read it from there. The
config cannot contradict it: `resolve` turns a disagreement into an error naming both values.

The raw feature vector of one window (what `daemon.analyse.model.Model.score` takes) is its 513
power
row means followed, when the spec has a physics block, by the physics values in
``physics.names`` order (`daemon.analyse.physics.NAMES`) at the resolved line frequency.
`model_input`
turns raw vectors into the model's input: the named transform on the row means, and the
physics values in bels (dB / 10) so that one int8 input scale fits both parts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from daemon.analyse import physics as phys
from daemon.analyse.features import TRANSFORMS, apply_transform
from daemon.constants import HOP_LENGTH, N_FFT, SAMPLE_RATE, WINDOW_S
from daemon.errors import ConfigError, ModelError

PHYSICS_INPUT_SCALE: Final[Mapping[str, float]] = {
    "mod_db": 0.1,
    "mod_depth": 1.0,
    "hum_db": 0.1,
    "sub_db": 0.1,
    "crackle_db": 0.1,
}
"""Model input = physics value x scale: dB become bels (about -1..6), the depth stays a ratio."""


@dataclass(frozen=True)
class PhysicsSpec:
    """The physics block a model consumes: its definition's version, line setting, names."""

    version: int = phys.VERSION
    line_hz: phys.LineSetting = "auto"
    names: tuple[str, ...] = phys.NAMES

    def to_metadata(self) -> dict[str, Any]:
        """The ``features.physics`` object of the model metadata."""
        return {"version": self.version, "line_hz": self.line_hz, "names": list(self.names)}


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that decides a model's input, from audio rate to the physics block."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    window: str = "hann"
    center: bool = True
    transform: str = "log10_power_mean"
    window_s: float = WINDOW_S
    physics: PhysicsSpec | None = dataclasses.field(default_factory=PhysicsSpec)
    """None for models trained before physics features (row means only)."""

    @property
    def n_bins(self) -> int:
        """Row means per window."""
        return self.n_fft // 2 + 1

    @property
    def width(self) -> int:
        """Length of one raw feature vector (and of the model's input)."""
        return self.n_bins + (len(self.physics.names) if self.physics else 0)

    @property
    def line_setting(self) -> phys.LineSetting:
        """The line frequency physics values are measured at ("auto" without a physics block)."""
        return self.physics.line_hz if self.physics else "auto"

    def replace(self, **changes: Any) -> FeatureSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # --- vectors ------------------------------------------------------------------------------
    def vector(
        self, row_means: npt.ArrayLike, measurement: phys.Measurement | None
    ) -> npt.NDArray[np.float32]:
        """The raw feature vector of one window (row means, then the physics values)."""
        means = np.asarray(row_means, dtype=np.float32)
        if self.physics is None:
            return means
        if measurement is None:
            raise ModelError("features: this model needs the physics block, none was measured")
        values = measurement.select(self.line_setting).values(self.physics.names)
        return np.concatenate([means, np.asarray(values, dtype=np.float32)])

    def vectors(
        self, row_means: npt.ArrayLike, measurements: npt.ArrayLike
    ) -> npt.NDArray[np.float32]:
        """Raw vectors of a batch: row means (N, n_bins) and `Measurement.to_array` rows (N, 7)."""
        means = np.asarray(row_means, dtype=np.float32)
        if self.physics is None:
            return means
        rows = np.asarray(measurements, dtype=np.float64).reshape(len(means), -1)
        names = self.physics.names
        values = [
            phys.Measurement.from_array(row).select(self.line_setting).values(names) for row in rows
        ]
        block = np.asarray(values, dtype=np.float32).reshape(len(means), len(self.physics.names))
        return np.concatenate([means, block], axis=1)

    def model_input(self, vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Raw vectors (width,) or (N, width) -> the model's float32 input of the same shape."""
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim not in (1, 2) or array.shape[-1] != self.width:
            raise ModelError(
                f"features: expected vectors of {self.width} values, got shape {array.shape}"
            )
        means = apply_transform(self.transform, array[..., : self.n_bins])
        if self.physics is None:
            return means
        scale = np.asarray([PHYSICS_INPUT_SCALE[n] for n in self.physics.names], np.float32)
        return np.concatenate([means, array[..., self.n_bins :] * scale], axis=-1)

    # --- metadata -----------------------------------------------------------------------------
    def to_metadata(self) -> dict[str, Any]:
        """The metadata ``features`` object (``window_s`` is a top-level field beside it)."""
        doc: dict[str, Any] = {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "window": self.window,
            "center": self.center,
            "transform": self.transform,
        }
        if self.physics is not None:
            doc["physics"] = self.physics.to_metadata()
        return doc

    def key_text(self) -> str:
        """A stable text of what the features depend on, for cache keys."""
        return repr(self)

    @classmethod
    def from_metadata(cls, features: object, window_s: object) -> FeatureSpec:
        """Parse a metadata ``features`` object; ValueError names the field at fault."""
        if not isinstance(features, Mapping):
            raise ValueError("features must be an object")
        required = ("sample_rate", "n_fft", "hop_length", "window", "center", "transform")
        missing = [f"features.{key}" for key in required if key not in features]
        if missing:
            raise ValueError(f"required field(s) missing: {', '.join(missing)}")
        expected = {
            "sample_rate": SAMPLE_RATE,
            "window": "hann",
            "center": True,
        }
        for key, want in expected.items():
            got = features[key]
            if type(got) is not type(want) or got != want:
                raise ValueError(f"features.{key} is {got!r}, the daemon computes {want!r}")
        n_fft, hop_length = features["n_fft"], features["hop_length"]
        if not _is_int(n_fft) or not 16 <= n_fft <= 65536:
            raise ValueError(f"features.n_fft is {n_fft!r}, expected an integer 16-65536")
        if not _is_int(hop_length) or not 1 <= hop_length <= n_fft:
            raise ValueError(f"features.hop_length is {hop_length!r}, expected 1-n_fft")
        transform = features["transform"]
        if not isinstance(transform, str) or transform not in TRANSFORMS:
            known = ", ".join(sorted(TRANSFORMS))
            raise ValueError(f"features.transform {transform!r} is unknown (known: {known})")
        if not isinstance(window_s, int | float) or not is_number(window_s):
            raise ValueError(f"window_s is {window_s!r}, expected a positive number of seconds")
        if not 0 < window_s <= 3600:
            raise ValueError(f"window_s is {window_s!r}, expected 0-3600 seconds")
        block = features.get("physics")
        return cls(
            n_fft=int(n_fft),
            hop_length=int(hop_length),
            transform=transform,
            window_s=float(window_s),
            physics=None if block is None else _physics_from_metadata(block),
        )


def _physics_from_metadata(block: object) -> PhysicsSpec:
    if not isinstance(block, Mapping):
        raise ValueError("features.physics must be an object or absent")
    version = block.get("version")
    if version != phys.VERSION or not _is_int(version):
        raise ValueError(
            f"features.physics.version is {version!r}, this daemon computes version"
            f" {phys.VERSION} (re-export the model with this release's corona-train)"
        )
    try:
        line = phys.check_line_setting(block.get("line_hz"), key="features.physics.line_hz")
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    names = block.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError("features.physics.names must be a non-empty list of names")
    unknown = [n for n in names if n not in phys.NAMES]
    if unknown or len(set(names)) != len(names):
        raise ValueError(
            f"features.physics.names {names!r}: each must be one of {', '.join(phys.NAMES)}, once"
        )
    return PhysicsSpec(version=phys.VERSION, line_hz=line, names=tuple(names))


def resolve(
    spec: FeatureSpec,
    *,
    model_name: str,
    config: Mapping[str, Any],
) -> FeatureSpec:
    """The spec the daemon runs: the model's, with the config's line frequency where allowed.

    ``config`` holds the configured values (None = take the model's): ``n_fft``,
    ``hop_length``, ``window``, ``center``, ``window_s`` must equal the model's when set;
    ``line_hz`` may fix ``auto`` to 50 or 60 but not contradict a fixed one; with
    ``force_length`` true, ``window_s`` replaces the model's (tests, experiments).
    Raises ConfigError naming the key and both values.
    """
    if config.get("force_length") and config.get("window_s") is not None:
        spec = spec.replace(window_s=float(config["window_s"]))
    keys = {
        "features.n_fft": ("n_fft", spec.n_fft),
        "features.hop_length": ("hop_length", spec.hop_length),
        "features.window": ("window", spec.window),
        "features.center": ("center", spec.center),
        "window.length_s": ("window_s", spec.window_s),
    }
    for key, (name, model_value) in keys.items():
        value = config.get(name)
        if value is not None and value != model_value:
            raise ConfigError(
                f"{key} is {value!r} in the config, but model {model_name} was trained with"
                f" {model_value!r}: remove the key (the model decides) or use a matching model"
                + (" (or set window.force_length: true)" if name == "window_s" else "")
            )
    line = config.get("line_hz")
    if spec.physics is None or line is None or line == "auto":
        return spec
    if spec.physics.line_hz not in ("auto", line):
        raise ConfigError(
            f"features.line_hz is {line!r} in the config, but model {model_name} was trained"
            f" at {spec.physics.line_hz!r} Hz"
        )
    return spec.replace(physics=dataclasses.replace(spec.physics, line_hz=line))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float that is not a bool (JSON true is not 1 here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
