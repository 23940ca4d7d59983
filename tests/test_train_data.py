"""train.data: finding labelled data sets (folders or manifest) and rejecting bad ones clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import DataError
from train import data


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")  # discovery never reads audio; any file will do
    return path


class TestFolders:
    def test_finds_both_class_folders_in_order(self, tmp_path: Path) -> None:
        """normal/*.wav get label 0, anomalous/*.wav label 1, sorted; other files are ignored."""
        _touch(tmp_path / "normal" / "b.wav")
        _touch(tmp_path / "normal" / "a.WAV")
        _touch(tmp_path / "normal" / "notes.txt")
        _touch(tmp_path / "anomalous" / "c.wav")
        dataset = data.discover(tmp_path)
        assert dataset.source == "folders"
        assert [(f.name, f.label) for f in dataset.files] == [
            ("normal/a.WAV", 0),
            ("normal/b.wav", 0),
            ("anomalous/c.wav", 1),
        ]
        assert dataset.per_label() == {"normal": 2, "anomalous": 1}

    def test_missing_folder_is_a_data_error(self, tmp_path: Path) -> None:
        """A data folder that does not exist is named in the error."""
        with pytest.raises(DataError, match="no such data folder"):
            data.discover(tmp_path / "nope")

    def test_empty_folder_is_a_data_error(self, tmp_path: Path) -> None:
        """A folder without manifest or WAVs says what it expected."""
        (tmp_path / "normal").mkdir()
        with pytest.raises(DataError, match="no labelled audio"):
            data.discover(tmp_path)

    def test_one_class_only_is_reported_by_require_both_classes(self, tmp_path: Path) -> None:
        """A normal-only set is discovered; require_both_classes names the missing class."""
        _touch(tmp_path / "normal" / "a.wav")
        dataset = data.discover(tmp_path)
        assert dataset.missing_classes() == ["anomalous"]
        with pytest.raises(DataError, match="one class only: no anomalous"):
            dataset.require_both_classes()


class TestManifest:
    def test_bom_whitespace_and_word_labels(self, tmp_path: Path) -> None:
        """A BOM, padded headers and cells, upper-case words and extra columns are all accepted."""
        _touch(tmp_path / "x" / "one.wav")
        _touch(tmp_path / "two.wav")
        _touch(tmp_path / "three.wav")
        (tmp_path / "manifest.csv").write_text(
            "\ufeff File , Label ,site\n x/one.wav , Normal ,a\n two.wav, 1,b\n\n"
            "three.wav,ANOMALOUS,c\n",
            encoding="utf-8",
        )
        dataset = data.discover(tmp_path)
        assert dataset.source == "manifest"
        assert [(f.name, f.label) for f in dataset.files] == [
            ("x/one.wav", 0),
            ("two.wav", 1),
            ("three.wav", 1),
        ]

    def test_manifest_wins_over_folders(self, tmp_path: Path) -> None:
        """When manifest.csv exists, the class folders are not scanned."""
        _touch(tmp_path / "normal" / "a.wav")
        _touch(tmp_path / "anomalous" / "b.wav")
        (tmp_path / "manifest.csv").write_text("file,label\nnormal/a.wav,anomalous\n")
        assert [(f.name, f.label) for f in data.discover(tmp_path).files] == [("normal/a.wav", 1)]

    def test_missing_columns_are_named(self, tmp_path: Path) -> None:
        """A manifest without a label column says which column is missing and what it has."""
        (tmp_path / "manifest.csv").write_text("file,class\na.wav,normal\n")
        with pytest.raises(
            DataError, match=r"missing column\(s\) label; the header has class, file"
        ):
            data.discover(tmp_path)

    def test_bad_label_names_line_and_value(self, tmp_path: Path) -> None:
        """A label other than 0/1/normal/anomalous names its line and the value."""
        _touch(tmp_path / "a.wav")
        _touch(tmp_path / "b.wav")
        (tmp_path / "manifest.csv").write_text("file,label\na.wav,0\nb.wav,corona\n")
        with pytest.raises(DataError, match=r"line 3: bad label 'corona'"):
            data.discover(tmp_path)

    def test_missing_files_are_listed(self, tmp_path: Path) -> None:
        """Every listed file that does not exist is named, with the count."""
        _touch(tmp_path / "a.wav")
        (tmp_path / "manifest.csv").write_text(
            "file,label\na.wav,0\ngone1.wav,1\nsub/gone2.wav,normal\n"
        )
        with pytest.raises(
            DataError, match=r"2 listed file\(s\) not found .*gone1.wav, sub/gone2.wav"
        ):
            data.discover(tmp_path)

    def test_duplicate_rows_are_rejected(self, tmp_path: Path) -> None:
        """A file listed twice could land on both sides of a split, so it is an error."""
        _touch(tmp_path / "a.wav")
        (tmp_path / "manifest.csv").write_text("file,label\na.wav,0\na.wav,1\n")
        with pytest.raises(DataError, match="listed twice"):
            data.discover(tmp_path)

    def test_header_only_manifest_is_empty(self, tmp_path: Path) -> None:
        """A manifest with a header and no rows is an empty data set."""
        (tmp_path / "manifest.csv").write_text("file,label\n")
        with pytest.raises(DataError, match="no labelled audio"):
            data.discover(tmp_path)


class TestParseLabel:
    @pytest.mark.parametrize(
        ("cell", "label"), [("0", 0), ("1", 1), (" normal ", 0), ("Anomalous", 1)]
    )
    def test_accepted_spellings(self, cell: str, label: int) -> None:
        """0/1 and the class names, in any case and padding, map to their labels."""
        assert data.parse_label(cell, where="here") == label

    @pytest.mark.parametrize("cell", ["2", "", "yes", "-1", "0.0"])
    def test_anything_else_is_an_error(self, cell: str) -> None:
        """Other values raise a DataError that quotes them."""
        with pytest.raises(DataError, match=f"bad label {cell!r}"):
            data.parse_label(cell, where="here")
