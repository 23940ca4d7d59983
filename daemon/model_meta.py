"""Model metadata (NAME.json beside NAME.tflite): read it, check it against the daemon's settings.

Every refusal is a ModelError whose message names the file and the field, e.g.
`model corona-demo.json: features.n_fft is 2048, the daemon computes 1024`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from daemon.constants import HOP_LENGTH, N_FFT, SAMPLE_RATE
from daemon.errors import ModelError
from daemon.features import TRANSFORMS

FORMAT: Final = "corona-monitor-model/1"
"""The only metadata format this runner understands."""

ANOMALOUS: Final = "anomalous"
"""The class whose probability Model.score returns."""

OUTPUTS: Final = ("softmax", "sigmoid")
QUANTIZATIONS: Final = ("int8", "float16", "none")

REQUIRED_FIELDS: Final = (
    "format",
    "name",
    "created",
    "sha256",
    "classes",
    "output",
    "features",
    "window_s",
    "threshold",
    "quantization",
    "metrics",
    "trained_on",
)
FEATURE_FIELDS: Final = ("sample_rate", "n_fft", "hop_length", "window", "center", "transform")
CHECKED_FEATURE_FIELDS: Final = ("sample_rate", "n_fft", "hop_length", "window", "center")
"""Settings the daemon computes itself and the model must agree with (transform is the model's)."""

DEFAULT_FEATURES: Final[Mapping[str, Any]] = {
    "sample_rate": SAMPLE_RATE,
    "n_fft": N_FFT,
    "hop_length": HOP_LENGTH,
    "window": "hann",
    "center": True,
}
"""What daemon.features computes when the config does not say otherwise."""

_SHA256_HEX_CHARS: Final = 64
_SOFTMAX_CLASSES: Final = 2


@dataclass(frozen=True)
class ModelMetadata:
    """The validated fields the runner uses, plus the full parsed document in `raw`."""

    name: str
    sha256: str
    classes: tuple[str, ...]
    output: str
    transform: str
    threshold: float
    window_s: float
    quantization: str
    raw: dict[str, Any]

    @property
    def anomalous_index(self) -> int:
        """Column of P(anomalous) in a softmax output."""
        return self.classes.index(ANOMALOUS)


def _expected(settings: Mapping[str, Any] | object, key: str) -> Any:
    """One feature setting from a mapping or a settings object (e.g. daemon.config.FeatureSettings).

    A key the settings do not carry falls back to DEFAULT_FEATURES (the config keeps sample_rate
    in its audio section, fixed at SAMPLE_RATE).
    """
    if isinstance(settings, Mapping):
        return settings.get(key, DEFAULT_FEATURES[key])
    return getattr(settings, key, DEFAULT_FEATURES[key])


def read(json_path: Path) -> dict[str, Any]:
    """Parse NAME.json into a dict; a missing or unparsable file is a ModelError naming it."""
    try:
        text = json_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(
            f"model metadata {json_path} is missing (expected beside the .tflite)"
        ) from None
    except OSError as exc:
        raise ModelError(f"model metadata {json_path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ModelError(f"model metadata {json_path} is not UTF-8 text: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"model metadata {json_path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ModelError(f"model metadata {json_path} is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ModelError(f"model metadata {json_path} must hold a JSON object")
    return doc


class _InvalidFieldError(Exception):
    """One field is wrong; validate() prefixes the file name."""


def validate(
    doc: Mapping[str, Any],
    *,
    source: str,
    expected_features: Mapping[str, Any] | object | None = None,
) -> ModelMetadata:
    """Check `doc` field by field; `source` (the json file name) starts every error message.

    `expected_features` holds sample_rate, n_fft, hop_length, window, center as the daemon
    computes them (a mapping or an object with those attributes, e.g. the config's
    FeatureSettings); None, or a key it lacks, means DEFAULT_FEATURES.
    """
    try:
        missing = [field for field in REQUIRED_FIELDS if field not in doc]
        if missing:
            raise _InvalidFieldError(f"required field(s) missing: {', '.join(missing)}")
        if doc["format"] != FORMAT:
            raise _InvalidFieldError(f"format is {doc['format']!r}, this daemon reads {FORMAT!r}")
        transform = _check_features(
            doc["features"], DEFAULT_FEATURES if expected_features is None else expected_features
        )
        classes, output = _check_classes(doc["classes"], doc["output"])
        _check_scalars(doc)
    except _InvalidFieldError as exc:
        raise ModelError(f"model {source}: {exc}") from None
    return ModelMetadata(
        name=doc["name"],
        sha256=doc["sha256"].lower(),
        classes=classes,
        output=output,
        transform=transform,
        threshold=float(doc["threshold"]),
        window_s=float(doc["window_s"]),
        quantization=doc["quantization"],
        raw=dict(doc),
    )


def _check_features(features: object, expected: Mapping[str, Any] | object) -> str:
    """The feature settings must equal the daemon's; returns the (known) transform name."""
    if not isinstance(features, Mapping):
        raise _InvalidFieldError("features must be an object")
    missing = [f"features.{field}" for field in FEATURE_FIELDS if field not in features]
    if missing:
        raise _InvalidFieldError(f"required field(s) missing: {', '.join(missing)}")
    for field in CHECKED_FEATURE_FIELDS:
        want, got = _expected(expected, field), features[field]
        # bool is an int in Python: compare types too so `center: 1` is not taken for true.
        same_kind = type(got) is type(want) or (_is_number(got) and _is_number(want))
        if not same_kind or got != want:
            raise _InvalidFieldError(f"features.{field} is {got!r}, the daemon computes {want!r}")
    transform = features["transform"]
    if not isinstance(transform, str) or transform not in TRANSFORMS:
        known = ", ".join(sorted(TRANSFORMS))
        raise _InvalidFieldError(f"features.transform {transform!r} is unknown (known: {known})")
    return str(transform)


def _check_classes(classes: object, output: object) -> tuple[tuple[str, ...], str]:
    if (
        not isinstance(classes, list)
        or not all(isinstance(c, str) for c in classes)
        or ANOMALOUS not in classes
    ):
        raise _InvalidFieldError(
            f"classes is {classes!r}, it must be a list of names including {ANOMALOUS!r}"
        )
    if output not in OUTPUTS:
        raise _InvalidFieldError(f"output is {output!r}, expected one of {', '.join(OUTPUTS)}")
    if output == "softmax" and len(classes) != _SOFTMAX_CLASSES:
        raise _InvalidFieldError(f"classes has {len(classes)} entries, a softmax model needs 2")
    return tuple(classes), str(output)


def _check_scalars(doc: Mapping[str, Any]) -> None:
    """threshold, window_s, quantization, sha256, name."""
    threshold = doc["threshold"]
    if not _is_number(threshold) or not 0.0 <= threshold <= 1.0:
        raise _InvalidFieldError(f"threshold is {threshold!r}, expected a probability in [0, 1]")
    window_s = doc["window_s"]
    if not _is_number(window_s) or not window_s > 0:
        raise _InvalidFieldError(f"window_s is {window_s!r}, expected a positive number of seconds")
    quantization = doc["quantization"]
    if quantization not in QUANTIZATIONS:
        raise _InvalidFieldError(
            f"quantization is {quantization!r}, expected one of {', '.join(QUANTIZATIONS)}"
        )
    sha256 = doc["sha256"]
    if (
        not isinstance(sha256, str)
        or len(sha256) != _SHA256_HEX_CHARS
        or any(c not in "0123456789abcdef" for c in sha256.lower())
    ):
        raise _InvalidFieldError(f"sha256 is {sha256!r}, expected 64 hex digits")
    name = doc["name"]
    if not isinstance(name, str) or not name:
        raise _InvalidFieldError(f"name is {name!r}, expected a non-empty string")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
