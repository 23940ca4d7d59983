"""`corona-control labels export DIR`: the windows engineers labelled, as a corona-train data set.

DIR/normal/*.flac and DIR/anomalous/*.flac (the clips the room fetched from the nodes) listed in
DIR/manifest.csv in the layout `corona-monitor clips export` writes (one implementation:
daemon.evidence.export), with the person's label and `label_by: person:NAME`. Labels whose clip
was never fetched are counted, not exported: there is no audio to train on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control.store import Store
from daemon.errors import DataError
from daemon.evidence import names
from daemon.evidence.export import MANIFEST, manifest_row, write_manifest


@dataclass(frozen=True)
class LabelExport:
    exported: int
    without_clip: int


def export_labels(store: Store, dest: Path) -> LabelExport:
    """Write the labelled clips into dest (new, or an empty folder)."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest}: exists and is not an empty folder; export into a new one")
    rows: list[dict[str, Any]] = []
    for item in store.labelled_clips():
        name = names.parse(item.clip_name)
        if name is None or item.label.label not in ("normal", "anomalous"):
            continue  # checked when stored; a name that no longer parses is not a file name
        folder = dest / item.label.label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name.name).write_bytes(item.flac)
        tags = _verdict(item.verdict)
        rows.append(
            manifest_row(
                name,
                tags,
                f"{item.label.label}/{name.name}",
                item.label.label,
                label_by=f"person:{item.label.labelled_by}",
            )
        )
    dest.mkdir(parents=True, exist_ok=True)
    write_manifest(dest / MANIFEST, rows)
    return LabelExport(len(rows), len(store.labels()) - len(rows))


def _verdict(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    doc = json.loads(text)
    return doc if isinstance(doc, dict) else {}
