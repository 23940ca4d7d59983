"""Tests for train.synth: seeded synthetic tower audio and its data-set writer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from daemon.constants import SAMPLE_RATE
from daemon.errors import DataError
from train.synth import MANIFEST_COLUMNS, long_clip, signals, synthesize, synthesize_clip

SHORT_S = (2.0, 3.0)
LINE_HZ = 50.0
HF_EDGE_HZ = 5000.0


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight short files per label at a fixed seed and line frequency."""
    out = tmp_path_factory.mktemp("synth") / "set"
    synthesize(out, normal=8, anomalous=8, seed=7, duration_s=SHORT_S, line_hz=LINE_HZ)
    return out


class TestSynthesize:
    def test_same_seed_gives_identical_bytes(self, tmp_path: Path) -> None:
        """Two runs with the same arguments write byte-identical WAVs and manifests."""
        for name in ("a", "b"):
            synthesize(tmp_path / name, normal=2, anomalous=2, seed=3, duration_s=SHORT_S)
        assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")

    def test_different_seed_gives_different_audio(self, tmp_path: Path) -> None:
        """Another seed changes every file's samples."""
        synthesize(tmp_path / "a", normal=1, anomalous=1, seed=3, duration_s=SHORT_S)
        synthesize(tmp_path / "b", normal=1, anomalous=1, seed=4, duration_s=SHORT_S)
        for rel in ("normal/normal_0000.wav", "anomalous/anomalous_0000.wav"):
            assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "b" / rel).read_bytes()

    def test_file_does_not_depend_on_counts(self, tmp_path: Path) -> None:
        """Asking for more files leaves the earlier files unchanged (per-file seeding)."""
        synthesize(tmp_path / "a", normal=1, anomalous=1, seed=5, duration_s=SHORT_S)
        synthesize(tmp_path / "b", normal=3, anomalous=2, seed=5, duration_s=SHORT_S)
        for rel in ("normal/normal_0000.wav", "anomalous/anomalous_0000.wav"):
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()

    def test_counts_and_manifest(self, small_set: Path) -> None:
        """The manifest lists every file once with its label and the documented columns."""
        rows = _read_manifest(small_set / "manifest.csv")
        assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
        assert [r["label"] for r in rows].count("normal") == 8
        assert [r["label"] for r in rows].count("anomalous") == 8
        for row in rows:
            assert row["file"].startswith(row["label"] + "/")
            assert (small_set / row["file"]).is_file()
            assert row["line_hz"] == "50"
            assert (row["corona_db"] != "") == (row["label"] == "anomalous")
        assert len(list((small_set / "normal").glob("*.wav"))) == 8
        assert len(list((small_set / "anomalous").glob("*.wav"))) == 8

    def test_format_and_duration(self, small_set: Path) -> None:
        """Every file is 44.1 kHz mono 16-bit PCM WAV with a length inside the asked range."""
        for path in sorted(small_set.rglob("*.wav")):
            info = sf.info(path)
            assert (info.samplerate, info.channels) == (SAMPLE_RATE, 1)
            assert (info.format, info.subtype) == ("WAV", "PCM_16")
            assert SHORT_S[0] <= info.frames / SAMPLE_RATE <= SHORT_S[1]

    def test_levels_are_sane(self, small_set: Path) -> None:
        """Samples are finite, not silent, and almost never at full scale."""
        for path in sorted(small_set.rglob("*.wav")):
            samples, _ = sf.read(path, dtype="float32")
            assert np.all(np.isfinite(samples))
            assert np.std(samples) > 0
            assert np.mean(np.abs(samples) >= 32767 / 32768) < 1e-3
        rows = _read_manifest(small_set / "manifest.csv")
        peaks = np.array([float(r["peak_dbfs"]) for r in rows])
        assert np.mean(peaks < -0.1) >= 0.9

    def test_gains_vary_widely(self, small_set: Path) -> None:
        """Files span a wide range of levels, so loudness alone cannot be the label."""
        rows = _read_manifest(small_set / "manifest.csv")
        gains = np.array([float(r["gain_db"]) for r in rows])
        assert gains.max() - gains.min() > 15
        assert all(-30 <= g <= 10 for g in gains)

    def test_rejects_bad_arguments(self, tmp_path: Path) -> None:
        """Bad counts, seeds and durations raise DataError naming the argument."""
        with pytest.raises(DataError, match="normal"):
            synthesize(tmp_path, normal=-1, anomalous=1, seed=0)
        with pytest.raises(DataError, match="0 files"):
            synthesize(tmp_path, normal=0, anomalous=0, seed=0)
        with pytest.raises(DataError, match="seed"):
            synthesize(tmp_path, normal=1, anomalous=1, seed=-2)
        with pytest.raises(DataError, match="duration_s"):
            synthesize(tmp_path, normal=1, anomalous=1, seed=0, duration_s=(3.0, 2.0))

    def test_refuses_stale_wavs(self, tmp_path: Path) -> None:
        """A WAV in the output folder that this run would not write stops it."""
        (tmp_path / "normal").mkdir()
        (tmp_path / "normal" / "old.wav").write_bytes(b"RIFF")
        with pytest.raises(DataError, match=r"old\.wav"):
            synthesize(tmp_path, normal=1, anomalous=1, seed=0, duration_s=SHORT_S)

    def test_reports_progress(self, tmp_path: Path) -> None:
        """The progress callback sees every file once, in order."""
        seen: list[tuple[int, int]] = []
        synthesize(
            tmp_path,
            normal=1,
            anomalous=2,
            seed=0,
            duration_s=(0.5, 0.5),
            progress=lambda done, total: seen.append((done, total)),
        )
        assert seen == [(1, 3), (2, 3), (3, 3)]


