"""structlog, configured once: JSON lines for journald, readable text on a terminal.

Every event carries the node id (bound as a context variable), so a control room that collects
logs from many towers can tell them apart.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def configure(
    *,
    level: str = "info",
    fmt: str = "auto",
    node_id: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Set up structlog for this process; call once from a CLI entry point (never at import)."""
    out = stream if stream is not None else sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    node_processors: list[structlog.typing.Processor] = (
        [] if node_id is None else [_NodeField(node_id)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *node_processors,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()


class _NodeField:
    """Adds `node` to every event. Not a context variable: those are per thread, and events
    from paho's network thread (mqtt_connected, mqtt_connect_failed, ...) lacked the field."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def __call__(
        self, _logger: object, _name: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        event.setdefault("node", self.node_id)
        return event
