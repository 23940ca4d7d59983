"""train.synth.field: real backgrounds looped without gaps, a random microphone, determinism."""

import csv
from pathlib import Path

import numpy as np
import pytest

from daemon.constants import SAMPLE_RATE
from tests.test_recordings import write_set
from train.cli import main
from train.synth.field import Background, _looped, apply


def test_short_recordings_loop_to_any_length_from_any_start() -> None:
    recording = np.sin(np.arange(SAMPLE_RATE) / 7.0).astype(np.float32)  # 1 s
    for start in (0, SAMPLE_RATE // 2, SAMPLE_RATE - 3):
        out = _looped(recording, 3 * SAMPLE_RATE + 17, start)
        assert out.shape == (3 * SAMPLE_RATE + 17,)
        assert np.all(np.isfinite(out))


def test_apply_is_deterministic_and_keeps_length_and_range() -> None:
    rng = np.random.default_rng(0)
    clip = (0.01 * rng.standard_normal(2 * SAMPLE_RATE)).astype(np.float32)
    backgrounds = [Background("rain.wav", (0.1 * rng.standard_normal(5000)).astype(np.float32))]
    first, draw = apply(clip, np.random.default_rng(5), backgrounds)
    second, _ = apply(clip, np.random.default_rng(5), backgrounds)
    assert np.array_equal(first, second)
    assert first.shape == clip.shape
    assert np.max(np.abs(first)) <= 1.0
    assert "lowcut" in draw.mic


def test_without_backgrounds_only_the_microphone_changes_the_clip() -> None:
    clip = np.zeros(SAMPLE_RATE, np.float32)
    out, draw = apply(clip, np.random.default_rng(1), [])
    assert draw.background == ""
    assert np.max(np.abs(out)) == pytest.approx(0.0)


def test_synth_cli_puts_the_chosen_split_under_the_clips(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`corona-train synth --backgrounds DIR` uses only that split's recordings, says which in
    the manifest, and a folder without such rows is one clear error."""
    recordings = write_set(tmp_path / "rec")
    out = tmp_path / "set"
    args = ["synth", str(out), "--normal", "3", "--anomalous", "3", "--seed", "4"]
    code = main([*args, "--min-s", "1", "--max-s", "1.5", "--backgrounds", str(recordings)])
    assert code == 0, capfd.readouterr().err
    with (out / "manifest.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    used = {r["background"] for r in rows} - {""}
    assert used
    assert used <= {"rain.wav", "wind.wav"}
    assert all(r["mic"].startswith("lowcut") for r in rows)
    # Only holdout rows: nothing to train over, said in one line naming the folder.
    holdout_only = tmp_path / "holdout-only"
    write_set(holdout_only)
    manifest = holdout_only / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",train,", ",holdout,"), encoding="utf-8")
    code = main([args[0], str(tmp_path / "other"), *args[2:], "--backgrounds", str(holdout_only)])
    err = capfd.readouterr().err
    assert code != 0
    assert f"{holdout_only}: no 'train' recordings in its manifest" in err
    assert "Traceback" not in err
