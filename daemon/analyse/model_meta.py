"""Model metadata (NAME.json beside NAME.tflite): read it and check every field.

The ``features`` block and ``window_s`` become the model's `FeatureSpec`, which decides how the
daemon cuts and featurizes audio for it (`daemon.analyse.featurespec.resolve` checks the config
against
it). Every refusal is a ModelError whose message names the file and the field, e.g.
`model corona-demo.json: features.physics.version is 7, this daemon computes version 1`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from daemon.analyse.featurespec import FeatureSpec, is_number
from daemon.errors import ModelError

FORMAT: Final = "corona-monitor-model/1"
"""The only metadata format this runner understands."""

ANOMALOUS: Final = "anomalous"
"""The class whose probability Model.score returns."""

OUTPUTS: Final = ("softmax", "sigmoid")
KINDS: Final = ("classifier", "one-class")
"""classifier: trained on normal and anomalous windows, the score is P(anomalous); one-class:
trained on normal windows only, the score is the distance from them mapped to [0, 1]
(`daemon.analyse.novelty`), 0.5 at the threshold. Metadata without `kind` is a classifier."""
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
_SHA256_HEX_CHARS: Final = 64
_SOFTMAX_CLASSES: Final = 2


@dataclass(frozen=True)
class ModelMetadata:
    """The validated fields the runner uses, plus the full parsed document in `raw`."""

    name: str
    sha256: str
    classes: tuple[str, ...]
    output: str
    spec: FeatureSpec
    """What the model consumes (features block and window_s of the metadata)."""
    threshold: float
    quantization: str
    raw: dict[str, Any]
    kind: str = "classifier"

    @property
    def transform(self) -> str:
        """The named transform of the row means (`daemon.analyse.features.TRANSFORMS`)."""
        return self.spec.transform

    @property
    def window_s(self) -> float:
        """Seconds of audio per scored window the model was trained on."""
        return self.spec.window_s

    @property
    def anomalous_index(self) -> int:
        """Column of the score in the model's output (`score_column`)."""
        return score_column(self.classes, self.output)


def score_column(classes: Sequence[str], output: str) -> int:
    """Which output column is the score: P(anomalous)'s in a softmax over `classes`, the only
    one of a sigmoid. The one rule fit, export and the runner all read the output by."""
    return list(classes).index(ANOMALOUS) if output == "softmax" else 0


def document(
    *,
    name: str,
    sha256: str,
    classes: Sequence[str],
    output: str,
    spec: FeatureSpec,
    threshold: float,
    quantization: str,
    trained_on: Mapping[str, Any],
    created: str,
    kind: str | None = None,
    one_class: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The NAME.json document, the writer's side of `validate` (which reads it back): export
    builds its metadata here and nowhere else."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "created": created,
        "sha256": sha256,
        "classes": list(classes),
        "output": output,
        "features": spec.to_metadata(),
        "window_s": spec.window_s,
        "threshold": float(threshold),
        "quantization": quantization,
        "metrics": dict(metrics or {}),
        "trained_on": dict(trained_on),
    }
    if kind is not None:
        doc["kind"] = kind
    if one_class is not None:
        doc["one_class"] = dict(one_class)
    return doc


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


def validate(doc: Mapping[str, Any], *, source: str) -> ModelMetadata:
    """Check `doc` field by field; `source` (the json file name) starts every error message."""
    try:
        missing = [field for field in REQUIRED_FIELDS if field not in doc]
        if missing:
            raise _InvalidFieldError(f"required field(s) missing: {', '.join(missing)}")
        if doc["format"] != FORMAT:
            raise _InvalidFieldError(f"format is {doc['format']!r}, this daemon reads {FORMAT!r}")
        try:
            spec = FeatureSpec.from_metadata(doc["features"], doc["window_s"])
        except ValueError as exc:
            raise _InvalidFieldError(str(exc)) from None
        classes, output = _check_classes(doc["classes"], doc["output"])
        _check_scalars(doc)
    except _InvalidFieldError as exc:
        raise ModelError(f"model {source}: {exc}") from None
    return ModelMetadata(
        name=doc["name"],
        sha256=doc["sha256"].lower(),
        classes=classes,
        output=output,
        spec=spec,
        threshold=float(doc["threshold"]),
        quantization=doc["quantization"],
        raw=dict(doc),
        kind=doc.get("kind", "classifier"),
    )


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
    """threshold, quantization, sha256, name (window_s is the FeatureSpec's)."""
    threshold = doc["threshold"]
    if not is_number(threshold) or not 0.0 <= threshold <= 1.0:
        raise _InvalidFieldError(f"threshold is {threshold!r}, expected a probability in [0, 1]")
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
    kind = doc.get("kind", "classifier")
    if kind not in KINDS:
        raise _InvalidFieldError(f"kind is {kind!r}, expected one of {', '.join(KINDS)}")
