"""Which windows become clips, and the pipeline's one handle on keeping them.

Every anomalous window is kept; of the normal ones (sensor faults included: they are labelled
normal) the first after start and then every ``normal_every_n``-th, so a retraining set gets the
tower's own normal sound too. The keeper holds the recent samples (`SampleHistory`), stages a
clip before its verdict is stored (so a clip that cannot be written leaves ``clip: null`` in the
verdict instead of naming nothing) and renames it once the verdict has its seq.
"""

from __future__ import annotations

import numpy.typing as npt

from daemon.analyse.verdict import Label, Verdict
from daemon.evidence.names import Kind
from daemon.evidence.store import ClipStore, Staged
from daemon.listen.history import SampleHistory
from daemon.listen.windows import Window


class ClipKeeper:
    """Clip policy and staging for one pipeline (one stream at a time)."""

    def __init__(self, store: ClipStore, *, normal_every_n: int, window_samples: int) -> None:
        self.store = store
        self._normal_every_n = normal_every_n
        self._normals = 0
        self._history = SampleHistory(window_samples)

    def push(self, block: npt.ArrayLike) -> None:
        """The block the Windower just accepted (same order, same stream)."""
        self._history.append(block)

    def reset(self) -> None:
        """End of stream (`Windower.flush`): offsets restart at 0."""
        self._history.reset()

    def kind_for(self, label: Label) -> Kind | None:
        """Whether a window with this final label is kept, and as what."""
        if label == "anomalous":
            return "anomalous"
        keep = self._normal_every_n > 0 and self._normals % self._normal_every_n == 0
        self._normals += 1
        return "normal" if keep else None

    def prepare(self, window: Window, built: Verdict) -> Staged | None:
        """Stage the window's audio, its verdict (without seq) as the FLAC comment."""
        if built.clip_kind is None:
            return None
        samples = self._history.samples(window.start_sample, window.end_sample)
        return self.store.prepare(samples, kind=built.clip_kind, tags=built.to_json().decode())

    def commit(self, staged: Staged, stored: Verdict) -> bool:
        """Rename the staged clip to the name the stored verdict gives it."""
        name = stored.clip
        if name is None:
            self.store.discard(staged)
            return False
        return self.store.commit(staged, name)
