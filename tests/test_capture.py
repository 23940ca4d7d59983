"""Live capture through real PortAudio: the ALSA file device (exact samples, unpaced) and a
private PulseAudio null sink (paced, and stoppable/pausable to make the device fail)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from daemon.config import AudioSettings
from daemon.constants import SAMPLE_RATE
from daemon.errors import CaptureError
from daemon.listen.capture import Capture, list_input_devices, resolve_input_device
from tests.fixtures.microphone import MicEnv, PulseSink, activated, alsa_file_mic, write_wav

CLIP_S = 2.0
FILE_BLOCK_S = 0.005
FAST_RETRY = {"retry_initial_s": 0.05, "retry_max_s": 0.3}


def noise(seconds: float, seed: int = 7, channels: int = 1) -> np.ndarray:
    """Full-range int16 noise: any skipped, repeated or reordered frame shows up."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    shape = (n, channels) if channels > 1 else n
    return rng.integers(-32768, 32768, size=shape, dtype=np.int16)


def collect(capture: Capture, n_frames: int, timeout_s: float = 5.0) -> np.ndarray:
    """Read until n_frames have arrived (the file device is unpaced: read as fast as we can)."""
    parts: list[np.ndarray] = []
    have = 0
    deadline = time.monotonic() + timeout_s
    while have < n_frames and time.monotonic() < deadline:
        block = capture.read(0.5)
        if block is not None:
            parts.append(block)
            have += block.size
    assert have >= n_frames, f"got {have} of {n_frames} frames; state={capture.state}"
    return np.concatenate(parts)[:n_frames]


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def file_mic(alsa_mic: MicEnv) -> Iterator[MicEnv]:
    """The ALSA file microphone holding CLIP_S of noise, active in this process."""
    alsa_mic.write(noise(CLIP_S))
    with activated(alsa_mic.env):
        yield alsa_mic


@pytest.fixture
def pulse_mic(pulse_sink: PulseSink) -> Iterator[PulseSink]:
    """The PulseAudio null-sink monitor, active in this process as the `pulse` device."""
    with activated(pulse_sink.env):
        yield pulse_sink


def settings(device: str | int | None, **overrides: float) -> AudioSettings:
    # The file device is unpaced: ~13 M frames/s with 5 ms blocks, ~200 M/s with 100 ms blocks
    # (one callback per block is the brake). Small blocks and a 2 min ring give a reader that
    # starts late about a second before the clip's start is overwritten.
    values: dict[str, float] = {"ring_s": 120.0, "block_s": FILE_BLOCK_S} | overrides
    return AudioSettings(device=device, **values)  # type: ignore[arg-type]


class TestDevices:
    def test_file_device_is_listed_as_input(self, file_mic: MicEnv) -> None:
        """list_input_devices() shows the ALSA file microphone with its index and channels."""
        names = {d["name"]: d for d in list_input_devices()}
        assert file_mic.device in names
        assert names[file_mic.device]["max_input_channels"] >= 1
        assert isinstance(names[file_mic.device]["index"], int)

    def test_resolves_by_exact_name_substring_and_index(self, file_mic: MicEnv) -> None:
        """A device is found by its exact name, a unique substring, or its index."""
        index, name = resolve_input_device("tower_mic")
        assert name == "tower_mic"
        assert resolve_input_device("_MIC") == (index, name)
        assert resolve_input_device(index) == (index, name)

    def test_unknown_device_names_it_and_lists_inputs(self, file_mic: MicEnv) -> None:
        """An unknown device raises CaptureError naming it and listing the inputs seen."""
        with pytest.raises(CaptureError, match=r"'no_such_mic'.*tower_mic"):
            resolve_input_device("no_such_mic")
        with pytest.raises(CaptureError, match="index 999"):
            resolve_input_device(999)

    def test_ambiguous_substring_is_refused(self, file_mic: MicEnv) -> None:
        """A substring matching several inputs is an error that lists the candidates."""
        with pytest.raises(CaptureError, match=r"several inputs.*tower_file.*tower_mic"):
            resolve_input_device("tower")


