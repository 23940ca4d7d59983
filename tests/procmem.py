"""What a running process holds in memory, from /proc: RSS, PSS, USS and the shared objects mapped.

Shared by tests/test_alsa_minimal.py and bench/memory.py, so the test asserts on the same
numbers the benchmark prints. VmRSS counts every resident page, also those other processes
share; PSS divides shared pages among their users, USS (private clean + dirty) is what the
process alone costs: it is what ending it would free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

KIB_PER_MB: Final = 1024.0
NOTABLE: Final = (
    "libasound_module_",
    "libavcodec",
    "libavutil",
    "libswresample",
    "libx264",
    "libx265",
    "libjack",
    "libpulse",
    "libspeex",
    "libsamplerate",
)
"""Libraries an ALSA configuration decides about (libasound2-plugins' modules and what they
link); everything else the daemon maps (Python, numpy, LiteRT, PortAudio) is the same under any
ALSA configuration."""
BIG_LIBRARIES: Final = ("libavcodec", "libx264", "libx265", "libpulse", "libasound_module_pcm_")
"""The extras PortAudio's probe of libasound2-plugins' PCMs maps (measured: README, Memory)."""


@dataclass(frozen=True)
class ProcMemory:
    vm_rss_mb: float
    vm_hwm_mb: float
    """Peak RSS since the process started."""
    pss_mb: float
    uss_mb: float
    libraries: frozenset[str]
    """Paths of the mapped shared objects (.so files)."""
    library_rss_mb: Mapping[str, float]
    """Resident MiB per mapped shared object (its mappings summed): what each costs this
    process, counted whole even where other processes map the same pages (PSS and USS split or
    leave those out; on a tower nothing else maps libavcodec)."""

    def rss_outside(self, libraries: frozenset[str]) -> float:
        """Resident MiB in the shared objects mapped here but not in libraries."""
        return sum(mb for path, mb in self.library_rss_mb.items() if path not in libraries)

    def notable(self) -> list[str]:
        """Base names of the mapped NOTABLE libraries, sorted."""
        names = {Path(path).name for path in self.libraries}
        return sorted(name for name in names if name.startswith(NOTABLE))

    def maps_any(self, prefixes: tuple[str, ...]) -> list[str]:
        """Base names of mapped libraries that start with one of prefixes."""
        return sorted({Path(p).name for p in self.libraries if Path(p).name.startswith(prefixes)})


def _kib_fields(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and len(parts) == 2 and parts[1] == "kB":
            values[key] = int(parts[0])
    return values


def mapped_libraries(pid: int | str = "self") -> frozenset[str]:
    """Paths of the shared objects in /proc/PID/maps (a .so in the file name)."""
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text(encoding="utf-8").splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and ".so" in Path(fields[5]).name:
            paths.add(fields[5])
    return frozenset(paths)


def library_rss_kib(pid: int | str = "self") -> dict[str, int]:
    """Rss (KiB) per shared object, summed over its mappings in /proc/PID/smaps."""
    totals: dict[str, int] = {}
    current: str | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            named = len(fields) == 6 and ".so" in Path(fields[5]).name
            current = fields[5] if named else None
        elif current is not None and fields[:1] == ["Rss:"]:
            totals[current] = totals.get(current, 0) + int(fields[1])
    return totals


def proc_memory(pid: int | str = "self") -> ProcMemory:
    """RSS, peak RSS, PSS, USS (MiB) and mapped libraries of a live process."""
    status = _kib_fields(Path(f"/proc/{pid}/status").read_text(encoding="utf-8"))
    rollup = _kib_fields(Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="utf-8"))
    return ProcMemory(
        vm_rss_mb=status["VmRSS"] / KIB_PER_MB,
        vm_hwm_mb=status["VmHWM"] / KIB_PER_MB,
        pss_mb=rollup["Pss"] / KIB_PER_MB,
        uss_mb=(rollup["Private_Clean"] + rollup["Private_Dirty"]) / KIB_PER_MB,
        libraries=mapped_libraries(pid),
        library_rss_mb={path: kib / KIB_PER_MB for path, kib in library_rss_kib(pid).items()},
    )
