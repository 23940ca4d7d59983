"""The clips folder: FLAC clips written atomically and kept within size, age and free-disk bounds.

One folder (0700 whatever the umask) of files named by `daemon.evidence.names` (0600). A clip is
encoded in memory first, so its exact size is known before the disk is touched; retention then
runs (clips past ``max_age_s`` go, then the oldest until the new clip fits under
``max_total_bytes`` and leaves ``min_free_bytes`` free: normal samples before anomalous clips, and
a normal sample never pushes out an anomalous one); the bytes go to a hidden temporary file,
fsynced, and `commit` renames it into place once the verdict has its seq. A clip that cannot be
kept is skipped and its cause logged once (until a clip is kept again): evidence must never stop
monitoring or fill the card. Only the owning process writes; readers (requests, export) list.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile as sf
import structlog

from daemon.config import Settings
from daemon.constants import SAMPLE_RATE
from daemon.deliver.outbox import BYTES_PER_MB
from daemon.evidence import names
from daemon.evidence.names import ClipName, Kind
from daemon.private_dirs import make_private_dir

log = structlog.get_logger(__name__)

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
TEMP_PREFIX: Final = ".incoming-"
SECONDS_PER_DAY: Final = 86400.0
STALE_TEMP_S: Final = 3600.0
"""A temporary file this old is a crash's leftover (a clip is renamed within a window) and goes."""


@dataclass(frozen=True)
class StoredClip:
    """One clip in the folder."""

    name: ClipName
    path: Path
    size: int
    mtime: float
    """When it was kept (file mtime): age and order count from here, not from the window time,
    which in replay is a position in a file."""


@dataclass(frozen=True)
class Staged:
    """Clip bytes on disk under a temporary name, waiting for their verdict's seq."""

    temp: Path
    kind: Kind
    size: int


def encode(samples: npt.NDArray[np.int16], *, tags: str) -> bytes:
    """A mono 16-bit FLAC of the samples at 44.1 kHz, ``tags`` (the verdict JSON) as comment."""
    buffer = io.BytesIO()
    with sf.SoundFile(
        buffer, mode="w", samplerate=SAMPLE_RATE, channels=1, format="FLAC", subtype="PCM_16"
    ) as out:
        out.comment = tags
        out.write(samples)
    return buffer.getvalue()


def read_tags(path: Path) -> str:
    """The comment a clip was written with ('' when it has none)."""
    with sf.SoundFile(path) as clip:
        return str(clip.comment or "")


