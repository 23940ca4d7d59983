"""Live microphone capture: PortAudio callback -> preallocated ring -> ``Capture.read()``.

The callback only converts, downmixes and copies into the ring (no locks, no logging, no
allocation of audio buffers). A supervisor thread owns the stream: when the device is missing,
disappears or stalls, the capture goes to state ``fault``, retries with capped exponential
backoff and resumes by itself; it never raises into the caller's loop.
"""

from __future__ import annotations

import enum
import threading
import time
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import sounddevice as sd
import structlog

from daemon.config import AudioSettings
from daemon.errors import CaptureError
from daemon.listen.ring import Ring

log = structlog.get_logger(__name__)

STREAM_DTYPE: Final = "int16"
"""Sample format asked of PortAudio. USB microphones deliver S16_LE natively, so ALSA does no
conversion; and the ALSA file test device delivers exact samples only this way (through a
float32 ``plug`` conversion it skips frames). Converted to float32 in the callback."""
INT16_FULL_SCALE: Final = 32768.0
"""int16 / INT16_FULL_SCALE gives float32 in [-1, 1), the same scaling as daemon.listen.audio."""

RETRY_INITIAL_S: Final = 0.5
"""First wait before reopening a failed device; doubles on each failure ..."""
RETRY_MAX_S: Final = 10.0
"""... up to this cap, so a re-plugged microphone is back within seconds."""
STALL_S: Final = 3.0
"""No callback for this long while running means the device is stalled: treat it as lost."""
REPEAT_LOG_INTERVAL_S: Final = 300.0
"""An identical retry error is logged at most once per interval (spares the SD card)."""
STOP_TIMEOUT_S: Final = 0.9
"""stop() waits this long for the supervisor; a device hung inside PortAudio is abandoned."""

WAIT_POLL_S: Final = 0.01
"""Polling step of wait_running() (a convenience for start-up and tests, not the audio path)."""


class CaptureState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    FAULT = "fault"
    STOPPED = "stopped"


# PortAudio is process-global: re-scanning (terminate + initialize) must not race a device query
# or a stream being opened from another thread.
_PORTAUDIO_LOCK = threading.RLock()


def list_input_devices() -> list[dict[str, Any]]:
    """Every PortAudio device with input channels: index, name, hostapi, channels, rate, default."""
    with _PORTAUDIO_LOCK:
        try:
            devices = sd.query_devices()
            hostapis = sd.query_hostapis()
            default_input = _default_input_index()
        except sd.PortAudioError as err:
            raise CaptureError(f"cannot list audio devices: {err}") from err
    out = []
    for dev in devices:
        if dev["max_input_channels"] <= 0:
            continue
        out.append(
            {
                "index": dev["index"],
                "name": dev["name"],
                "hostapi": hostapis[dev["hostapi"]]["name"],
                "max_input_channels": dev["max_input_channels"],
                "default_samplerate": dev["default_samplerate"],
                "default": dev["index"] == default_input,
            }
        )
    return out


def rescan_devices() -> None:
    """Re-initialise PortAudio so it sees devices (and ALSA config) that changed since import.

    Closes every open PortAudio stream in the process; Capture calls it only while its own stream
    is closed. sounddevice silences stderr (fd 2, process-wide) for the ~50 ms this takes.
    """
    with _PORTAUDIO_LOCK:
        try:
            # sounddevice has no public re-scan; terminate + initialize is its documented idiom.
            if sd._initialized > 0:
                sd._terminate()
            sd._initialize()
        except sd.PortAudioError as err:
            raise CaptureError(f"cannot re-initialise PortAudio: {err}") from err


def resolve_input_device(device: str | int | None) -> tuple[int, str]:
    """(index, name) of the input device named by exact name, name substring, or index.

    None means the system default input. Raises CaptureError naming the device and listing the
    inputs that exist.
    """
    inputs = list_input_devices()
    seen = ", ".join(f"{d['index']}: {d['name']!r}" for d in inputs) or "none"
    if device is None:
        for dev in inputs:
            if dev["default"]:
                return dev["index"], dev["name"]
        raise CaptureError(f"audio.device: no default input device; inputs seen: {seen}")
    if isinstance(device, int):
        for dev in inputs:
            if dev["index"] == device:
                return dev["index"], dev["name"]
        raise CaptureError(f"audio.device: no input device with index {device}; inputs: {seen}")
    exact = [d for d in inputs if d["name"] == device]
    if exact:
        return exact[0]["index"], exact[0]["name"]
    matches = [d for d in inputs if device.lower() in d["name"].lower()]
    if len(matches) == 1:
        return matches[0]["index"], matches[0]["name"]
    if matches:
        names = ", ".join(f"{d['index']}: {d['name']!r}" for d in matches)
        raise CaptureError(
            f"audio.device: {device!r} matches several inputs ({names}); use more of the name"
            " or the index"
        )
    raise CaptureError(f"audio.device: no input device matching {device!r}; inputs: {seen}")


def _default_input_index() -> int:
    try:
        return int(sd.query_devices(kind="input")["index"])
    except (sd.PortAudioError, ValueError):
        return -1


