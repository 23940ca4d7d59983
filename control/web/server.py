"""The HTTP server of `corona-control serve`: a thread per connection, up to MAX_CONNECTIONS.

Built on the standard library's `http.server.ThreadingHTTPServer`, not a web framework: the
control room installs on a utility's LAN from Debian and PyPI packages it already trusts, and
a page plus a dozen JSON calls for a handful of operators need no more. What a framework would
otherwise give is done once, here and in handler.py: daemon threads, a connection limit (503
beyond it), per-request deadlines and body limits, security headers on every answer, JSON
errors, no traceback to a client, a lingering close.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import structlog

from control.config import ControlSettings
from control.store import Store
from control.web.auth import Sessions
from control.web.context import Context
from control.web.handler import READ_BUFFER_BYTES, Handler, RoutedServer
from control.web.pages import Pages, load_assets
from control.web.routes import Router

log = structlog.get_logger(__name__)

MAX_CONNECTIONS: Final = 64
"""Connections served at once; beyond, a 503 at once. A wall display and a few operators'
browsers use a handful each."""
LINGER_S: Final = 2.0
LINGER_BYTES: Final = 1024 * 1024
"""At a close, what is still read from the client at most (see _HttpServer.shutdown_request)."""
STOP_POLL_S: Final = 0.1
"""How often the accept loop looks for stop(): the longest stop() waits for it."""
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: 36\r\n\r\n"
    b'{"error": "busy: too many requests"}'
)


def _drain(sock: socket.socket) -> None:
    """Read and drop what arrives until the client closes, LINGER_S or LINGER_BYTES."""
    deadline = time.monotonic() + LINGER_S
    left = LINGER_BYTES
    while left > 0:
        wait = deadline - time.monotonic()
        if wait <= 0:
            return
        sock.settimeout(wait)
        data = sock.recv(min(left, READ_BUFFER_BYTES))
        if not data:
            return
        left -= len(data)


class _HttpServer(RoutedServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a slow client
    request_queue_size = MAX_CONNECTIONS

    def __init__(self, address: tuple[str, int], router: Router) -> None:
        # An IPv6 literal needs an AF_INET6 socket; the class attribute is read at bind time.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.router = router
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks the host up in DNS (getfqdn), which can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("http_busy", client=client_address[0])
            with contextlib.suppress(OSError):
                request.sendall(_BUSY)
            self.close_request(request)  # no lingering here: this is the accept loop
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown_request(self, request: Any) -> None:
        """Close after reading what the client still sends (a refused body, a pipelined
        request): closing with unread data makes the kernel answer with a reset, and a reset
        can cost the client the answer already sent (a 413 it never sees)."""
        try:
            request.shutdown(socket.SHUT_WR)
            _drain(request)
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The base class prints a traceback to stderr; a client that went away is no error.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("http_client_gone", client=client_address[0])
            return
        log.warning("http_connection_failed", client=client_address[0], exc_info=True)


class WebServer:
    """The API and the pages on `settings.listen()` (or `address`), served on a daemon thread."""

    def __init__(
        self,
        store: Store,
        settings: ControlSettings,
        *,
        metrics_text: Callable[[], str],
        health: Callable[[], dict[str, Any]],
        address: tuple[str, int] | None = None,
        clock: Callable[[], float] = time.time,
        request_clip: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """address: where to listen instead of http.listen; port 0 takes a free port (tests).
        clock: Unix seconds now (sessions, staleness, login limits).
        request_clip: the collector's, to ask a node for an evidence clip."""
        sessions = Sessions(store, settings.http.session_hours)
        self.context = Context(
            store, settings, sessions, metrics_text, health, request_clip, clock=clock
        )
        self._router = Router(self.context, Pages(load_assets()))
        self._listen = address
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; OSError when the address cannot be bound."""
        address = self._listen if self._listen is not None else self.context.settings.listen()
        self._server = _HttpServer(address, self._router)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(STOP_POLL_S,), name="web", daemon=True
        )
        self._thread.start()
        host, port = self.address
        log.info("web_listening", host=host, port=port, auth=self.context.settings.http.auth)

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the web server is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