class ClipStore:
    """The node's clips folder and its bounds; `prepare` + `commit` keep one clip."""

    def __init__(
        self,
        folder: Path,
        *,
        max_total_bytes: int,
        max_age_s: float,
        min_free_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.max_total_bytes = max_total_bytes
        self.max_age_s = max_age_s
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._reported: set[str] = set()
        self._counter = 0
        self.kept = 0
        """Clips kept since start."""
        self.skipped = 0
        """Clips that could not be kept since start (each cause logged once, see module doc)."""
        self.deleted = 0
        """Clips deleted by retention since start."""
        self.count = 0
        self.bytes = 0
        """Clips and their bytes at the last look at the folder."""
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ClipStore:
        """The node's clips folder under `clips.*` (created at the first clip kept)."""
        clips = settings.clips
        return cls(
            settings.clips_path,
            max_total_bytes=round(clips.max_total_mb * BYTES_PER_MB),
            max_age_s=clips.max_age_days * SECONDS_PER_DAY,
            min_free_bytes=round(clips.min_free_mb * BYTES_PER_MB),
        )

    # -- reading -------------------------------------------------------------------------------

    def entries(self) -> list[StoredClip]:
        """Every clip in the folder, oldest first (files not named like a clip are ignored)."""
        found: list[StoredClip] = []
        try:
            listing = list(os.scandir(self.folder))
        except FileNotFoundError:
            listing = []
        for entry in listing:
            name = names.parse(entry.name)
            if name is None:
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.is_file(follow_symlinks=False):
                found.append(StoredClip(name, Path(entry.path), stat.st_size, stat.st_mtime))
        found.sort(key=lambda clip: (clip.mtime, clip.name.seq))
        self.count, self.bytes = len(found), sum(clip.size for clip in found)
        return found

    def usage(self) -> tuple[int, int]:
        """(clips, bytes) in the folder now (health reads it: clips of earlier runs count too)."""
        self.entries()
        return self.count, self.bytes

    def find(self, *, name: ClipName | None = None, seq: int | None = None) -> StoredClip | None:
        """The listed clip with this name or seq; the path opened is the listing's, never one
        built from a request."""
        for clip in self.entries():
            if (name is not None and clip.name == name) or (
                seq is not None and clip.name.seq == seq
            ):
                return clip
        return None

    # -- keeping a clip --------------------------------------------------------------------------

    def prepare(self, samples: npt.NDArray[np.int16], *, kind: Kind, tags: str) -> Staged | None:
        """Encode, make room and write the clip under a temporary name; None when it cannot be
        kept (logged once per cause)."""
        data = encode(samples, tags=tags)
        try:
            self._open_folder()
            cause = self._make_room(len(data), kind)
            if cause is not None:
                self._skip(cause, size=len(data), kind=kind)
                return None
            temp = self._write_temp(data)
        except OSError as err:
            self._skip(errno.errorcode.get(err.errno or 0, "OSError"), size=len(data), kind=kind,
                       error=str(err))  # fmt: skip
            return None
        return Staged(temp, kind, len(data))

    def commit(self, staged: Staged, name: str) -> bool:
        """Rename the staged clip to its name (a name from `names.clip_name`)."""
        if names.parse(name) is None:
            self.discard(staged)
            raise ValueError(f"not a clip name: {name!r}")
        try:
            staged.temp.replace(self.folder / name)
        except OSError as err:
            self.discard(staged)
            self._skip(errno.errorcode.get(err.errno or 0, "OSError"), size=staged.size,
                       kind=staged.kind, error=str(err))  # fmt: skip
            return False
        self.kept += 1
        self.count += 1
        self.bytes += staged.size
        if self._reported:
            log.info("clips_kept_again", after=sorted(self._reported))
            self._reported.clear()
        return True

    def discard(self, staged: Staged) -> None:
        """Drop a staged clip (its verdict was not stored)."""
        with contextlib.suppress(OSError):
            staged.temp.unlink()

    # -- inside ----------------------------------------------------------------------------------

    def _open_folder(self) -> None:
        if self._ready and self.folder.is_dir():
            return
        make_private_dir(self.folder)
        self.folder.chmod(DIR_MODE)  # an existing folder too: clips are the tower's audio
        now = self._clock()
        for entry in os.scandir(self.folder):
            if entry.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S:
                        Path(entry.path).unlink()
        self._ready = True

    def _make_room(self, incoming: int, kind: Kind) -> str | None:
        """Apply the bounds for ``incoming`` more bytes; the cause when it still does not fit."""
        clips = self.entries()
        now = self._clock()
        for clip in [c for c in clips if now - c.mtime > self.max_age_s]:
            self._delete(clip, "max_age")
            clips.remove(clip)
        if incoming > self.max_total_bytes:
            return "clip_larger_than_max_total"
        # Normal samples go first; a normal sample may only replace other normal samples.
        victims = [c for c in clips if c.name.kind == "normal"]
        if kind == "anomalous":
            victims += [c for c in clips if c.name.kind == "anomalous"]
        total = sum(c.size for c in clips)
        while total + incoming > self.max_total_bytes:
            if not victims:
                return "max_total_full_of_anomalous"
            victim = victims.pop(0)
            self._delete(victim, "max_total")
            total -= victim.size
        while shutil.disk_usage(self.folder).free - incoming < self.min_free_bytes:
            if not victims:
                return "min_free" if self.min_free_bytes > 0 else "disk_full"
            self._delete(victims.pop(0), "min_free")
        return None

    def _delete(self, clip: StoredClip, reason: str) -> None:
        try:
            clip.path.unlink()
        except FileNotFoundError:
            return
        self.deleted += 1
        self.count -= 1
        self.bytes -= clip.size
        log.debug("clip_deleted", clip=clip.name.name, bytes=clip.size, reason=reason)

    def _write_temp(self, data: bytes) -> Path:
        self._counter += 1
        temp = self.folder / f"{TEMP_PREFIX}{os.getpid()}-{self._counter}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        os.close(fd)
        return temp

    def _skip(self, cause: str, **fields: object) -> None:
        self.skipped += 1
        if cause in self._reported:
            return
        self._reported.add(cause)
        log.warning("clip_not_kept", cause=cause, folder=str(self.folder), **fields)
