"""`corona-monitor clips export DIR`: the node's clips as a data set `corona-train` reads.

DIR/anomalous/*.flac and DIR/normal/*.flac, listed in DIR/manifest.csv (`file`, `label` and the
verdict's metadata: node, seq, window times, score, threshold, label_by, sensor, model); clips of
windows whose sensor was not ok (silent, flat, clipping: labelled normal by rule, not judged) go to
DIR/unlabelled/ and DIR/unlabelled.csv, for a person to listen to. The labels are the daemon's
verdicts: a starting point for a person to confirm, not ground truth. train.data reads the
manifest (it wins over the folders, whose discovery looks for WAV only).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from daemon.errors import DataError
from daemon.evidence.names import ClipName
from daemon.evidence.store import ClipStore, StoredClip, read_tags

LabelFilter = Literal["anomalous", "normal", "all"]
MANIFEST: Final = "manifest.csv"
UNLABELLED: Final = "unlabelled"
UNLABELLED_MANIFEST: Final = "unlabelled.csv"
COLUMNS: Final = (
    "file",
    "label",
    "node",
    "seq",
    "window_start",
    "window_end",
    "score",
    "threshold",
    "label_by",
    "sensor",
    "model_name",
    "model_sha256",
    "kept_as",
)


@dataclass(frozen=True)
class ExportResult:
    labelled: int
    unlabelled: int
    vanished: int
    """Clips deleted by the running daemon's retention while the export ran."""


def _row(clip: StoredClip, tags: dict[str, Any], file: str, label: str) -> dict[str, Any]:
    return manifest_row(clip.name, tags, file, label)


def manifest_row(
    name: ClipName, tags: dict[str, Any], file: str, label: str, *, label_by: str | None = None
) -> dict[str, Any]:
    """One manifest row: the clip's file and label, and its verdict's fields (`tags`).

    label_by overrides the verdict's (the control room's labels are a person's)."""
    model = tags.get("model")
    if not isinstance(model, dict):
        model = {}
    return {
        "file": file,
        "label": label,
        "node": tags.get("node", name.node),
        "seq": name.seq,
        "window_start": tags.get("window_start", ""),
        "window_end": tags.get("window_end", ""),
        "score": tags.get("score", ""),
        "threshold": tags.get("threshold", ""),
        "label_by": label_by if label_by is not None else tags.get("label_by", ""),
        "sensor": tags.get("sensor", ""),
        "model_name": model.get("name", ""),
        "model_sha256": model.get("sha256", ""),
        "kept_as": name.kind,
    }


def _tags(clip: StoredClip) -> dict[str, Any] | None:
    """The verdict a clip was written with; None when the file is gone."""
    try:
        text = read_tags(clip.path)
    except (OSError, RuntimeError):  # soundfile raises LibsndfileError (a RuntimeError)
        return None if not clip.path.exists() else {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _window_start(clip: StoredClip) -> datetime:
    return datetime.strptime(clip.name.start, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


def export(
    store: ClipStore, dest: Path, *, since: datetime | None = None, label: LabelFilter = "all"
) -> ExportResult:
    """Copy the matching clips into dest (which must not exist, or be empty) with manifests."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest}: exists and is not an empty folder; export into a new one")
    labelled: list[dict[str, Any]] = []
    unlabelled: list[dict[str, Any]] = []
    vanished = 0
    dest.mkdir(parents=True, exist_ok=True)
    for clip in store.entries():
        if since is not None and _window_start(clip) < since:
            continue
        tags = _tags(clip)
        if tags is None:
            vanished += 1
            continue
        verdict_label = str(tags.get("label", clip.name.kind))
        if label not in ("all", verdict_label):
            continue
        usable = tags.get("sensor") == "ok" and verdict_label in ("normal", "anomalous")
        folder = verdict_label if usable else UNLABELLED
        file = f"{folder}/{clip.name.name}"
        (dest / folder).mkdir(exist_ok=True)
        try:
            shutil.copyfile(clip.path, dest / file)
        except FileNotFoundError:
            vanished += 1
            continue
        if usable:
            labelled.append(_row(clip, tags, file, verdict_label))
        else:
            unlabelled.append(_row(clip, tags, file, ""))
    write_manifest(dest / MANIFEST, labelled)
    if unlabelled:
        write_manifest(dest / UNLABELLED_MANIFEST, unlabelled)
    return ExportResult(len(labelled), len(unlabelled), vanished)


def write_manifest(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """manifest.csv (COLUMNS) as corona-train's loader reads it."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def parse_since(text: str) -> datetime:
    """An ISO-8601 time (UTC when it names no zone); DataError naming --since otherwise."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"--since: not an ISO-8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
