"""train.runrecord and model_meta.document: each file format's writer and reader are one type,
so what is written reads back equal, and a damaged file names itself."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from daemon.analyse import model_meta
from daemon.analyse.featurespec import FeatureSpec, PhysicsSpec
from daemon.errors import DataError
from train.runrecord import Calibration, RunRecord

SPEC = FeatureSpec(window_s=2.0, physics=PhysicsSpec(line_hz=50, names=("mod_db", "hum_db")))


def _record(**changes: object) -> RunRecord:
    base = RunRecord(
        preset="default",
        spec=SPEC,
        classes=("normal", "anomalous"),
        output="sigmoid",
        threshold=0.42,
        trained_on={"data_dir": "d", "files": 3},
        seed=7,
        hop_s=2.0,
        metrics={"file": {"accuracy": 1.0}},
        hyperparameters={"gain_invariant": True},
        epochs_run=10,
        best_epoch=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class TestRunRecord:
    def test_written_reads_back_equal(self, tmp_path: Path) -> None:
        for record in (_record(), _record(kind="one-class", one_class={"quantile": 0.99})):
            record.write(tmp_path)
            assert RunRecord.read(tmp_path) == record
        assert RunRecord.read(tmp_path).gain_invariant

    def test_missing_key_is_named(self, tmp_path: Path) -> None:
        _record().write(tmp_path)
        doc = json.loads((tmp_path / "run.json").read_text())
        del doc["threshold"]
        (tmp_path / "run.json").write_text(json.dumps(doc))
        with pytest.raises(DataError, match=r"run\.json has no 'threshold'"):
            RunRecord.read(tmp_path)

    def test_not_an_object(self, tmp_path: Path) -> None:
        (tmp_path / "run.json").write_text("[1, 2]")
        with pytest.raises(DataError, match="must hold a JSON object"):
            RunRecord.read(tmp_path)


class TestCalibration:
    def test_written_reads_back_equal(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(1)
        rows = rng.random((4, SPEC.width)).astype(np.float32)
        files = np.array(["a.wav", "a.wav", "b.wav", "b.wav"])
        Calibration(rows, rows[:2], np.array([0, 0]), files[:2], rows, np.array([0, 0, 1, 1]),
                    files).write(tmp_path)  # fmt: skip
        back = Calibration.read(tmp_path, SPEC.width)
        np.testing.assert_array_equal(back.all_features, rows)
        assert back.all_files.tolist() == files.tolist()
        with pytest.raises(DataError, match=r"representative has shape \(4, 515\), want"):
            Calibration.read(tmp_path, SPEC.width + 1)


def test_model_metadata_document_is_what_validate_reads() -> None:
    """model_meta.document (export's writer) and validate (the daemon's reader) agree."""
    doc = model_meta.document(
        name="m",
        sha256="d" * 64,
        classes=("normal", "anomalous"),
        output="sigmoid",
        spec=SPEC,
        threshold=0.5,
        quantization="int8",
        trained_on={"data_dir": "d"},
        created="2026-12-01T00:00:00+00:00",
        kind="one-class",
        one_class={"quantile": 0.99},
    )
    meta = model_meta.validate(json.loads(json.dumps(doc)), source="m.json")
    assert (meta.name, meta.kind, meta.threshold, meta.spec) == ("m", "one-class", 0.5, SPEC)
