"""What every handler may use: the store, the settings, sessions, the login limiter, the clock.

Built once by the server and passed to each handler; nothing in it changes per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from control.config import ControlSettings
from control.store import Store
from control.web.auth import LoginLimiter, Sessions

PASSWORD_CHECKS: Final = 2
"""Logins hashed at once at most: each scrypt costs 16 MiB and a core for about 50 ms, and a
flood of logins must not take the collector's memory or CPU."""


@dataclass(frozen=True)
class Context:
    store: Store
    settings: ControlSettings
    sessions: Sessions
    metrics_text: Callable[[], str]
    health: Callable[[], dict[str, Any]]
    request_clip: Callable[[str, str, str], None] | None = None
    """Asks a node for a clip (node, clip name, user): the collector's; None without one."""
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    clock: Callable[[], float] = time.time
    password_checks: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(PASSWORD_CHECKS)
    )

    @property
    def read_only(self) -> bool:
        """auth: none, the wall display: everyone reads, nobody writes."""
        return self.settings.http.auth == "none"
