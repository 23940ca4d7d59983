"""Folders the daemon creates for its state are private (0700) whatever the umask.

`Path.mkdir(parents=True, mode=...)` applies the mode to the last folder only, and only through
the umask: under umask 000 the parents it makes are 0777. The outbox, the baseline and the clips
all live under the state folder, so they share this one helper.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Final

DIR_MODE: Final = 0o700


def make_private_dir(folder: Path, mode: int = DIR_MODE) -> None:
    """Create folder and any missing parents with mode (default 0700), whatever the umask."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True, mode=mode)
    for made in missing:
        with contextlib.suppress(OSError):
            made.chmod(mode)
