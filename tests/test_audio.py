"""Tests for daemon.listen.audio: decoding, downmix, librosa parity, streaming, metadata, broken
files."""

from __future__ import annotations

import json
import math
import os
import pwd
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.constants import SAMPLE_RATE
from daemon.errors import AudioError, CoronaError
from daemon.listen import audio

RESAMPLE_ATOL = 1e-6
"""Agreement with librosa.load(sr=44100) for resampled files, in full-scale units. Both run soxr
'HQ' on the same float32 mono input, so in practice they agree bit for bit; the tolerance only
leaves room for a future soxr that rounds differently between its streaming and one-shot paths."""

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_IEEE_FLOAT = 3


def wav_bytes(
    *,
    format_tag: int,
    channels: int,
    rate: int,
    bits: int,
    data: bytes,
    data_size: int | None = None,
) -> bytes:
    """A canonical 44-byte-header RIFF/WAVE file built by hand (independent of libsndfile)."""
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * block_align, block_align, bits)
    declared = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", declared) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def sine(freq_hz: float, amplitude: float, rate: int, length_s: float) -> np.ndarray:
    t = np.arange(round(rate * length_s)) / rate
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def noise(rate: int, length_s: float, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.25 * rng.standard_normal((round(rate * length_s), channels))).astype(np.float32)


def collect(path: Path, block_frames: int) -> list[np.ndarray]:
    return list(audio.stream(path, block_frames=block_frames))


class TestDecoding:
    """Each stored sample format decodes to the float value libsndfile's scaling promises."""

    def test_pcm_u8(self, tmp_path: Path) -> None:
        """Unsigned 8-bit: 0 -> -1, 128 -> 0, 255 -> 127/128."""
        raw = bytes([0, 64, 128, 192, 255])
        path = write(
            tmp_path / "u8.wav",
            wav_bytes(format_tag=WAVE_FORMAT_PCM, channels=1, rate=SAMPLE_RATE, bits=8, data=raw),
        )
        samples, meta = audio.load(path)
        expected = (np.array(list(raw), dtype=np.float64) - 128) / 128
        np.testing.assert_array_equal(samples, expected.astype(np.float32))
        assert (meta.subtype, meta.sample_width) == ("PCM_U8", 1)

    def test_pcm_16(self, tmp_path: Path) -> None:
        """Signed 16-bit v -> v / 32768, so 32767 is just under 1.0 and -32768 is -1.0."""
        values = np.array([0, 1, -1, 16384, 32767, -32768], dtype="<i2")
        path = write(
            tmp_path / "s16.wav",
            wav_bytes(
                format_tag=WAVE_FORMAT_PCM,
                channels=1,
                rate=SAMPLE_RATE,
                bits=16,
                data=values.tobytes(),
            ),
        )
        samples, meta = audio.load(path)
        np.testing.assert_array_equal(samples, (values / 32768).astype(np.float32))
        assert samples[4] == pytest.approx(1.0, abs=1e-4)
        assert (meta.subtype, meta.sample_width) == ("PCM_16", 2)

    def test_pcm_24(self, tmp_path: Path) -> None:
        """Signed 24-bit (3 little-endian bytes) v -> v / 2**23."""
        values = np.array([0, 1, -1, 2**22, 2**23 - 1, -(2**23)], dtype=np.int64)
        packed = b"".join(int(v).to_bytes(3, "little", signed=True) for v in values)
        path = write(
            tmp_path / "s24.wav",
            wav_bytes(
                format_tag=WAVE_FORMAT_PCM, channels=1, rate=SAMPLE_RATE, bits=24, data=packed
            ),
        )
        samples, meta = audio.load(path)
        np.testing.assert_array_equal(samples, (values / 2**23).astype(np.float32))
        assert (meta.subtype, meta.sample_width, meta.frame_width) == ("PCM_24", 3, 3)

    def test_pcm_32(self, tmp_path: Path) -> None:
        """Signed 32-bit v -> v / 2**31 (rounded to float32)."""
        values = np.array([0, 2**8, -(2**8), 2**30, 2**31 - 1, -(2**31)], dtype="<i4")
        path = write(
            tmp_path / "s32.wav",
            wav_bytes(
                format_tag=WAVE_FORMAT_PCM,
                channels=1,
                rate=SAMPLE_RATE,
                bits=32,
                data=values.tobytes(),
            ),
        )
        samples, meta = audio.load(path)
        np.testing.assert_allclose(samples, values / 2**31, rtol=1e-7, atol=0)
        assert (meta.subtype, meta.sample_width) == ("PCM_32", 4)

    @pytest.mark.parametrize(
        ("dtype", "bits", "subtype", "width"),
        [("<f4", 32, "FLOAT", 4), ("<f8", 64, "DOUBLE", 8)],
    )
    def test_float(self, tmp_path: Path, dtype: str, bits: int, subtype: str, width: int) -> None:
        """IEEE float files come back unscaled, including values beyond full scale."""
        values = np.array([0.0, 0.1, -0.5, 1.0, -1.0, 1.5, -2.25], dtype=dtype)
        path = write(
            tmp_path / f"{subtype}.wav",
            wav_bytes(
                format_tag=WAVE_FORMAT_IEEE_FLOAT,
                channels=1,
                rate=SAMPLE_RATE,
                bits=bits,
                data=values.tobytes(),
            ),
        )
        samples, meta = audio.load(path)
        assert samples.dtype == np.float32
        np.testing.assert_array_equal(samples, values.astype(np.float32))
        assert (meta.subtype, meta.sample_width) == (subtype, width)

    @pytest.mark.parametrize(("fmt", "subtype"), [("FLAC", "PCM_16"), ("OGG", "VORBIS")])
    def test_other_libsndfile_formats(self, tmp_path: Path, fmt: str, subtype: str) -> None:
        """FLAC and Ogg Vorbis read through libsndfile and agree with librosa.load."""
        path = tmp_path / f"clip.{fmt.lower()}"
        sf.write(path, noise(SAMPLE_RATE, 0.5, 2), SAMPLE_RATE, format=fmt, subtype=subtype)
        samples, meta = audio.load(path)
        reference, _ = librosa.load(path, sr=SAMPLE_RATE)
        np.testing.assert_array_equal(samples, reference)
        assert (meta.format, meta.subtype, meta.channels) == (fmt, subtype, 2)


