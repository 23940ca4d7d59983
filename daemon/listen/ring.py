"""A preallocated float32 ring buffer between one producer (the audio callback) and one consumer.

The producer never blocks, never allocates and never waits for the consumer: when the consumer
falls behind, the oldest audio is overwritten, and the consumer counts what it lost.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class Ring:
    """Single-producer / single-consumer ring of mono float32 frames, lock-free.

    Positions are absolute frame counts that only grow. The producer owns ``_reserved`` (raised
    *before* it touches memory) and ``_written`` (raised *after* the copy, publishing the frames);
    the consumer owns ``_read``. A consumer that copied frames which the producer may have been
    overwriting at the same time (index below ``_reserved - capacity`` once the copy is done)
    throws them away and counts them, so what ``read`` returns is always exact and in order;
    the only loss is whole oldest frames, and it is counted, never silent.
    """

    def __init__(self, capacity_frames: int) -> None:
        if capacity_frames < 1:
            raise ValueError(f"capacity_frames: must be at least 1, got {capacity_frames}")
        self.capacity_frames = capacity_frames
        self._buf: npt.NDArray[np.float32] = np.zeros(capacity_frames, dtype=np.float32)
        self._reserved = 0
        self._written = 0
        self._read = 0
        self._overflows = 0
        self._dropped_frames = 0

    # -- producer side -------------------------------------------------------------------------

    def write(self, block: npt.NDArray[np.float32]) -> None:
        """Append a 1-D float32 block; overwrites the oldest frames when the ring is full."""
        n = block.shape[0]
        if n == 0:
            return
        cap = self.capacity_frames
        start = self._written
        self._reserved = start + n
        if n > cap:
            # Only the newest `cap` frames of an oversized block can be kept.
            block = block[n - cap :]
            start += n - cap
            n = cap
        pos = start % cap
        first = min(n, cap - pos)
        self._buf[pos : pos + first] = block[:first]
        if first < n:
            self._buf[: n - first] = block[first:]
        self._written = self._reserved

    # -- consumer side -------------------------------------------------------------------------

    def read(self, max_frames: int | None = None) -> npt.NDArray[np.float32]:
        """The oldest unread frames (at most max_frames), as a new array; empty when none."""
        cap = self.capacity_frames
        written = self._written
        start = self._skip_lost(self._read, self._reserved - cap)
        n = written - start
        if max_frames is not None:
            n = min(n, max_frames)
        if n <= 0:
            self._read = start
            return np.empty(0, dtype=np.float32)
        out = np.empty(n, dtype=np.float32)
        pos = start % cap
        first = min(n, cap - pos)
        out[:first] = self._buf[pos : pos + first]
        if first < n:
            out[first:] = self._buf[: n - first]
        # The producer may have overwritten part of what we just copied: keep only frames that
        # were still intact after the copy finished.
        valid_from = self._skip_lost(start, self._reserved - cap)
        out = out[valid_from - start :] if valid_from > start else out
        self._read = valid_from + out.shape[0]
        return out

    def _skip_lost(self, position: int, oldest_intact: int) -> int:
        if position >= oldest_intact:
            return position
        self._overflows += 1
        self._dropped_frames += oldest_intact - position
        return oldest_intact

    @property
    def available_frames(self) -> int:
        """Frames readable now (capped at the capacity: older ones are already lost)."""
        return max(0, min(self._written - self._read, self.capacity_frames))

    @property
    def overflows(self) -> int:
        """How many times the consumer found that audio had been overwritten before it read it."""
        return self._overflows

    @property
    def dropped_frames(self) -> int:
        """Frames overwritten before the consumer read them."""
        return self._dropped_frames
