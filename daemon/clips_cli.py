"""`corona-monitor clips list|export DIR`: the node's evidence clips for a person and for training.

list:   every clip in the clips folder, oldest first (name, bytes, when kept).
export: a folder `corona-train` reads (daemon.evidence.export): the loop from field to retraining.
Both only read the clips folder, so they run beside the daemon.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from daemon import config
from daemon.analyse.verdict import iso_utc
from daemon.evidence import export as exporting
from daemon.evidence.store import ClipStore

Say = Callable[[str], None]


def run_list(config_path: Path | None, *, as_json: bool, say: Say) -> int:
    """Print the clips; exit 0 (an empty or missing folder is an empty list)."""
    settings = config.load(config_path)
    store = ClipStore.from_settings(settings)
    clips = store.entries()
    if as_json:
        say(
            json.dumps(
                [
                    {
                        "clip": clip.name.name,
                        "seq": clip.name.seq,
                        "kind": clip.name.kind,
                        "bytes": clip.size,
                        "kept": iso_utc(datetime.fromtimestamp(clip.mtime, UTC)),
                    }
                    for clip in clips
                ]
            )
        )
        return 0
    for clip in clips:
        kept = iso_utc(datetime.fromtimestamp(clip.mtime, UTC))
        say(f"{clip.name.name}  {clip.size} bytes  kept {kept}")
    say(f"{len(clips)} clips, {store.bytes} bytes in {store.folder}")
    return 0


def run_export(
    folder: Path,
    config_path: Path | None,
    *,
    since: str | None,
    label: exporting.LabelFilter,
    say: Say,
) -> int:
    """Export the clips into folder; DataError (one line) when it is not new or empty."""
    settings = config.load(config_path)
    store = ClipStore.from_settings(settings)
    moment = exporting.parse_since(since) if since is not None else None
    result = exporting.export(store, folder, since=moment, label=label)
    say(
        f"{folder}: {result.labelled} labelled clips in {exporting.MANIFEST},"
        f" {result.unlabelled} unlabelled (sensor not ok) in {exporting.UNLABELLED_MANIFEST}"
        + (f", {result.vanished} deleted by retention meanwhile" if result.vanished else "")
    )
    return 0
