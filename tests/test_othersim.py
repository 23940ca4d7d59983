"""bench/othersim: the independent simulator is deterministic, well-formed and physical."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import othersim

ROOT = Path(__file__).resolve().parents[1]
SR = 44100


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path: Path) -> None:
    kwargs = {"normal": 2, "anomalous": 2, "duration_s": (0.5, 1.5)}
    othersim.write_dataset(tmp_path / "a", seed=7, **kwargs)  # type: ignore[arg-type]
    othersim.write_dataset(tmp_path / "b", seed=7, **kwargs)  # type: ignore[arg-type]
    othersim.write_dataset(tmp_path / "c", seed=8, **kwargs)  # type: ignore[arg-type]
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert len(a) == 5  # 4 WAVs + manifest
    assert a == b
    wavs = [name for name in a if name.endswith(".wav")]
    assert all(a[name] != c[name] for name in wavs)


def test_manifest_labels_and_wav_format(tmp_path: Path) -> None:
    manifest = othersim.write_dataset(
        tmp_path, normal=2, anomalous=1, seed=3, duration_s=(1.0, 2.0)
    )
    assert manifest == tmp_path / "manifest.csv"
    with manifest.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["normal", "normal", "anomalous"]
    for row in rows:
        assert row["file"].startswith(f"{row['label']}/")
        assert row["file"].endswith(".wav")
        info = sf.info(str(tmp_path / row["file"]))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            SR,
            1,
            "PCM_16",
            "WAV",
        )
        assert 1.0 <= info.duration <= 2.0
        assert abs(info.duration - float(row["duration_s"])) < 1e-3
        assert row["line_hz"] in ("50.0", "60.0")
        audio, _ = sf.read(str(tmp_path / row["file"]), dtype="float32")
        assert abs(othersim.level_dbfs(audio) - float(row["level_dbfs"])) < 0.01
        # corona columns are filled exactly for the anomalous files
        assert (row["snr_db"] != "") == (row["label"] == "anomalous")
        assert (row["corona_distance_m"] != "") == (row["label"] == "anomalous")


@pytest.mark.parametrize("label", ["normal", "anomalous"])
def test_render_clip_range_length_and_determinism(label: str) -> None:
    x, meta = othersim.render_clip(np.random.default_rng(11), label=label, duration_s=1.25)
    y, meta2 = othersim.render_clip(np.random.default_rng(11), label=label, duration_s=1.25)
    assert x.dtype == np.float32
    assert x.shape == (round(1.25 * SR),)
    assert np.all(np.abs(x) <= 1.0)
    assert np.all(np.isfinite(x))
    assert np.array_equal(x, y)
    assert meta == meta2
    assert np.array_equal(np.rint(x * 32768.0) / 32768.0, x)  # 16-bit values
    assert meta["label"] == label
    assert meta["line_hz"] in (50.0, 60.0)
    assert othersim.level_dbfs(x) > -100.0


def test_render_clip_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="label"):
        othersim.render_clip(np.random.default_rng(0), label="corona", duration_s=1.0)
    with pytest.raises(ValueError, match="duration_s"):
        othersim.render_clip(np.random.default_rng(0), label="normal", duration_s=0.0)


def test_corona_component_level_and_locking() -> None:
    x = othersim.corona(np.random.default_rng(5), 3 * SR, line_hz=60.0, level_dbfs=-30.0)
    assert x.dtype == np.float32
    assert x.shape == (3 * SR,)
    assert othersim.level_dbfs(x) == pytest.approx(-30.0, abs=0.05)
    assert othersim.envelope_2f_db(x, 60.0) > 6.0
    again = othersim.corona(np.random.default_rng(5), 3 * SR, line_hz=60.0, level_dbfs=-30.0)
    assert np.array_equal(x, again)


def test_high_band_envelope_peaks_at_twice_line_frequency_only_with_corona() -> None:
    """Same generator state -> same background and microphone; with corona clearly above it,
    the >2 kHz envelope has a spectral peak at 2f; without, it has none (hum, insects near
    2f, rain and wind included: the seeds cover several)."""
    normal_mod: list[float] = []
    anomalous_mod: list[float] = []
    seen: set[str] = set()
    for seed in range(5):
        n_x, n_meta = othersim.render_clip(
            np.random.default_rng(seed), label="normal", duration_s=4.0
        )
        a_x, a_meta = othersim.render_clip(
            np.random.default_rng(seed), label="anomalous", duration_s=4.0, snr_db=10.0
        )
        assert n_meta["line_hz"] == a_meta["line_hz"]
        assert n_meta["weather"] == a_meta["weather"]
        line_hz = float(n_meta["line_hz"])
        normal_mod.append(othersim.envelope_2f_db(n_x, line_hz))
        anomalous_mod.append(othersim.envelope_2f_db(a_x, line_hz))
        seen.update(k for k in ("insects", "transformer_hum", "rain") if n_meta[k])
    assert seen == {"insects", "transformer_hum", "rain"}  # the seeds exercise the confounders
    assert max(normal_mod) < 6.0, normal_mod
    assert min(anomalous_mod) > 6.0, anomalous_mod
    assert float(np.median(anomalous_mod)) > 10.0, anomalous_mod
    assert all(a > n + 4.0 for a, n in zip(anomalous_mod, normal_mod, strict=True))


def test_cli_writes_and_refuses_clearly(tmp_path: Path) -> None:
    out = tmp_path / "set"
    cmd = [sys.executable, "-m", "bench.othersim", str(out), "--seed", "1"]
    ok = subprocess.run(
        [*cmd, "--normal", "1", "--anomalous", "1", "--duration", "0.5", "0.5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert (out / "manifest.csv").is_file()
    assert len(list(out.rglob("*.wav"))) == 2
    again = subprocess.run(
        [*cmd, "--normal", "1", "--anomalous", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 2
    assert "not an empty directory" in again.stderr
    bad = subprocess.run(
        [*cmd[:-2], "--seed", "x", "--normal", "1", "--anomalous", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "--seed" in bad.stderr
