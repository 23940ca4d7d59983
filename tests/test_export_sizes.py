"""The shipping path works on a user's own data: the default preset (physics block) exports to
int8 on synthetic sets of 16, 80 and 200 files from three seeds, and the int8 model keeps the
Keras model's ROC-AUC on every window.

Files are 4-6 s cut into 2 s windows (the physics block still resolves 2f in 2 s) so the whole
module runs in about two minutes; bench/robustness.py trains on full 30-60 s files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train.cli import main
from train.synth import synthesize


@pytest.mark.parametrize(("files", "seed"), [(16, 101), (80, 202), (200, 303)])
def test_default_preset_exports_to_int8(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], files: int, seed: int
) -> None:
    data, run, model = tmp_path / "data", tmp_path / "run", tmp_path / "m" / "default.tflite"
    model.parent.mkdir()
    synthesize(data, normal=files // 2, anomalous=files // 2, seed=seed, duration_s=(4.0, 6.0))
    cache = ["--cache", str(tmp_path / "cache")]
    fit = ["fit", str(data), "--out", str(run), "--window-s", "2", "--epochs", "60"]
    assert main([*fit, "--no-plots", "--seed", str(seed), *cache]) == 0, capfd.readouterr().err
    code = main(["export", str(run), "--tflite", "--quantize", "int8", "--out", str(model)])
    _, err = capfd.readouterr()
    assert code == 0, err
    meta = json.loads(model.with_suffix(".json").read_text())
    assert meta["quantization"] == "int8"
    assert meta["features"]["physics"]["names"] == ["mod_db", "hum_db", "sub_db", "crackle_db"]
    parity = meta["metrics"]["parity"]
    assert parity["windows"] >= 2 * files  # compared on every window, training and test
    assert parity["tflite"]["roc_auc"] >= parity["keras"]["roc_auc"] - 0.02
    assert model.stat().st_size <= 32 * 1024
