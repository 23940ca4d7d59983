"""Which ALSA configuration PortAudio will read: ``ALSA_CONFIG_PATH``, checked before it is used.

The service names its own (systemd/asound.conf, installed as /etc/corona-monitor/asound.conf:
alsa.conf without /etc/alsa/conf.d, so PortAudio's device probe does not map libavcodec and
friends; README "Memory"). Nothing here imports sounddevice: PortAudio reads the configuration
when sounddevice is imported, and when ``ALSA_CONFIG_PATH`` names no file that exists, ALSA
aborts the process there (SIGABRT, measured with alsa-lib 1.2.8), which no ``except`` catches.
So the CLI calls ``check()`` first and turns that into one error line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from daemon.errors import CaptureError

ENV: Final = "ALSA_CONFIG_PATH"
SERVICE_CONFIG: Final = Path("/etc/corona-monitor/asound.conf")
"""Where systemd/install.sh puts the service's ALSA configuration (the unit names it)."""


def config_paths() -> list[str]:
    """The files ``ALSA_CONFIG_PATH`` lists (ALSA separates them with ':'); [] when unset."""
    value = os.environ.get(ENV, "")
    return [part for part in value.split(":") if part]


def check() -> None:
    """CaptureError when ``ALSA_CONFIG_PATH`` is set but none of its files exists.

    One existing file is enough: ALSA skips a missing one among others (measured), and aborts
    only when it reads none.
    """
    paths = config_paths()
    if paths and not any(Path(path).is_file() for path in paths):
        raise CaptureError(
            f"{ENV}={os.environ[ENV]}: no such file (ALSA would abort the process);"
            f" the service's is {SERVICE_CONFIG}, installed by systemd/install.sh"
        )


def describe() -> str:
    """One line for check-config: which ALSA configuration the device list comes from."""
    paths = config_paths()
    if not paths:
        return (
            f"the system's ({ENV} not set; the service uses {SERVICE_CONFIG},"
            " which may list other devices)"
        )
    return f"{':'.join(paths)} ({ENV})"
