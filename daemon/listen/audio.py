"""Read audio files: the one way train, replay and evaluate get samples and per-file metadata.

Samples always come out mono float32 at SAMPLE_RATE, read in bounded blocks, downmixed by mean and
resampled with soxr 'HQ' (librosa.load's default), so load() == concat(stream()) == librosa.load
within float rounding. Every failure is an AudioError whose message names the file and the reason.
"""

from __future__ import annotations

import math
import os
import re
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr
import structlog

from daemon.constants import SAMPLE_RATE
from daemon.errors import AudioError

__all__ = [
    "SILENCE_DBFS",
    "AudioError",
    "AudioMetadata",
    "level_dbfs",
    "load",
    "metadata",
    "stream",
]

log = structlog.get_logger(__name__)

SILENCE_DBFS: Final = -200.0
"""Loudness reported for digital silence, and the floor for anything quieter.

A finite number instead of pydub's -inf, so tables and JSON stay valid (JSON has no -inf). It sits
below the quietest non-silent integer PCM file (one LSB of 32-bit PCM is about -187 dBFS), so a
value of exactly -200.0 reads unambiguously as "silent"."""

RESAMPLE_QUALITY: Final = "HQ"
"""soxr quality: librosa.load resamples with res_type 'soxr_hq', which is this setting."""

READ_SAMPLES: Final = 1 << 17
"""Samples (frames x channels) per libsndfile read: 512 KiB of float32, whatever the file's size."""

MIN_FRAME_RATE_HZ: Final = 1_000
MAX_FRAME_RATE_HZ: Final = 768_000
"""Source rates accepted. Outside this range no microphone recording exists, and a corrupt header
with a tiny rate would otherwise make the resampler emit up to 44100 samples per source frame."""

INT16_FULL_SCALE: Final = 32768.0
"""libsndfile's float normalization of PCM_16 samples (x / 0x8000)."""

LOAD_BLOCK_FRAMES: Final = 1 << 16
"""Output block size load() streams with; the result does not depend on it."""

_RIFF_SIZE_UNKNOWN: Final = 0xFFFF_FFFF
"""data-chunk size a streaming writer leaves when it never finalised the header."""
_RIFF_HEADER = struct.Struct("<4sI4s")
_CHUNK_HEADER = struct.Struct("<4sI")

_FLOAT_WIDTHS: Final = {"FLOAT": 4, "DOUBLE": 8}
_COMPANDED_WIDTH: Final = {"ULAW": 1, "ALAW": 1}
_PCM_BITS = re.compile(r"^(?:PCM_[SU]?|ALAC_|DPCM_|DWVW_)(\d+)$")
_BITS_PER_BYTE: Final = 8


@dataclass(frozen=True)
class AudioMetadata:
    """What a file holds, as stored (before downmix and resampling)."""

    file: str
    """File name without folders."""
    path: str
    """The path as given by the caller."""
    channels: int
    sample_width: int
    """Bytes per sample as stored: PCM_U8 1, PCM_16 2, PCM_24 3, PCM_32 4, FLOAT 4, DOUBLE 8;
    ULAW/ALAW 1; 0 for compressed encodings without a fixed width (Vorbis, MP3, ADPCM, ...)."""
    frame_rate: int
    """Hz, as stored."""
    frame_width: int
    """Bytes per frame: channels * sample_width."""
    length_s: float
    frame_count: int
    loudness_dbfs: float
    """RMS over all samples of all channels re full scale (pydub's dBFS); SILENCE_DBFS floor."""
    format: str
    """libsndfile major format, e.g. WAV, FLAC, OGG."""
    subtype: str
    """libsndfile subtype, e.g. PCM_16, FLOAT, VORBIS."""

    def as_row(self) -> dict[str, str | int | float]:
        """The metadata as one flat table row (CSV/JSON friendly, every value finite)."""
        return asdict(self)


