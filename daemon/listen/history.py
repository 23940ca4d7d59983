"""The last window's worth of stream samples as int16, so a finished window's audio can be kept.

The Windower keeps only the samples its next STFT frames need; a clip needs the whole window.
`SampleHistory` keeps copies of the pushed blocks (int16: half of float32, and exactly what a
16-bit microphone delivered) addressed by stream offset, and forgets a block once no window that
can still finish covers it. Feed it the same blocks, after the Windower accepted them.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

INT16_SCALE = 32768
"""Full scale 1.0 in 16-bit counts; capture makes float samples as counts / 32768."""


def to_int16(samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Float samples (full scale 1.0) as 16-bit counts, rounded, clipped at the rails."""
    scaled = np.rint(np.asarray(samples, dtype=np.float64) * INT16_SCALE)
    return np.clip(scaled, -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)


class SampleHistory:
    """Blocks since ``keep_samples`` before the end of the previous block, by stream offset.

    Every window that completes in a push ends after the previous push's end, so it starts less
    than one window length before it: ``keep_samples`` = the window length suffices for any
    block size, hop and the tail window of `Windower.flush`.
    """

    def __init__(self, keep_samples: int) -> None:
        self._keep = keep_samples
        self._blocks: deque[tuple[int, npt.NDArray[np.int16]]] = deque()
        self.end = 0
        """Stream offset just past the last sample held."""

    def append(self, block: npt.ArrayLike) -> None:
        """Add the next block of mono float samples ((n,) or (n, 1))."""
        horizon = self.end - self._keep
        while self._blocks and self._blocks[0][0] + self._blocks[0][1].shape[0] <= horizon:
            self._blocks.popleft()
        counts = to_int16(np.asarray(block).reshape(-1))
        self._blocks.append((self.end, counts))
        self.end += counts.shape[0]

    def samples(self, start: int, stop: int) -> npt.NDArray[np.int16]:
        """Samples [start, stop) of the stream; ValueError when they are not all held."""
        first = self._blocks[0][0] if self._blocks else self.end
        if start < first or stop > self.end or start > stop:
            raise ValueError(f"samples [{start}, {stop}) not held (held [{first}, {self.end}))")
        parts = [
            counts[max(start - offset, 0) : max(stop - offset, 0)]
            for offset, counts in self._blocks
            if offset < stop and offset + counts.shape[0] > start
        ]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int16)

    def reset(self) -> None:
        """A new stream (after `Windower.flush`): offsets start at 0 again."""
        self._blocks.clear()
        self.end = 0
