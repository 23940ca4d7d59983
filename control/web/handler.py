"""One connection's requests: read within limits, routed, answered with the security headers.

Per request: the line, headers and body must arrive within REQUEST_DEADLINE_S however slowly
they trickle (slowloris), each read waits at most IDLE_TIMEOUT_S, a body is at most
MAX_BODY_BYTES. Every answer, errors and the base class's own refusals included, carries
SECURITY_HEADERS; errors are JSON `{"error": ...}`, and a handler's exception is a 500 whose
traceback goes to the log, never to the client.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import structlog

from control.sanitize import terminal_safe
from control.store import StoreError
from control.web import params
from control.web.exchange import JSON_TYPE, HttpError, Request, Response, error_body
from control.web.routes import Router

log = structlog.get_logger(__name__)

MAX_BODY_BYTES: Final = 16 * 1024
"""A login or an acknowledgement note is well under 4 KiB."""
REQUEST_DEADLINE_S: Final = 20.0
"""Request line, headers and body must all arrive within this."""
IDLE_TIMEOUT_S: Final = 10.0
"""A connection silent this long is closed (between keep-alive requests too), and a client that
stops reading an answer for this long is dropped."""
READ_BUFFER_BYTES: Final = 8192
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
LOG_PATH_CHARS: Final = 200


class RoutedServer(ThreadingHTTPServer):
    """What a Handler needs of its server: the router."""

    router: Router


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


class Handler(BaseHTTPRequestHandler):
    server: RoutedServer
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

    def do_HEAD(self) -> None:
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
        # Logged before the answer goes out: ms is the time to answer, not the client's reading.
        log.debug(
            "http_request",
            method=self.command,
            path=terminal_safe(path, LOG_PATH_CHARS),
            status=int(response.status),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        self._send(response)

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
        if self.command == "HEAD":
            return
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

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # "GET /": no headers, so none of ours either
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not served")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's answer to a request it cannot parse, as JSON with our headers."""
        del explain
        self.close_connection = True
        # A request line too broken to name its version still gets a whole HTTP/1.1 answer
        # (the base class would send HTTP/0.9's bare body, without a status or our headers).
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"
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
