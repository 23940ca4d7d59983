"""Labelled data sets: every WAV and its label from DIR/normal + DIR/anomalous or DIR/manifest.csv.

Discovery only looks at names and labels; reading the audio (and skipping unreadable files) is
featurize's job. Label 0 = normal, 1 = anomalous, the order of CLASSES.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from daemon.errors import DataError

CLASSES: Final = ("normal", "anomalous")
"""Class names in label order: label 0 is normal, label 1 is anomalous."""

MANIFEST_NAME: Final = "manifest.csv"
"""The manifest file name inside a data set folder; when present it wins over the folders."""

AUDIO_SUFFIX: Final = ".wav"
"""Audio files in class folders are found by this suffix (any letter case)."""

_LABEL_WORDS: Final = {"0": 0, "1": 1, "normal": 0, "anomalous": 1}
_MAX_LISTED: Final = 10
"""How many offending names an error message lists before it says 'and N more'."""


@dataclass(frozen=True)
class LabelledFile:
    """One recording and its label."""

    path: Path
    """Absolute path of the audio file."""
    name: str
    """The file's name relative to the data set folder (posix); unique within a data set."""
    label: int
    """0 = normal, 1 = anomalous."""

    @property
    def label_name(self) -> str:
        """The label as a class name."""
        return CLASSES[self.label]


@dataclass(frozen=True)
class DataSet:
    """A labelled data set as discovered on disk."""

    root: Path
    files: tuple[LabelledFile, ...]
    source: str
    """'manifest' or 'folders': where the labels came from."""

    def per_label(self) -> dict[str, int]:
        """Number of files per class name (both classes always present as keys)."""
        counts = Counter(f.label for f in self.files)
        return {name: counts.get(label, 0) for label, name in enumerate(CLASSES)}

    def missing_classes(self) -> list[str]:
        """The class names that have no file."""
        return [name for name, count in self.per_label().items() if count == 0]

    def require_both_classes(self) -> None:
        """Raise DataError unless every class has at least one file."""
        missing = self.missing_classes()
        if missing:
            raise DataError(
                f"{self.root}: one class only: no {' and no '.join(missing)} files "
                f"(found {self._count_text()}); training needs both normal and anomalous"
            )

    def _count_text(self) -> str:
        return ", ".join(f"{count} {name}" for name, count in self.per_label().items())


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def parse_label(value: str, *, where: str) -> int:
    """The label of one manifest cell: 0/1/normal/anomalous (case and spaces ignored)."""
    label = _LABEL_WORDS.get(value.strip().lower())
    if label is None:
        raise DataError(f"{where}: bad label {value!r}: expected 0, 1, normal or anomalous")
    return label


def discover(root: Path | str) -> DataSet:
    """Every labelled file under `root`: manifest.csv when present, else normal/ + anomalous/.

    Raises DataError when the folder is missing, holds no audio, or the manifest is malformed
    (missing columns, bad labels, duplicate or missing files). A set with one class only is
    returned; call `require_both_classes` where training needs both.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        files = _from_manifest(root, manifest)
        source = "manifest"
    else:
        files = _from_folders(root)
        source = "folders"
    if not files:
        raise DataError(
            f"{root}: no labelled audio: expected {MANIFEST_NAME} or WAV files in "
            f"{root / CLASSES[0]}/ and {root / CLASSES[1]}/"
        )
    return DataSet(root=root.resolve(), files=tuple(files), source=source)


def _from_folders(root: Path) -> list[LabelledFile]:
    files: list[LabelledFile] = []
    for label, name in enumerate(CLASSES):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() == AUDIO_SUFFIX:
                files.append(
                    LabelledFile(path=path.resolve(), name=f"{name}/{path.name}", label=label)
                )
    return files


def _normalized_header(fields: Iterable[str | None]) -> dict[str, str]:
    """Map stripped, lower-cased column names to the names csv.DictReader uses."""
    return {field.strip().lower(): field for field in fields if field is not None}


def _from_manifest(root: Path, manifest: Path) -> list[LabelledFile]:
    # utf-8-sig drops a byte-order mark that spreadsheet programs like to write.
    with manifest.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream, skipinitialspace=True)
        header = _normalized_header(reader.fieldnames or [])
        missing = [column for column in ("file", "label") if column not in header]
        if missing:
            raise DataError(
                f"{manifest}: missing column(s) {', '.join(missing)}; "
                f"the header has {', '.join(sorted(header)) or 'nothing'}"
            )
        file_key, label_key = header["file"], header["label"]
        files: list[LabelledFile] = []
        seen: dict[str, int] = {}
        absent: list[str] = []
        for row in reader:
            # Row numbers as a spreadsheet shows them: the header is line 1.
            line = reader.line_num
            cell = (row.get(file_key) or "").strip()
            label_cell = row.get(label_key) or ""
            if not cell and not label_cell.strip():
                continue  # blank line
            where = f"{manifest} line {line}"
            if not cell:
                raise DataError(f"{where}: empty 'file' cell")
            label = parse_label(label_cell, where=where)
            path = (root / cell).resolve()
            name = Path(cell).as_posix()
            if name in seen:
                raise DataError(f"{where}: {name} is listed twice (first on line {seen[name]})")
            seen[name] = line
            if not path.is_file():
                absent.append(name)
                continue
            files.append(LabelledFile(path=path, name=name, label=label))
    if absent:
        raise DataError(
            f"{manifest}: {len(absent)} listed file(s) not found under {root}: {_listing(absent)}"
        )
    return files
