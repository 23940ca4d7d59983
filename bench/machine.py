"""The machine a benchmark ran on, as printable lines (shared by bench/replay.py and bench/live.py).

CPU model, cores, load average at start, Python and library versions, OPENBLAS_CORETYPE.
"""

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DEFAULT_PACKAGES = ("numpy", "librosa", "ai-edge-litert")


def cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_lines(packages: tuple[str, ...] = DEFAULT_PACKAGES) -> list[str]:
    load_1m, load_5m, _ = os.getloadavg()
    versions = ", ".join(f"{name} {package_version(name)}" for name in packages)
    return [
        f"CPU: {cpu_model()} ({platform.machine()}), {os.cpu_count()} cores,"
        f" load average {load_1m:.2f} (1 min) / {load_5m:.2f} (5 min) at start",
        f"Python {platform.python_version()}, {versions}",
        f"OPENBLAS_CORETYPE: {os.environ.get('OPENBLAS_CORETYPE', 'not set')}",
    ]