class TestDownmix:
    """Multichannel files become the per-frame mean of their channels."""

    @pytest.mark.parametrize("channels", [2, 3, 6])
    def test_mean_of_channels(self, tmp_path: Path, channels: int) -> None:
        """The mono sample is the float32 mean of the channels of that frame."""
        frames = noise(SAMPLE_RATE, 0.1, channels, seed=channels)
        path = tmp_path / f"ch{channels}.wav"
        sf.write(path, frames, SAMPLE_RATE, subtype="FLOAT")
        samples, meta = audio.load(path)
        np.testing.assert_allclose(samples, frames.mean(axis=1), rtol=0, atol=1e-7)
        assert meta.channels == channels

    def test_stereo_left_right(self, tmp_path: Path) -> None:
        """Left 0.5 and right -0.25 give 0.125; opposite channels cancel to 0."""
        frames = np.array([[0.5, -0.25], [1.0, -1.0], [0.0, 0.75]], dtype=np.float32)
        path = tmp_path / "lr.wav"
        sf.write(path, frames, SAMPLE_RATE, subtype="FLOAT")
        samples, _ = audio.load(path)
        np.testing.assert_array_equal(samples, np.array([0.125, 0.0, 0.375], dtype=np.float32))


class TestLibrosaParity:
    """load() gives what librosa.load(sr=44100) gives, so training and replay see the same input."""

    @pytest.mark.parametrize("rate", [48_000, 22_050, 8_000, 96_000])
    @pytest.mark.parametrize("channels", [1, 2])
    def test_resampled(self, tmp_path: Path, rate: int, channels: int) -> None:
        """Other rates resample to 44.1 kHz within RESAMPLE_ATOL of librosa, same length."""
        path = tmp_path / f"r{rate}c{channels}.wav"
        sf.write(path, noise(rate, 0.7, channels), rate, subtype="PCM_16")
        samples, meta = audio.load(path)
        reference, reference_rate = librosa.load(path, sr=SAMPLE_RATE)
        assert reference_rate == SAMPLE_RATE
        assert samples.shape == reference.shape
        assert samples.shape[0] == math.ceil(meta.frame_count * SAMPLE_RATE / rate)
        np.testing.assert_allclose(samples, reference, rtol=0, atol=RESAMPLE_ATOL)

    @pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
    def test_native_rate_is_identical(self, tmp_path: Path, subtype: str) -> None:
        """At 44.1 kHz no resampling happens and the samples equal librosa's bit for bit."""
        path = tmp_path / f"{subtype}.wav"
        sf.write(path, noise(SAMPLE_RATE, 0.3, 2), SAMPLE_RATE, subtype=subtype)
        samples, _ = audio.load(path)
        reference, _ = librosa.load(path, sr=SAMPLE_RATE)
        np.testing.assert_array_equal(samples, reference)


