"""The HTTP server of `corona-control serve`: sockets, limits and headers around routes.Router.

Built on the standard library's `http.server.ThreadingHTTPServer`, not a web framework: the
control room installs on a utility's LAN from Debian and PyPI packages it already trusts, and
a page plus a dozen JSON calls for a handful of operators need no more. What a framework would
otherwise give is done here, once: a thread per connection (daemon threads) up to
MAX_CONNECTIONS; a deadline for each request's line, headers and body (a client that sends a
byte every few seconds is dropped all the same: slowloris); bodies of at most MAX_BODY_BYTES;
the security headers on every answer, errors included; errors as JSON `{"error": ...}` with
their status, and never a traceback to the client (it goes to the log).
"""

from __future__ import annotations

import contextlib
import io
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import structlog

from control.config import ControlSettings
from control.sanitize import terminal_safe
from control.store import Store, StoreError
from control.web import params
from control.web.auth import Sessions
from control.web.context import Context
from control.web.exchange import JSON_TYPE, HttpError, Request, Response, error_body
from control.web.pages import Pages, load_assets
from control.web.routes import Router

log = structlog.get_logger(__name__)

MAX_BODY_BYTES: Final = 16 * 1024
"""A login or an acknowledgement note is well under 4 KiB."""
REQUEST_DEADLINE_S: Final = 20.0
"""Request line, headers and body must all arrive within this."""
IDLE_TIMEOUT_S: Final = 10.0
"""A connection silent this long is closed (between keep-alive requests too), and a client that
stops reading an answer for this long is dropped."""
MAX_CONNECTIONS: Final = 64
"""Connections served at once; beyond, a 503 at once. A wall display and a few operators'
browsers use a handful each."""
READ_BUFFER_BYTES: Final = 8192
STOP_POLL_S: Final = 0.1
"""How often the accept loop looks for stop(): the longest stop() waits for it."""
SECURITY_HEADERS: Final = (
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    # Answers are live data or tiny files; nothing a shared browser should keep.
    ("Cache-Control", "no-store"),
)
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: 36\r\n\r\n"
    b'{"error": "busy: too many requests"}'
)
LOG_PATH_CHARS: Final = 200


class _DeadlineReader(io.RawIOBase):
    """The socket as a file whose reads give up at `deadline` (time.monotonic), however the
    bytes trickle in; each read also waits at most IDLE_TIMEOUT_S."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = time.monotonic() + REQUEST_DEADLINE_S

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(min(left, IDLE_TIMEOUT_S))
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked answers for the CSV export
    server_version = "corona-control"

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def setup(self) -> None:
        super().setup()
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader, READ_BUFFER_BYTES)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + REQUEST_DEADLINE_S
        super().handle_one_request()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        started = time.monotonic()
        path, _, query_text = self.path.partition("?")
        try:
            body = self._read_body()
        except TimeoutError:
            self.close_connection = True
            return
        except HttpError as err:
            self.close_connection = True  # the body was not read: the stream is out of step
            self._send(_error(err))
            return
        # Writes get the whole idle timeout, whatever the last read left of the deadline.
        self.connection.settimeout(IDLE_TIMEOUT_S)
        response = self._answer(path, query_text, body)
        self._send(response)
        log.debug(
            "http_request",
            method=self.command,
            path=terminal_safe(path, LOG_PATH_CHARS),
            status=int(response.status),
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _answer(self, path: str, query_text: str, body: bytes) -> Response:
        try:
            request = Request(
                method=self.command,
                path=path,
                query=params.parse_query(query_text),
                headers=self._header_map(),
                body=body,
                client=str(self.client_address[0]),
            )
            return self.server.router.dispatch(request)
        except HttpError as err:
            return _error(err)
        except StoreError as err:
            log.error("http_store_error", path=terminal_safe(path, LOG_PATH_CHARS), error=str(err))
            return _error(HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "database unavailable"))
        except Exception:  # the client gets a 500, the log the traceback
            log.exception("http_handler_failed", path=terminal_safe(path, LOG_PATH_CHARS))
            return _error(HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error"))

    def _header_map(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), value)  # the first of a repeated header counts
        return headers

    def _read_body(self) -> bytes:
        if "Transfer-Encoding" in self.headers:
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        text = self.headers.get("Content-Length")
        if text is None:
            return b""
        text = text.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 12:
            raise HttpError(HTTPStatus.BAD_REQUEST, "Content-Length: not a number")
        length = int(text)
        if length > MAX_BODY_BYTES:
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body: at most {MAX_BODY_BYTES} bytes"
            )
        body = self.rfile.read(length)
        if len(body) != length:
            raise TimeoutError("the body ended early")
        return body

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        if isinstance(response.body, bytes):
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._send_chunks(response.body)

    def _send_chunks(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (StoreError, OSError) as err:
            # The status went out already: end the connection without the last chunk, so the
            # client sees a cut answer instead of a complete-looking short file.
            log.error(
                "http_stream_failed", path=terminal_safe(self.path, LOG_PATH_CHARS), error=str(err)
            )
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's answer to a request it cannot parse, as JSON with our headers."""
        del explain
        self.close_connection = True
        text = message or HTTPStatus(code).phrase
        self._send(_error(HttpError(code, terminal_safe(text, LOG_PATH_CHARS))))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _serve logs each request once, with its time

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        # The base class writes to stderr, which is the JSON log, with the client's raw text.
        log.debug(
            "http_problem",
            client=self.client_address[0],
            line=terminal_safe(format % args, LOG_PATH_CHARS),
        )


def _error(err: HttpError) -> Response:
    return Response(err.status, error_body(err.message), JSON_TYPE, list(err.headers))


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a slow client
    request_queue_size = MAX_CONNECTIONS

    def __init__(self, address: tuple[str, int], router: Router) -> None:
        # An IPv6 literal needs an AF_INET6 socket; the class attribute is read at bind time.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.router = router
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

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
            self.shutdown_request(request)
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
    ) -> None:
        """address: where to listen instead of http.listen; port 0 takes a free port (tests).
        clock: Unix seconds now (sessions, staleness, login limits)."""
        sessions = Sessions(store, settings.http.session_hours)
        self.context = Context(store, settings, sessions, metrics_text, health, clock=clock)
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
