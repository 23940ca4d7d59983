"""train.synth.field: real backgrounds looped without gaps, a random microphone, determinism."""

import numpy as np
import pytest

from daemon.constants import SAMPLE_RATE
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