class TestFileCapture:
    @pytest.mark.parametrize("block_s", [0.005, 0.02])
    def test_delivers_the_files_exact_samples(self, file_mic: MicEnv, block_s: float) -> None:
        """Capture returns the file's int16 samples / 32768 as float32, in order, none lost."""
        with Capture(settings("tower_mic", block_s=block_s)) as capture:
            got = collect(capture, round(CLIP_S * SAMPLE_RATE))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, file_mic.expected())
        assert capture.overflows == 0
        assert capture.state == "stopped"

    def test_after_the_file_comes_silence(self, file_mic: MicEnv) -> None:
        """Past the end of the file the device delivers zeros (the fixture pads with silence)."""
        n = round(CLIP_S * SAMPLE_RATE)
        with Capture(settings("tower_mic")) as capture:
            got = collect(capture, n + SAMPLE_RATE)
        np.testing.assert_array_equal(got[:n], file_mic.expected())
        assert not np.any(got[n:])

    def test_device_by_index(self, file_mic: MicEnv) -> None:
        """A PortAudio index in the settings opens the same device with the same samples."""
        index = next(d["index"] for d in list_input_devices() if d["name"] == "tower_mic")
        with Capture(settings(index)) as capture:
            got = collect(capture, round(CLIP_S * SAMPLE_RATE))
            assert capture.device_name == "tower_mic"
        np.testing.assert_array_equal(got, file_mic.expected())

    def test_two_channels_are_downmixed_by_mean(self, tmp_path: Path) -> None:
        """With channels=2 the capture delivers the exact mean of both channels."""
        with alsa_file_mic(tmp_path / "stereo", noise(CLIP_S, channels=2), channels=2) as mic:
            with activated(mic.env), Capture(settings("tower_mic", channels=2)) as capture:
                got = collect(capture, round(CLIP_S * SAMPLE_RATE))
            np.testing.assert_array_equal(got, mic.expected())

    def test_a_subprocess_sees_the_device_through_env(
        self, alsa_mic: MicEnv, tmp_path: Path
    ) -> None:
        """A separate process given MicEnv.env (as the daemon CLI will be) captures the file."""
        alsa_mic.write(noise(CLIP_S))
        out = tmp_path / "captured.f32"
        script = (
            "import sys, numpy as np\n"
            "from daemon.listen.capture import Capture\n"
            "from daemon.config import AudioSettings\n"
            "c = Capture(AudioSettings(device='tower_mic', block_s=0.005, ring_s=120.0))\n"
            "c.start(); parts = []; n = 0\n"
            f"while n < {round(CLIP_S * SAMPLE_RATE)}:\n"
            "    b = c.read(2.0)\n"
            "    if b is None: sys.exit('no audio: ' + str(c.last_error))\n"
            "    parts.append(b); n += b.size\n"
            "c.stop(); np.concatenate(parts).tofile(sys.argv[1])\n"
        )
        env = {**os.environ, **alsa_mic.env, "PYTHONPATH": str(Path(__file__).parent.parent)}
        done = subprocess.run(
            [sys.executable, "-c", script, str(out)],
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        got = np.fromfile(out, dtype=np.float32)[: round(CLIP_S * SAMPLE_RATE)]
        np.testing.assert_array_equal(got, alsa_mic.expected())

    def test_first_block_arrives_within_a_second(self, file_mic: MicEnv) -> None:
        """From start() to the first audio in read() takes well under one second."""
        capture = Capture(settings("tower_mic"))
        started = time.monotonic()
        capture.start()
        try:
            block = capture.read(1.0)
            elapsed_s = time.monotonic() - started
        finally:
            capture.stop()
        assert block is not None
        assert elapsed_s < 1.0
        assert capture.frames_captured > 0
        assert capture.last_block_monotonic is not None

    def test_stop_is_idempotent_and_fast(self, file_mic: MicEnv) -> None:
        """stop() twice returns quickly each time, state is stopped, and read() then gives None."""
        capture = Capture(settings("tower_mic"))
        capture.start()
        assert capture.wait_running(2.0)
        for _ in range(2):
            started = time.monotonic()
            capture.stop()
            assert time.monotonic() - started < 1.0
        assert capture.state == "stopped"
        assert capture.join(1.0)
        while capture.read(0.0) is not None:  # drain what was captured before the stop
            pass
        assert capture.read(0.2) is None

    def test_slow_reader_loses_oldest_audio_and_counts_it(self, file_mic: MicEnv) -> None:
        """A reader that falls behind the (unpaced) device gets overflows counted, not a crash."""
        with Capture(settings("tower_mic", ring_s=1.0)) as capture:
            assert wait_for(lambda: capture.frames_captured > 3 * SAMPLE_RATE, 5.0)
            block = capture.read(1.0)
        assert block is not None
        assert block.size <= SAMPLE_RATE
        assert capture.overflows >= 1
        assert capture.dropped_frames > 0


class TestFaults:
    def test_missing_device_at_start_faults_then_recovers(self, alsa_mic: MicEnv) -> None:
        """Absent at start: state fault naming the device, one device_lost log line however many
        retries, then the file appears and the capture delivers its exact samples."""
        with capture_logs() as logs, activated(alsa_mic.env):
            capture = Capture(settings("tower_mic"), **FAST_RETRY)
            capture.start()
            try:
                assert wait_for(lambda: capture.state == "fault", 2.0)
                assert "tower_mic" in (capture.last_error or "")
                assert capture.read(0.5) is None
                time.sleep(1.0)  # several retries at <= 0.3 s
                alsa_mic.write(noise(CLIP_S))
                # Read at once, no wait_running poll: the unpaced device races ahead once open.
                got = collect(capture, round(CLIP_S * SAMPLE_RATE))
                assert capture.state == "running"
            finally:
                capture.stop()
        np.testing.assert_array_equal(got, alsa_mic.expected(), err_msg=str(logs))
        events = [e["event"] for e in logs]
        assert events.count("device_lost") == 1, logs
        assert "device_retry_failed" not in events, logs  # an identical error is logged once
        assert events.count("device_recovered") == 1
        lost = next(e for e in logs if e["event"] == "device_lost")
        assert lost["phase"] == "start"
        assert capture.recoveries == 1

    def test_device_lost_while_running_then_recovers(self, pulse_mic: PulseSink) -> None:
        """Stopping the sound server under a running stream (our stand-in for unplugging a USB
        microphone) gives state fault and device_lost; when it is back, audio flows again."""
        with capture_logs() as logs:
            capture = Capture(settings("pulse"), stall_s=5.0, **FAST_RETRY)
            capture.start()
            try:
                assert wait_for(lambda: capture.frames_captured > 0, 3.0), capture.last_error
                pulse_mic.stop()
                assert wait_for(lambda: capture.state == "fault", 3.0)
                assert capture.last_error
                before = capture.frames_captured
                pulse_mic.start()
                assert capture.wait_running(5.0), capture.last_error
                assert wait_for(lambda: capture.frames_captured > before, 3.0)
                assert capture.read(1.0) is not None
            finally:
                capture.stop()
        events = [e["event"] for e in logs]
        assert events.count("device_lost") == 1
        assert events.count("device_recovered") == 1
        assert capture.recoveries == 1

    def test_stall_is_detected_then_recovers(self, pulse_mic: PulseSink) -> None:
        """A stream that stays open but delivers no callbacks (server paused with SIGSTOP, as a
        hung device would) is reported as a fault with 'stalled', then recovers on resume."""
        capture = Capture(settings("pulse"), stall_s=1.0, **FAST_RETRY)
        capture.start()
        try:
            assert wait_for(lambda: capture.frames_captured > 0, 3.0), capture.last_error
            pulse_mic.pause()
            paused_at = time.monotonic()
            assert wait_for(lambda: capture.state == "fault", 3.0)
            assert "stalled" in (capture.last_error or "")
            assert time.monotonic() - paused_at >= 0.9
            assert capture.last_block_monotonic is not None
            assert capture.last_block_monotonic < paused_at + 0.2
            pulse_mic.resume()
            assert capture.wait_running(5.0), capture.last_error
            before = capture.frames_captured
            assert wait_for(lambda: capture.frames_captured > before, 3.0)
        finally:
            pulse_mic.resume()
            capture.stop()
            assert capture.join(5.0)

    def test_stop_returns_fast_on_a_hung_device(self, pulse_mic: PulseSink) -> None:
        """stop() returns within a second even when the device hangs PortAudio's close."""
        capture = Capture(settings("pulse"), stall_s=10.0, **FAST_RETRY)
        capture.start()
        try:
            assert wait_for(lambda: capture.frames_captured > 0, 3.0), capture.last_error
            pulse_mic.pause()
            time.sleep(0.2)
            started = time.monotonic()
            capture.stop()
            assert time.monotonic() - started < 1.0
            assert capture.state == "stopped"
        finally:
            pulse_mic.resume()
            assert capture.join(5.0)  # the abandoned close finishes once the device answers


class TestPulseCapture:
    def test_two_seconds_in_real_time(self, pulse_mic: PulseSink, tmp_path: Path) -> None:
        """The null-sink monitor is paced: ~2 s of wall time gives ~2 s of the tone played."""
        tone_hz = 1000.0
        t = np.arange(round(4.0 * SAMPLE_RATE)) / SAMPLE_RATE
        pulse_mic.play(write_wav(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * tone_hz * t)))
        with Capture(settings("pulse")) as capture:
            assert wait_for(lambda: capture.frames_captured > 0, 3.0), capture.last_error
            capture.read(0.0)  # discard the start-up audio
            start_frames = capture.frames_captured
            started = time.monotonic()
            parts = []
            while time.monotonic() - started < 2.0:
                block = capture.read(0.5)
                if block is not None:
                    parts.append(block)
            rate = (capture.frames_captured - start_frames) / (time.monotonic() - started)
        audio = np.concatenate(parts)
        assert 0.7 * SAMPLE_RATE < rate < 1.3 * SAMPLE_RATE
        spectrum = np.abs(np.fft.rfft(audio))
        peak_hz = np.argmax(spectrum) * SAMPLE_RATE / audio.size
        assert abs(peak_hz - tone_hz) < 5.0
        assert np.sqrt(np.mean(audio**2)) > 0.1