class Capture:
    """One microphone, kept open for as long as the daemon runs.

    ``start()`` returns at once; audio then arrives through ``read()``. Health fields:
    ``state``, ``last_error``, ``overflows``, ``dropped_frames``, ``frames_captured``,
    ``last_block_monotonic``, ``recoveries``. Audio read across a recovery is not contiguous:
    compare ``recoveries`` before and after a read to notice the gap.
    """

    def __init__(
        self,
        settings: AudioSettings,
        *,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        stall_s: float = STALL_S,
        repeat_log_interval_s: float = REPEAT_LOG_INTERVAL_S,
    ) -> None:
        self.settings = settings
        self.block_frames = max(1, round(settings.block_s * settings.sample_rate))
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._stall_s = stall_s
        self._repeat_log_interval_s = repeat_log_interval_s

        self._ring = Ring(max(self.block_frames, round(settings.ring_s * settings.sample_rate)))
        # Preallocated in the constructor so the callback never allocates audio buffers.
        self._scratch: npt.NDArray[np.float32] = np.zeros(self.block_frames, dtype=np.float32)
        self._scale = np.float32(1.0 / (INT16_FULL_SCALE * settings.channels))

        self._state = CaptureState.STOPPED
        self._last_error: str | None = None
        self._device_name: str | None = None
        self._input_overflows = 0
        self._frames_captured = 0
        self._last_block_monotonic: float | None = None
        self._recoveries = 0

        self._data = threading.Event()  # set by the callback when frames were written
        self._wake = threading.Event()  # wakes the supervisor: stop requested or stream ended
        self._stop = threading.Event()
        self._stream_ended = False
        self._opened_monotonic = 0.0
        self._device_call_since: float | None = None
        self._ever_ran = False
        self._thread: threading.Thread | None = None

    # -- public API ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the device in the background; returns at once. Idempotent while running."""
        if self._thread is not None and self._thread.is_alive():
            if not self._stop.is_set():
                return
            if not self.join(STOP_TIMEOUT_S):
                raise CaptureError("capture: the previous stream is still closing (device hung)")
        self._stop.clear()
        self._state = CaptureState.STARTING
        self._thread = threading.Thread(target=self._supervise, name="capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the stream; idempotent and returns within about a second even on a hung device."""
        self._stop.set()
        self._wake.set()
        self._data.set()  # release a reader blocked in read()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                log.warning("capture_stop_timeout", device=self._device_name)
        self._state = CaptureState.STOPPED

    def join(self, timeout_s: float) -> bool:
        """Wait for the supervisor thread to exit after stop(); True when it has."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def read(
        self, timeout_s: float, max_frames: int | None = None
    ) -> npt.NDArray[np.float32] | None:
        """Mono float32 audio captured since the last read (blocks until some arrives).

        Returns None when nothing arrived within timeout_s (or the capture is stopped).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            out = self._ring.read(max_frames)
            if out.size:
                return out
            if self._stop.is_set():
                return None
            self._data.clear()
            # Frames may have landed between the read and the clear: look once more.
            out = self._ring.read(max_frames)
            if out.size:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._data.wait(remaining):
                return None

    def wait_running(self, timeout_s: float) -> bool:
        """Wait until the stream is delivering (state running); True if it got there in time."""
        deadline = time.monotonic() + timeout_s
        while self._state is not CaptureState.RUNNING:
            if time.monotonic() >= deadline or self._stop.is_set():
                return False
            time.sleep(WAIT_POLL_S)
        return True

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def state(self) -> str:
        """One of "starting", "running", "fault", "stopped"."""
        return self._state.value

    @property
    def last_error(self) -> str | None:
        """Why the device last failed (kept after recovery, for health reports)."""
        return self._last_error

    @property
    def device_name(self) -> str | None:
        """The PortAudio name of the device last opened."""
        return self._device_name

    @property
    def overflows(self) -> int:
        """Input overflows reported by PortAudio plus ring overruns (consumer too slow)."""
        return self._input_overflows + self._ring.overflows

    @property
    def dropped_frames(self) -> int:
        """Frames overwritten in the ring before read() fetched them."""
        return self._ring.dropped_frames

    @property
    def frames_captured(self) -> int:
        """Frames delivered by the device since construction (across reopenings)."""
        return self._frames_captured

    @property
    def last_block_monotonic(self) -> float | None:
        """time.monotonic() of the last callback; None before the first."""
        return self._last_block_monotonic

    @property
    def recoveries(self) -> int:
        """How many times the device came back after a fault."""
        return self._recoveries

    @property
    def device_call_since(self) -> float | None:
        """time.monotonic() when the supervisor entered the PortAudio open or close it is still
        in; None while it is not in one. A value growing old means a device hung PortAudio: the
        supervisor is stuck, so state ``fault`` no longer means "retrying"."""
        return self._device_call_since

    # -- the PortAudio callback thread ---------------------------------------------------------

    def _callback(self, indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        if status.input_overflow:
            self._input_overflows += 1
        scratch = self._scratch
        size = scratch.shape[0]
        done = 0
        while done < frames:  # one pass with a fixed blocksize; a loop only if PortAudio differs
            n = min(size, frames - done)
            chunk = indata[done : done + n]
            out = scratch[:n]
            if chunk.shape[1] == 1:
                np.multiply(chunk[:, 0], self._scale, out=out)
            else:
                np.add.reduce(chunk, axis=1, dtype=np.float32, out=out)
                np.multiply(out, self._scale, out=out)
            self._ring.write(out)
            done += n
        self._frames_captured += frames
        self._last_block_monotonic = time.monotonic()
        if not self._data.is_set():
            self._data.set()

    def _finished(self) -> None:
        self._stream_ended = True
        self._wake.set()

    # -- the supervisor thread -----------------------------------------------------------------

    def _supervise(self) -> None:
        delay_s = self._retry_initial_s
        failures = 0  # consecutive failed opens; the first reopen after a loss also re-scans
        lost_at: float | None = None
        last_logged: tuple[str, float] = ("", 0.0)
        needs_rescan = False
        while not self._stop.is_set():
            try:
                if needs_rescan:
                    rescan_devices()  # a re-plugged USB device gets a new PortAudio entry
                stream = self._open()
            except CaptureError as err:
                failures += 1
                needs_rescan = True
                message = str(err)
                now = time.monotonic()
                self._fault(message)
                if lost_at is None:
                    lost_at = now
                    self._log_lost(message)
                    last_logged = (message, now)
                elif message != last_logged[0] or (
                    now - last_logged[1] >= self._repeat_log_interval_s
                ):
                    log.warning("device_retry_failed", error=message, failures=failures)
                    last_logged = (message, now)
                self._stop.wait(delay_s)
                delay_s = min(delay_s * 2, self._retry_max_s)
                continue

            if lost_at is not None:
                self._recoveries += 1
                down_s = round(time.monotonic() - lost_at, 3)
                log.info("device_recovered", device=self._device_name, down_s=down_s)
                lost_at = None
            else:
                log.info("device_opened", device=self._device_name, block_frames=self.block_frames)
            if not self._stop.is_set():
                self._state = CaptureState.RUNNING
            self._ever_ran = True
            delay_s = self._retry_initial_s
            failures = 0

            reason = self._watch()
            if reason is not None:
                # Report the fault before closing: closing a hung device may itself hang. Marked
                # as in a device call first, so nobody sees a "retrying" fault in between.
                lost_at = self._device_call_since = time.monotonic()
                self._fault(reason)
                self._log_lost(reason)
                last_logged = (reason, lost_at)
                needs_rescan = True
            self._close(stream)
            if reason is not None:
                self._stop.wait(delay_s)
        self._state = CaptureState.STOPPED
        log.info("capture_stopped", device=self._device_name)

    def _fault(self, message: str) -> None:
        self._last_error = message
        if not self._stop.is_set():
            self._state = CaptureState.FAULT

    def _log_lost(self, message: str) -> None:
        device = self._device_name or self.settings.device
        phase = "running" if self._ever_ran else "start"
        log.warning("device_lost", device=device, error=message, phase=phase)

    def _open(self) -> sd.InputStream:
        self._device_call_since = time.monotonic()
        try:
            return self._open_stream()
        finally:
            self._device_call_since = None

    def _open_stream(self) -> sd.InputStream:
        settings = self.settings
        with _PORTAUDIO_LOCK:
            index, name = resolve_input_device(settings.device)
            self._stream_ended = False
            self._wake.clear()
            try:
                stream = sd.InputStream(
                    samplerate=settings.sample_rate,
                    blocksize=self.block_frames,
                    device=index,
                    channels=settings.channels,
                    dtype=STREAM_DTYPE,
                    callback=self._callback,
                    finished_callback=self._finished,
                )
            except (sd.PortAudioError, ValueError) as err:
                raise CaptureError(
                    f"audio.device {name!r} (index {index}): cannot open: {err}"
                ) from err
            try:
                stream.start()
            except sd.PortAudioError as err:
                stream.close(ignore_errors=True)
                raise CaptureError(
                    f"audio.device {name!r} (index {index}): cannot start: {err}"
                ) from err
        self._device_name = name
        self._opened_monotonic = time.monotonic()
        return stream

    def _watch(self) -> str | None:
        """Block while the stream delivers; None once stop() was asked, else why it failed."""
        while True:
            if self._stop.is_set():
                return None
            if self._stream_ended:
                return "the input stream ended unexpectedly (device disconnected?)"
            last = self._last_block_monotonic
            since = (
                max(last, self._opened_monotonic) if last is not None else self._opened_monotonic
            )
            silent_s = time.monotonic() - since
            if silent_s >= self._stall_s:
                return f"no audio from the device for {silent_s:.1f} s (stalled)"
            self._wake.wait(self._stall_s - silent_s)
            self._wake.clear()

    def _close(self, stream: sd.InputStream) -> None:
        # No PortAudio lock here: on a hung device this blocks, and device queries must not.
        if self._device_call_since is None:
            self._device_call_since = time.monotonic()
        try:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)
        finally:
            self._device_call_since = None
