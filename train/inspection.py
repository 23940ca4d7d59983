"""`corona-train inspect`: the notebook's per-file metadata table of a data set, problems flagged.

One row per file (daemon.listen.audio.metadata, read as stored) plus summary lines: files per label,
total hours, sample rates seen, problems. Rendering is an aligned text table or CSV.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from daemon.constants import SAMPLE_RATE, WINDOW_S
from daemon.errors import AudioError
from daemon.listen import audio
from train.data import CLASSES, DataSet

COLUMNS: Final = (
    "file",
    "label",
    "channels",
    "sample_width",
    "frame_rate",
    "frame_width",
    "length_s",
    "frame_count",
    "loudness_dbfs",
    "problems",
)
"""Table columns: the notebook's metadata, then the label and what is wrong with the file."""

_SECONDS_PER_HOUR: Final = 3600.0


@dataclass(frozen=True)
class Row:
    """One file's line in the table."""

    file: str
    label: str
    meta: audio.AudioMetadata | None
    problems: tuple[str, ...]

    def cells(self) -> dict[str, str]:
        """The row as text cells keyed by COLUMNS."""
        meta = self.meta
        values: dict[str, str] = {"file": self.file, "label": self.label}
        if meta is None:
            values.update({c: "" for c in COLUMNS[2:-1]})
        else:
            values.update(
                channels=str(meta.channels),
                sample_width=str(meta.sample_width),
                frame_rate=str(meta.frame_rate),
                frame_width=str(meta.frame_width),
                length_s=f"{meta.length_s:.3f}",
                frame_count=str(meta.frame_count),
                loudness_dbfs=f"{meta.loudness_dbfs:.2f}",
            )
        values["problems"] = "; ".join(self.problems)
        return values


def _problems(meta: audio.AudioMetadata, window_s: float) -> list[str]:
    found = []
    if meta.frame_count == 0:
        found.append("no samples")
    elif meta.length_s < window_s:
        found.append(f"shorter than one {window_s:g} s window")
    if meta.loudness_dbfs <= audio.SILENCE_DBFS:
        found.append("silent")
    return found


def rows(
    dataset: DataSet,
    *,
    window_s: float = WINDOW_S,
    on_file: Callable[[], None] | None = None,
) -> list[Row]:
    """Metadata of every file; unreadable files get a row with the reason instead of values."""
    result = []
    for item in dataset.files:
        try:
            meta = audio.metadata(item.path)
            problems = _problems(meta, window_s)
        except AudioError as exc:
            meta, problems = None, [f"unreadable: {_short(str(exc), str(item.path))}"]
        except OSError as exc:
            meta, problems = None, [f"unreadable: {exc.strerror or exc}"]
        result.append(Row(item.name, item.label_name, meta, tuple(problems)))
        if on_file is not None:
            on_file()
    return result


def _short(message: str, path: str) -> str:
    return message.removeprefix(f"{path}: ").removeprefix(f"{path}:")


def summary(dataset: DataSet, table: list[Row]) -> list[str]:
    """The lines under the table: counts per label, hours, sample rates, problems."""
    per_label = Counter(row.label for row in table)
    hours: dict[str, float] = {}
    for row in table:
        if row.meta is not None:
            hours[row.label] = hours.get(row.label, 0.0) + row.meta.length_s / _SECONDS_PER_HOUR
    rates = Counter(row.meta.frame_rate for row in table if row.meta is not None)
    unreadable = unreadable_count(table)
    lines = [
        f"files: {len(table)} ("
        + ", ".join(f"{per_label.get(name, 0)} {name}" for name in CLASSES)
        + f"), labels from {dataset.source}"
        + (f"; {unreadable} unreadable, {len(table) - unreadable} usable" if unreadable else ""),
        f"total: {sum(hours.values()):.2f} h ("
        + ", ".join(f"{hours.get(name, 0.0):.2f} h {name}" for name in CLASSES)
        + ")",
        "sample rates: "
        + (", ".join(f"{rate} Hz ({n} files)" for rate, n in sorted(rates.items())) or "none")
        + (f"; all are resampled to {SAMPLE_RATE} Hz" if set(rates) - {SAMPLE_RATE} else ""),
    ]
    flagged = [row for row in table if row.problems]
    kinds = Counter(p.split(":")[0] for row in flagged for p in row.problems)
    problem_text = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    lines.append(
        f"problems: {len(flagged)} files ({problem_text})" if flagged else "problems: none"
    )
    missing = dataset.missing_classes()
    if missing:
        lines.append(f"warning: no {' and no '.join(missing)} files; fit needs both classes")
    return lines


def unreadable_count(table: list[Row]) -> int:
    """Files whose audio could not be read (no metadata): fit would skip them."""
    return sum(row.meta is None for row in table)


def aligned(table: list[Row]) -> str:
    """The rows as a text table with aligned columns (numbers right-aligned)."""
    cells = [row.cells() for row in table]
    widths = {c: max([len(c), *(len(r[c]) for r in cells)]) for c in COLUMNS}
    left = {"file", "label", "problems"}

    def line(values: dict[str, str]) -> str:
        parts = [
            values[c].ljust(widths[c]) if c in left else values[c].rjust(widths[c]) for c in COLUMNS
        ]
        return "  ".join(parts).rstrip()

    header = {c: c for c in COLUMNS}
    rule = {c: "-" * widths[c] for c in COLUMNS}
    return "\n".join([line(header), line(rule), *(line(r) for r in cells)])


def as_csv(table: list[Row]) -> str:
    """The rows as CSV with a header line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow(row.cells())
    return out.getvalue()