@dataclass(frozen=True)
class _Probe:
    """Header facts checked before any sample is read."""

    path: str
    format: str
    subtype: str
    channels: int
    frame_rate: int
    frame_count: int

    @property
    def output_frames(self) -> int:
        """Samples at SAMPLE_RATE: ceil(frames * SAMPLE_RATE / rate), as librosa.load returns."""
        return -(-self.frame_count * SAMPLE_RATE // self.frame_rate)


class _Tally:
    """Frames read (for the truncation check) and, with ``loudness``, their running power."""

    def __init__(self, *, loudness: bool = True) -> None:
        self.loudness = loudness
        self.frames = 0
        self.sum_squares = 0.0
        self.samples = 0

    def add(self, block: npt.NDArray[np.float32]) -> None:
        # stream() has no use for loudness; the float64 pass cost 0.2-0.6 CPU s per hour of audio.
        if self.loudness:
            wide = block.astype(np.float64)
            self.sum_squares += float(np.einsum("ij,ij->", wide, wide))
        self.frames += block.shape[0]
        self.samples += block.size

    @property
    def loudness_dbfs(self) -> float:
        return _dbfs(self.sum_squares / self.samples if self.samples else 0.0)


def _dbfs(mean_square: float) -> float:
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square))


def level_dbfs(samples: npt.NDArray[np.floating]) -> float:
    """RMS level of any samples re full scale 1.0, in dB; SILENCE_DBFS for silence or no samples."""
    wide = np.asarray(samples, dtype=np.float64).ravel()
    if wide.size == 0:
        return SILENCE_DBFS
    return _dbfs(float(np.dot(wide, wide)) / wide.size)


@contextmanager
def _reading(path: str, what: str) -> Iterator[None]:
    """Turn any library or OS failure inside the block into an AudioError naming the file."""
    try:
        yield
    except AudioError:
        raise
    except PermissionError as exc:
        raise AudioError(f"{path}: permission denied") from exc
    except sf.LibsndfileError as exc:
        raise AudioError(f"{path}: {what}: {exc.error_string}") from exc
    except OSError as exc:
        raise AudioError(f"{path}: {what}: {exc.strerror or exc}") from exc
    except MemoryError as exc:
        raise AudioError(f"{path}: {what}: out of memory") from exc
    except Exception as exc:  # soundfile/soxr raise assorted types; none may reach the caller bare
        raise AudioError(f"{path}: {what}: {type(exc).__name__}: {exc}") from exc