class TestSynthesizeClip:
    def test_shape_dtype_range(self) -> None:
        """A clip is float32 mono of the asked length, finite and within full scale."""
        clip = synthesize_clip(np.random.default_rng(1), label="anomalous", duration_s=1.5)
        assert clip.dtype == np.float32
        assert clip.shape == (round(1.5 * SAMPLE_RATE),)
        assert np.all(np.isfinite(clip))
        assert np.max(np.abs(clip)) <= 1.0

    def test_deterministic(self) -> None:
        """The same Generator state gives the same clip; another seed a different one."""
        a = synthesize_clip(np.random.default_rng(9), label="normal", duration_s=1.0)
        b = synthesize_clip(np.random.default_rng(9), label="normal", duration_s=1.0)
        c = synthesize_clip(np.random.default_rng(10), label="normal", duration_s=1.0)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)

    def test_rejects_unknown_label(self) -> None:
        """A label other than normal/anomalous raises DataError."""
        with pytest.raises(DataError, match="label"):
            synthesize_clip(np.random.default_rng(0), label="broken", duration_s=1.0)


class TestSignals:
    def test_slow_envelope_stays_bounded_on_short_spans(self) -> None:
        """A slow envelope over less than its timescale stays within a few spreads of 0 dB."""
        for seed in range(50):
            env = signals.slow_envelope(
                np.random.default_rng(seed), SAMPLE_RATE, depth_db=10.0, timescale_s=4.0
            )
            assert np.all(env > 0)
            assert np.max(np.abs(20 * np.log10(env))) < 60.0

    def test_shaped_noise_follows_the_response(self) -> None:
        """Pink-shaped noise loses about 3 dB per octave and has unit RMS."""
        noise = signals.shaped_noise(np.random.default_rng(0), 4 * SAMPLE_RATE, signals.tilt(-3.0))
        power = np.abs(np.fft.rfft(noise)) ** 2
        f = np.fft.rfftfreq(noise.size, 1.0 / SAMPLE_RATE)
        low = power[(f > 500) & (f < 1000)].mean()
        high = power[(f > 4000) & (f < 8000)].mean()
        assert 10 * np.log10(low / high) == pytest.approx(9.0, abs=1.0)
        assert float(np.sqrt(np.mean(noise**2))) == pytest.approx(1.0, rel=1e-3)

    def test_fast_length_is_smooth_and_minimal(self) -> None:
        """fast_length returns the smallest 2^a 3^b 5^c at or above n."""

        def smooth(k: int) -> bool:
            for p in (2, 3, 5):
                while k % p == 0:
                    k //= p
            return k == 1

        for n in (1, 7, 66150, 2646000, 2646001):
            m = signals.fast_length(n)
            assert m >= n
            assert smooth(m)
            assert not any(smooth(k) for k in range(n, m))


