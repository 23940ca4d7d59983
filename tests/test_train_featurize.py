"""train.featurize: the daemon's windows for every file, on a process pool, cached by content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from daemon.constants import SAMPLE_RATE
from daemon.errors import AudioError
from daemon.listen import audio, windows
from train import data, featurize

WINDOW_S = 1.0


def _wav(path: Path, seconds: float, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(
        path, 0.1 * rng.standard_normal(round(seconds * SAMPLE_RATE)), SAMPLE_RATE, subtype="PCM_16"
    )
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> data.DataSet:
    for i in range(3):
        _wav(tmp_path / "set" / "normal" / f"n{i}.wav", 2.5, i)
        _wav(tmp_path / "set" / "anomalous" / f"a{i}.wav", 1.5, 10 + i)
    return data.discover(tmp_path / "set")


SETTINGS = featurize.WindowSettings(window_s=WINDOW_S, hop_s=WINDOW_S)


class TestFeaturize:
    def test_windows_are_the_daemons(self, dataset: data.DataSet, tmp_path: Path) -> None:
        """Each file's features equal daemon.listen.windows.windows_of on
        daemon.listen.audio.load's samples."""
        result = featurize.featurize(dataset.files, settings=SETTINGS, cache_dir=None, workers=2)
        assert [f.file for f in result.files] == list(dataset.files)
        for item in result.files:
            samples, _ = audio.load(item.file.path)
            expected = windows.windows_of(
                samples,
                sample_rate=SAMPLE_RATE,
                length_s=WINDOW_S,
                hop_s=WINDOW_S,
                n_fft=SETTINGS.n_fft,
                hop_length=SETTINGS.hop_length,
            )
            assert item.n_windows == len(expected)
            np.testing.assert_array_equal(item.features, np.stack([w.features for w in expected]))
        x, y, groups = result.stacked()
        assert x.shape == (sum(f.n_windows for f in result.files), 513)
        assert y.tolist() == [f.file.label for f in result.files for _ in range(f.n_windows)]
        assert groups.max() == len(result.files) - 1

    def test_second_run_reads_no_audio(self, dataset: data.DataSet, tmp_path: Path) -> None:
        """With the cache, a second run decodes nothing and returns identical features."""
        cache = tmp_path / "cache"
        first = featurize.featurize(dataset.files, settings=SETTINGS, cache_dir=cache, workers=2)
        assert (first.stats.audio_reads, first.stats.cache_hits) == (6, 0)
        second = featurize.featurize(dataset.files, settings=SETTINGS, cache_dir=cache, workers=2)
        assert (second.stats.audio_reads, second.stats.cache_hits) == (0, 6)
        for a, b in zip(first.files, second.files, strict=True):
            np.testing.assert_array_equal(a.features, b.features)

    def test_cache_key_follows_content_and_settings(
        self, dataset: data.DataSet, tmp_path: Path
    ) -> None:
        """Other window settings or changed file bytes miss the cache; a renamed copy hits it."""
        cache = tmp_path / "cache"
        featurize.featurize(dataset.files, settings=SETTINGS, cache_dir=cache, workers=1)
        other = featurize.WindowSettings(window_s=0.5, hop_s=0.5)
        assert (
            featurize.featurize(
                dataset.files[:1], settings=other, cache_dir=cache, workers=1
            ).stats.audio_reads
            == 1
        )
        copy = tmp_path / "renamed.wav"
        copy.write_bytes(dataset.files[0].path.read_bytes())
        renamed = data.LabelledFile(path=copy, name="renamed.wav", label=0)
        assert (
            featurize.featurize(
                [renamed], settings=SETTINGS, cache_dir=cache, workers=1
            ).stats.cache_hits
            == 1
        )
        _wav(copy, 2.5, 99)
        assert (
            featurize.featurize(
                [renamed], settings=SETTINGS, cache_dir=cache, workers=1
            ).stats.audio_reads
            == 1
        )

    def test_corrupt_file_is_skipped_with_its_reason(
        self, dataset: data.DataSet, tmp_path: Path
    ) -> None:
        """An unreadable file is left out and listed in stats.failures with the reader's reason."""
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
        files = [*dataset.files, data.LabelledFile(path=bad, name="bad.wav", label=1)]
        result = featurize.featurize(files, settings=SETTINGS, cache_dir=tmp_path / "c", workers=2)
        assert len(result.files) == 6
        assert [f.name for f in result.stats.failures] == ["bad.wav"]
        assert result.stats.failures[0].reason

    def test_strict_raises_on_a_corrupt_file(self, tmp_path: Path) -> None:
        """With strict, the first unreadable file stops the run with an AudioError naming it."""
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"not audio at all")
        with pytest.raises(AudioError, match=r"bad\.wav"):
            featurize.featurize(
                [data.LabelledFile(path=bad, name="bad.wav", label=0)],
                settings=SETTINGS,
                cache_dir=None,
                strict=True,
            )