class TestStream:
    """stream() yields fixed-size blocks whose concatenation is exactly load()."""

    @pytest.fixture(params=[(48_000, 2), (SAMPLE_RATE, 1), (22_050, 3)], ids=str)
    def clip(self, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
        rate, channels = request.param
        path = tmp_path / f"clip-{rate}-{channels}.wav"
        sf.write(path, noise(rate, 1.7, channels, seed=rate), rate, subtype="PCM_24")
        return path

    @pytest.mark.parametrize("block_frames", [1, 7, 512, 4096, 44_100, 65_537, 10**6])
    def test_concatenation_equals_load(self, clip: Path, block_frames: int) -> None:
        """Any block size gives the same samples, bit for bit, as load()."""
        loaded, _ = audio.load(clip)
        blocks = collect(clip, block_frames)
        np.testing.assert_array_equal(np.concatenate(blocks), loaded)
        assert all(block.dtype == np.float32 and block.ndim == 1 for block in blocks)

    @pytest.mark.parametrize("block_frames", [1000, 4096, 44_100])
    def test_block_sizes(self, clip: Path, block_frames: int) -> None:
        """Every block has block_frames samples except a shorter, non-empty last one."""
        blocks = collect(clip, block_frames)
        assert all(block.shape == (block_frames,) for block in blocks[:-1])
        assert 0 < blocks[-1].shape[0] <= block_frames

    @pytest.mark.parametrize("block_frames", [0, -5])
    def test_bad_block_size(self, clip: Path, block_frames: int) -> None:
        """A non-positive block size is a programming error: ValueError."""
        with pytest.raises(ValueError, match="block_frames"):
            audio.stream(clip, block_frames=block_frames)

    def test_header_checked_at_call_time(self, tmp_path: Path) -> None:
        """A missing file raises when stream() is called, before any iteration."""
        with pytest.raises(AudioError, match=r"gone\.wav"):
            audio.stream(tmp_path / "gone.wav", block_frames=1024)

    def test_streams_before_reading_everything(self, tmp_path: Path) -> None:
        """Blocks before a late NaN are yielded first: the file is read incrementally."""
        values = np.full(300_000, 0.25, dtype=np.float32)
        values[290_000] = np.nan
        path = tmp_path / "late-nan.wav"
        sf.write(path, values, SAMPLE_RATE, subtype="FLOAT")
        received: list[int] = []

        def read_all() -> None:
            for block in audio.stream(path, block_frames=4096):
                received.append(block.shape[0])

        with pytest.raises(AudioError, match=r"late-nan\.wav.*frame 290000"):
            read_all()
        assert 0 < sum(received) < 290_000


class TestMetadata:
    """metadata() reports the stored format and loudness; load() returns the same."""

    def test_known_file(self, tmp_path: Path) -> None:
        """2 s 16-bit stereo 48 kHz sine of amplitude A: all fields; dBFS = 20 log10(A / sqrt 2)."""
        amplitude = 0.5
        tone = sine(1000.0, amplitude, 48_000, 2.0)
        path = tmp_path / "tone.wav"
        sf.write(path, np.column_stack([tone, tone]), 48_000, subtype="PCM_16")
        meta = audio.metadata(path)
        assert meta.file == "tone.wav"
        assert meta.path == str(path)
        assert (meta.channels, meta.sample_width, meta.frame_width) == (2, 2, 4)
        assert (meta.frame_rate, meta.frame_count, meta.length_s) == (48_000, 96_000, 2.0)
        assert (meta.format, meta.subtype) == ("WAV", "PCM_16")
        expected_dbfs = 20 * math.log10(amplitude / math.sqrt(2))
        assert meta.loudness_dbfs == pytest.approx(expected_dbfs, abs=0.01)
        assert audio.load(path)[1] == meta

    @pytest.mark.parametrize(
        ("fmt", "subtype", "width"),
        [
            ("WAV", "PCM_U8", 1),
            ("WAV", "PCM_16", 2),
            ("WAV", "PCM_24", 3),
            ("WAV", "PCM_32", 4),
            ("WAV", "FLOAT", 4),
            ("WAV", "DOUBLE", 8),
            ("WAV", "ULAW", 1),
            ("FLAC", "PCM_24", 3),
            ("OGG", "VORBIS", 0),
        ],
    )
    def test_sample_width(self, tmp_path: Path, fmt: str, subtype: str, width: int) -> None:
        """Sample width in bytes follows the stored subtype; 0 for compressed encodings."""
        path = tmp_path / f"w.{fmt.lower()}"
        sf.write(path, noise(16_000, 0.2, 3), 16_000, format=fmt, subtype=subtype)
        meta = audio.metadata(path)
        assert (meta.sample_width, meta.frame_width) == (width, 3 * width)

    def test_loudness_counts_every_channel(self, tmp_path: Path) -> None:
        """dBFS is the RMS over all samples of all channels, not of the downmix."""
        frames = np.column_stack([np.full(1000, 0.5), np.full(1000, -0.5)]).astype(np.float32)
        path = tmp_path / "anti.wav"
        sf.write(path, frames, SAMPLE_RATE, subtype="FLOAT")
        assert audio.metadata(path).loudness_dbfs == pytest.approx(20 * math.log10(0.5))
        assert not np.any(audio.load(path)[0])  # the downmix itself is silent

    def test_silence_is_finite_floor(self, tmp_path: Path) -> None:
        """Digital silence reports SILENCE_DBFS, a finite number JSON can carry."""
        path = tmp_path / "silence.wav"
        sf.write(path, np.zeros(4410, dtype=np.int16), SAMPLE_RATE, subtype="PCM_16")
        meta = audio.metadata(path)
        assert meta.loudness_dbfs == audio.SILENCE_DBFS
        assert json.loads(json.dumps(meta.as_row(), allow_nan=False))["loudness_dbfs"] == -200.0

    def test_as_row(self, tmp_path: Path) -> None:
        """as_row() is a flat dict in table order with every field, plain JSON types."""
        path = tmp_path / "row.wav"
        sf.write(path, noise(SAMPLE_RATE, 0.1, 1), SAMPLE_RATE, subtype="PCM_16")
        row = audio.metadata(path).as_row()
        assert list(row) == [
            "file",
            "path",
            "channels",
            "sample_width",
            "frame_rate",
            "frame_width",
            "length_s",
            "frame_count",
            "loudness_dbfs",
            "format",
            "subtype",
        ]
        assert all(isinstance(value, str | int | float) for value in row.values())

    def test_level_dbfs(self) -> None:
        """level_dbfs() of a full-scale sine is -3.01 dB; empty and silent give the floor."""
        assert audio.level_dbfs(sine(441.0, 1.0, SAMPLE_RATE, 1.0)) == pytest.approx(
            -3.0103, abs=1e-3
        )
        assert audio.level_dbfs(np.zeros(10, dtype=np.float32)) == audio.SILENCE_DBFS
        assert audio.level_dbfs(np.zeros(0, dtype=np.float32)) == audio.SILENCE_DBFS

    def test_unfinalised_header_is_read(self, tmp_path: Path) -> None:
        """A data size of 0xFFFFFFFF (writer never finalised the header) reads what is there."""
        values = np.arange(-500, 500, dtype="<i2")
        path = write(
            tmp_path / "live.wav",
            wav_bytes(
                format_tag=WAVE_FORMAT_PCM,
                channels=1,
                rate=SAMPLE_RATE,
                bits=16,
                data=values.tobytes(),
                data_size=0xFFFF_FFFF,
            ),
        )
        samples, meta = audio.load(path)
        assert meta.frame_count == 1000
        np.testing.assert_array_equal(samples, (values / 32768).astype(np.float32))


def _truncated_flac(tmp_path: Path) -> Path:
    path = tmp_path / "cut.flac"
    sf.write(path, noise(SAMPLE_RATE, 1.0, 2), SAMPLE_RATE, format="FLAC")
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


def _float_wav(path: Path, values: np.ndarray) -> Path:
    sf.write(path, values.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
    return path


def _pcm16_wav(path: Path, *, frames: int, keep_data_bytes: int | None = None) -> Path:
    data = np.zeros(frames, dtype="<i2").tobytes()
    content = wav_bytes(
        format_tag=WAVE_FORMAT_PCM, channels=1, rate=SAMPLE_RATE, bits=16, data=data
    )
    if keep_data_bytes is not None:
        content = content[: 44 + keep_data_bytes]
    return write(path, content)


def _with_nan_in_second_block(path: Path) -> Path:
    values = np.zeros(audio.READ_SAMPLES + 1000, dtype=np.float32)
    values[audio.READ_SAMPLES + 500] = np.nan
    return _float_wav(path, values)


BROKEN: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty file": (lambda d: write(d / "empty.wav", b""), "empty file"),
    "random bytes": (
        lambda d: write(d / "random.wav", np.random.default_rng(1).bytes(5000)),
        "not a RIFF/WAVE",
    ),
    "text file": (
        lambda d: write(d / "notes.wav", b"tower 17, insulator B\n" * 50),
        "not a RIFF/WAVE",
    ),
    "data cut in half": (
        lambda d: _pcm16_wav(d / "half.wav", frames=4410, keep_data_bytes=4410),
        "truncated",
    ),
    "zero frames": (lambda d: _pcm16_wav(d / "zero.wav", frames=0), "no audio frames"),
    "NaN": (lambda d: _float_wav(d / "nan.wav", np.array([0.0, np.nan, 0.5])), "non-finite"),
    "+Inf": (lambda d: _float_wav(d / "inf.wav", np.array([0.0, 0.1, np.inf])), "non-finite"),
    "-Inf": (lambda d: _float_wav(d / "ninf.wav", np.array([-np.inf, 0.1])), "non-finite"),
    "NaN in a later block": (
        lambda d: _with_nan_in_second_block(d / "late.wav"),
        f"frame {audio.READ_SAMPLES + 500}",
    ),
    "directory": (lambda d: _mkdir(d / "folder.wav"), "is a directory"),
    "missing": (lambda d: d / "missing.wav", "no such file"),
    "fifo": (lambda d: _mkfifo(d / "pipe.wav"), "not a regular file"),
    "RIFF header, garbage fmt": (
        lambda d: write(d / "garbage-fmt.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 40),
        "not a RIFF/WAVE",
    ),
    "unsupported sample rate": (
        lambda d: write(
            d / "slow.wav",
            wav_bytes(
                format_tag=WAVE_FORMAT_PCM, channels=1, rate=100, bits=16, data=b"\x00" * 400
            ),
        ),
        "unsupported sample rate",
    ),
    "truncated FLAC": (_truncated_flac, "corrupt or truncated"),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _mkfifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _consume_stream(path: Path) -> None:
    for _ in audio.stream(path, block_frames=1024):
        pass


READERS: dict[str, Callable[[Path], object]] = {
    "load": audio.load,
    "metadata": audio.metadata,
    "stream": _consume_stream,
}


class TestBrokenFiles:
    """Every unusable file gives an AudioError naming the file and the reason."""

    @pytest.mark.parametrize("reader", list(READERS))
    @pytest.mark.parametrize("case", list(BROKEN))
    def test_audio_error_names_file(self, tmp_path: Path, case: str, reader: str) -> None:
        """load, metadata and a consumed stream all raise AudioError with name and reason."""
        make, reason = BROKEN[case]
        path = make(tmp_path)
        with pytest.raises(AudioError) as caught:
            READERS[reader](path)
        assert path.name in str(caught.value)
        assert reason in str(caught.value)
        assert isinstance(caught.value, CoronaError)

    def test_unreadable_file(self, unreadable: Path) -> None:
        """A file without read permission gives AudioError 'permission denied' with its name.

        Root ignores file modes, so as root the read runs in a forked child that has switched
        to the unprivileged 'nobody' user; the code under test is the same.
        """
        message = _load_as_unprivileged(unreadable)
        assert message.startswith("AudioError:"), message
        assert unreadable.name in message
        assert "permission denied" in message


@pytest.fixture
def unreadable() -> Iterator[Path]:
    """A valid WAV with mode 000 in a directory everyone may enter (tmp_path's parents are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="audio-perm-"))
    try:
        folder.chmod(0o755)
        path = folder / "locked.wav"
        sf.write(path, np.zeros(100, dtype=np.int16), SAMPLE_RATE)
        path.chmod(0)
        yield path
    finally:
        shutil.rmtree(folder)


def _load_as_unprivileged(path: Path) -> str:
    """'AudioError: <message>' or what else load(path) did, run without root's override."""
    if os.geteuid() != 0:
        return _describe_load(path)
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop root for good, report, and leave without running pytest's exit
        status = 1
        try:
            os.close(read_end)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(write_end, _describe_load(path).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, message
    return message


def _describe_load(path: Path) -> str:
    try:
        audio.load(path)
    except AudioError as exc:
        return f"AudioError: {exc}"
    except BaseException as exc:  # noqa: BLE001 - the point is to name whatever escaped
        return f"{type(exc).__name__}: {exc}"
    return "loaded"


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _small_valid_wav() -> bytes:
    data = (np.sin(np.arange(64) / 3) * 12000).astype("<i2").tobytes()
    return wav_bytes(format_tag=WAVE_FORMAT_PCM, channels=1, rate=22_050, bits=16, data=data)


@st.composite
def wav_like(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, a plausible header over arbitrary data, or a valid WAV with bytes hit."""
    kind = draw(st.sampled_from(["raw", "header", "mutated"]))
    if kind == "raw":
        return draw(st.binary(max_size=2048))
    if kind == "header":
        return wav_bytes(
            format_tag=draw(st.sampled_from([WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT, 2, 0xFFFE])),
            channels=draw(st.integers(1, 8)),
            rate=draw(st.sampled_from([1, 999, 8000, 44_100, 48_000, 768_000, 768_001])),
            bits=draw(st.sampled_from([8, 16, 24, 32, 64])),
            data=draw(st.binary(max_size=2048)),
            data_size=draw(st.none() | st.integers(0, 2**32 - 1)),
        )
    content = bytearray(_small_valid_wav())
    for position, value in draw(
        st.lists(st.tuples(st.integers(0, len(content) - 1), st.integers(0, 255)), max_size=6)
    ):
        content[position] = value
    return bytes(content[: draw(st.integers(0, len(content)))])


class TestFuzz:
    """No input file makes the reader fail in any way other than AudioError."""

    @settings(max_examples=200, deadline=None)
    @given(content=wav_like())
    def test_arbitrary_bytes(self, fuzz_dir: Path, content: bytes) -> None:
        """Any bytes named .wav give AudioError or a finite float32 mono array of right length."""
        path = fuzz_dir / "fuzz.wav"
        path.write_bytes(content)
        message: str | None = None
        try:
            samples, meta = audio.load(path)
        except AudioError as exc:
            message = str(exc)
        if message is not None:
            assert "fuzz.wav" in message
            return
        assert samples.dtype == np.float32
        assert samples.ndim == 1
        assert samples.shape[0] == math.ceil(meta.frame_count * SAMPLE_RATE / meta.frame_rate)
        assert np.isfinite(samples).all()
        assert math.isfinite(meta.loudness_dbfs)