class TestLongClip:
    def test_exact_length_and_determinism(self) -> None:
        """long_clip returns exactly the asked seconds, the same for the same seed."""
        a = long_clip(5.0, 3, clip_s=2.0)
        assert a.dtype == np.float32
        assert a.shape == (5 * SAMPLE_RATE,)
        assert np.array_equal(a, long_clip(5.0, 3, clip_s=2.0))


def _physics(path: Path) -> tuple[float, float, float]:
    """(2f line power, >5 kHz power, both in dB re total power; log10 kurtosis above 5 kHz)."""
    samples, _ = sf.read(path, dtype="float64")
    spectrum = np.fft.rfft(samples)
    power = np.abs(spectrum) ** 2
    f = np.fft.rfftfreq(samples.size, 1.0 / SAMPLE_RATE)
    total = power.sum()
    line = power[np.abs(f - 2 * LINE_HZ) < 1.5].sum()
    high = power[f > HF_EDGE_HZ].sum()
    spectrum[f <= HF_EDGE_HZ] = 0
    hf = np.fft.irfft(spectrum, samples.size)
    kurtosis = np.mean(hf**4) / np.mean(hf**2) ** 2
    return 10 * np.log10(line / total), 10 * np.log10(high / total), float(np.log10(kurtosis))


class TestPhysics:
    def test_corona_has_stronger_twice_line_frequency(self, small_set: Path) -> None:
        """On average, anomalous files carry more power at 2 x line frequency (the buzz)."""
        normal = [_physics(p)[0] for p in sorted((small_set / "normal").glob("*.wav"))]
        anomalous = [_physics(p)[0] for p in sorted((small_set / "anomalous").glob("*.wav"))]
        assert np.mean(anomalous) > np.mean(normal) + 3.0

    def test_corona_has_more_impulsive_high_frequency_energy(self, small_set: Path) -> None:
        """On average, anomalous files have a larger and spikier share of energy above 5 kHz."""
        normal = np.array([_physics(p)[1:] for p in sorted((small_set / "normal").glob("*.wav"))])
        anomalous = np.array(
            [_physics(p)[1:] for p in sorted((small_set / "anomalous").glob("*.wav"))]
        )
        assert anomalous[:, 0].mean() > normal[:, 0].mean() + 1.0
        assert anomalous[:, 1].mean() > normal[:, 1].mean() + 0.2

    def test_crackle_is_locked_to_the_voltage_crests(self) -> None:
        """High-frequency energy of corona repeats at 2 x line frequency (phase-locked pulses)."""
        clip = synthesize_clip(
            np.random.default_rng(2), label="anomalous", duration_s=3.0, line_hz=LINE_HZ
        ).astype(np.float64)
        spectrum = np.fft.rfft(clip)
        f = np.fft.rfftfreq(clip.size, 1.0 / SAMPLE_RATE)
        spectrum[f <= HF_EDGE_HZ] = 0
        envelope = np.fft.irfft(spectrum, clip.size) ** 2
        env_power = np.abs(np.fft.rfft(envelope - envelope.mean())) ** 2
        env_f = np.fft.rfftfreq(envelope.size, 1.0 / SAMPLE_RATE)
        at_2f = env_power[np.abs(env_f - 2 * LINE_HZ) < 1.0].max()
        nearby = env_power[(env_f > 60) & (env_f < 90)]
        assert at_2f > 10 * np.median(nearby)