def _sample_width(subtype: str) -> int:
    if subtype in _FLOAT_WIDTHS:
        return _FLOAT_WIDTHS[subtype]
    if subtype in _COMPANDED_WIDTH:
        return _COMPANDED_WIDTH[subtype]
    bits = _PCM_BITS.match(subtype)
    return -(-int(bits.group(1)) // _BITS_PER_BYTE) if bits else 0


def _check_riff(path: str, fh: BinaryIO, file_bytes: int) -> None:
    """Compare a RIFF/WAVE file's declared data size with the bytes present.

    libsndfile silently reads a cut file as a shorter one; a cut recording is a broken recording.
    Files that are not RIFF/WAVE are left to libsndfile.
    """
    head = fh.read(_RIFF_HEADER.size)
    if len(head) < _RIFF_HEADER.size:
        return
    riff, _, wave = _RIFF_HEADER.unpack(head)
    if riff != b"RIFF" or wave != b"WAVE":
        return
    offset = _RIFF_HEADER.size
    while offset + _CHUNK_HEADER.size <= file_bytes:
        fh.seek(offset)
        chunk_id, size = _CHUNK_HEADER.unpack(fh.read(_CHUNK_HEADER.size))
        body = offset + _CHUNK_HEADER.size
        if chunk_id == b"data":
            present = file_bytes - body
            if size == _RIFF_SIZE_UNKNOWN:
                log.warning("audio_data_size_unknown", file=path, data_bytes=present)
            elif size > present:
                raise AudioError(
                    f"{path}: truncated data: the WAV header declares {size} bytes of audio "
                    f"but only {present} are present"
                )
            return
        offset = body + size + (size & 1)  # RIFF chunks are padded to even length


def _probe(path: str | os.PathLike[str]) -> _Probe:
    """Check that the path is a readable, complete, non-empty audio file and read its header."""
    name = os.fspath(path)
    file = Path(name)
    try:
        info = file.stat()
    except FileNotFoundError as exc:
        raise AudioError(f"{name}: no such file") from exc
    except PermissionError as exc:
        raise AudioError(f"{name}: permission denied") from exc
    except OSError as exc:
        raise AudioError(f"{name}: cannot access: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise AudioError(f"{name}: is a directory, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        raise AudioError(f"{name}: not a regular file")
    if info.st_size == 0:
        raise AudioError(f"{name}: empty file (0 bytes)")
    with _reading(name, "cannot read"), file.open("rb") as fh:
        _check_riff(name, fh, info.st_size)
    try:
        with sf.SoundFile(name) as handle:
            probe = _Probe(
                path=name,
                format=str(handle.format),
                subtype=str(handle.subtype),
                channels=int(handle.channels),
                frame_rate=int(handle.samplerate),
                frame_count=int(handle.frames),
            )
    except sf.LibsndfileError as exc:
        raise AudioError(
            f"{name}: not a RIFF/WAVE file or any other format libsndfile reads "
            f"({exc.error_string})"
        ) from exc
    except Exception as exc:  # soundfile raises assorted types on odd headers
        raise AudioError(f"{name}: unreadable audio header: {type(exc).__name__}: {exc}") from exc
    if probe.channels < 1:
        raise AudioError(f"{name}: unsupported format: {probe.channels} channels")
    if not MIN_FRAME_RATE_HZ <= probe.frame_rate <= MAX_FRAME_RATE_HZ:
        raise AudioError(
            f"{name}: unsupported sample rate {probe.frame_rate} Hz "
            f"(accepted {MIN_FRAME_RATE_HZ}-{MAX_FRAME_RATE_HZ} Hz)"
        )
    if probe.frame_count <= 0:
        raise AudioError(f"{name}: no audio frames (zero-length data)")
    return probe


def _raw_blocks(probe: _Probe, tally: _Tally) -> Iterator[npt.NDArray[np.float32]]:
    """The file's frames as (frames, channels) float32 blocks, each checked finite and tallied."""
    read_frames = max(1, READ_SAMPLES // probe.channels)
    as_int16 = probe.subtype == "PCM_16"
    with _reading(probe.path, "cannot open"):
        handle = sf.SoundFile(probe.path)
    with handle:
        while True:
            with _reading(probe.path, "corrupt or truncated data"):
                if as_int16:
                    block = _int16_to_float(handle.read(read_frames, dtype="int16", always_2d=True))
                else:
                    block = handle.read(read_frames, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            if not as_int16:  # int16 samples are always finite
                _check_finite(probe.path, block, tally.frames)
            tally.add(block)
            yield block
    if tally.frames != probe.frame_count:
        raise AudioError(
            f"{probe.path}: truncated data: the header declares {probe.frame_count} frames "
            f"but only {tally.frames} could be read"
        )


def _int16_to_float(block: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """int16 / 32768 in float32: bit for bit what libsndfile returns for PCM_16 read as float.

    libsndfile converts one sample at a time; numpy's vectorized cast took 1 h of 16-bit audio
    from 0.49 to 0.07 CPU s.
    """
    return np.multiply(block, np.float32(1.0 / INT16_FULL_SCALE), dtype=np.float32)


def _check_finite(path: str, block: npt.NDArray[np.float32], first_frame: int) -> None:
    finite = np.isfinite(block)
    if finite.all():
        return
    frame, channel = (int(i[0]) for i in np.nonzero(~finite))
    value = block[frame, channel]
    raise AudioError(
        f"{path}: non-finite sample ({value}) at frame {first_frame + frame}, channel {channel}"
    )


def _downmix(block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # Same arithmetic as librosa.to_mono (float32 mean over channels), so results agree exactly.
    if block.shape[1] == 1:
        return block[:, 0]
    return np.asarray(np.mean(block, axis=1, dtype=np.float32), dtype=np.float32)


def _mono_blocks(probe: _Probe, tally: _Tally) -> Iterator[npt.NDArray[np.float32]]:
    """Mono float32 at SAMPLE_RATE, in blocks of any size, probe.output_frames samples in all."""
    if probe.frame_rate == SAMPLE_RATE:
        for block in _raw_blocks(probe, tally):
            yield _downmix(block)
        return
    with _reading(probe.path, "resampler failed"):
        resampler = soxr.ResampleStream(
            probe.frame_rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY
        )
    wanted = probe.output_frames
    emitted = 0

    def cut(out: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        nonlocal emitted
        out = out[: wanted - emitted]
        emitted += out.shape[0]
        return out

    for block in _raw_blocks(probe, tally):
        with _reading(probe.path, "resampler failed"):
            out = resampler.resample_chunk(_downmix(block))
        yield cut(out)
    with _reading(probe.path, "resampler failed"):
        out = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
    yield cut(out)
    # librosa fixes the length to ceil(frames * ratio); pad the same way if soxr fell short.
    yield np.zeros(wanted - emitted, dtype=np.float32)


def _rebuffer(
    blocks: Iterator[npt.NDArray[np.float32]], block_frames: int
) -> Iterator[npt.NDArray[np.float32]]:
    """Regroup a sample stream into blocks of exactly block_frames (the last may be shorter)."""
    pending: list[npt.NDArray[np.float32]] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += block.shape[0]
        if held < block_frames:
            continue
        joined = np.concatenate(pending)
        full = held - held % block_frames
        for start in range(0, full, block_frames):
            yield joined[start : start + block_frames]
        pending = [joined[full:]]
        held -= full
    if held:
        yield np.concatenate(pending)


def _stream(probe: _Probe, tally: _Tally, block_frames: int) -> Iterator[npt.NDArray[np.float32]]:
    yield from _rebuffer(_mono_blocks(probe, tally), block_frames)


def stream(path: str | os.PathLike[str], *, block_frames: int) -> Iterator[npt.NDArray[np.float32]]:
    """Yield the file as mono float32 blocks at SAMPLE_RATE (44.1 kHz).

    Every block has exactly `block_frames` samples except the last, which may be shorter (never
    empty); memory stays bounded whatever the file's length. The header is checked at call time,
    so a missing or broken file raises AudioError here; problems found in the samples (NaN/Inf,
    truncation) raise AudioError from the iteration. ValueError if block_frames < 1.
    """
    if block_frames < 1:
        raise ValueError(f"block_frames must be >= 1, got {block_frames}")
    return _stream(_probe(path), _Tally(loudness=False), block_frames)


def _metadata(probe: _Probe, tally: _Tally) -> AudioMetadata:
    width = _sample_width(probe.subtype)
    return AudioMetadata(
        file=Path(probe.path).name,
        path=probe.path,
        channels=probe.channels,
        sample_width=width,
        frame_rate=probe.frame_rate,
        frame_width=probe.channels * width,
        length_s=probe.frame_count / probe.frame_rate,
        frame_count=probe.frame_count,
        loudness_dbfs=tally.loudness_dbfs,
        format=probe.format,
        subtype=probe.subtype,
    )


def metadata(path: str | os.PathLike[str]) -> AudioMetadata:
    """The file's metadata; reads every sample (in blocks) for loudness and validity."""
    probe = _probe(path)
    tally = _Tally()
    for _ in _raw_blocks(probe, tally):
        pass
    return _metadata(probe, tally)


def load(path: str | os.PathLike[str]) -> tuple[npt.NDArray[np.float32], AudioMetadata]:
    """The whole file as mono float32 at SAMPLE_RATE, and its metadata, from one pass.

    The samples are exactly the concatenation of stream(path, block_frames=any); they are
    written into one preallocated array, so peak memory is the result's size.
    """
    probe = _probe(path)
    tally = _Tally()
    with _reading(probe.path, "out of memory for the decoded samples"):
        samples = np.empty(probe.output_frames, dtype=np.float32)
    filled = 0
    for block in _stream(probe, tally, LOAD_BLOCK_FRAMES):
        if filled + block.shape[0] > samples.shape[0]:
            raise AudioError(f"{probe.path}: decoded more samples than the header declares")
        samples[filled : filled + block.shape[0]] = block
        filled += block.shape[0]
    if filled != samples.shape[0]:
        raise AudioError(f"{probe.path}: decoded {filled} samples, expected {samples.shape[0]}")
    return samples, _metadata(probe, tally)
