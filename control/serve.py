"""`corona-control serve`: the collector, the retention job and the web server in one process.

Stopping (SIGTERM, SIGINT) closes the web server, then the MQTT session (what was received and
not stored stays unacknowledged, so the broker keeps it for this session), then the database.
Signal handlers only set an event: logging from a handler can deadlock on structlog's lock.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Final

import structlog

from control.collector import Collector
from control.config import ControlSettings
from control.metrics import collector_metrics
from control.store import Store, StoreError
from daemon import notify

log = structlog.get_logger(__name__)

PRUNE_EVERY_S: Final = 3600.0


class Retention(threading.Thread):
    """Deletes what is older than database.retention_days: at start, then every hour."""

    def __init__(self, store: Store, retention_days: float, stop: threading.Event) -> None:
        super().__init__(name="retention", daemon=True)
        self._store = store
        self._days = retention_days
        self._stop_event = stop

    def run(self) -> None:
        while True:
            try:
                deleted = self._store.prune(time.time(), self._days)
                if any(deleted.values()):
                    log.info("retention_pruned", **deleted)
            except StoreError as err:
                log.error("retention_failed", error=str(err))
            if self._stop_event.wait(PRUNE_EVERY_S):
                return


def run_serve(settings: ControlSettings) -> int:
    from control.web.server import WebServer  # the HTTP stack only for the command that serves

    settings.listen()  # a bad http.listen is refused before anything starts
    store = Store.open(settings.database_url())
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    collector = Collector(store, settings)
    web = WebServer(
        store,
        settings,
        metrics_text=lambda: collector_metrics(collector.stats, store.counts(), collector.queued),
        health=collector.health,
        request_clip=collector.request_clip,
    )
    try:
        web.start()
        collector.start()
        Retention(store, settings.database.retention_days, stop).start()
        host, port = web.address
        log.info(
            "control_serving",
            url=f"http://{host}:{port}/",
            database=store.backend.display,
            auth=settings.http.auth,
            broker=f"{settings.mqtt.host}:{settings.mqtt.port}",
            client_id=settings.collector.client_id,
        )
        notify.ready()
        stop.wait()
        notify.stopping()
        log.info("control_stopping")
    finally:
        web.stop()
        collector.stop()
        store.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
