"""The metrics endpoint: HTTP GET /metrics on one thread of its own, 404 for any other path.

It serves the body `daemon.metrics.MetricsExport` last set and never reads a counter itself (the
outbox's SQLite connection belongs to the service thread); 503 until the first snapshot.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Final

import structlog

log = structlog.get_logger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PATH: Final = "/metrics"
REQUEST_TIMEOUT_S: Final = 5.0
"""A client that sends nothing for this long is dropped (one thread serves every scrape)."""


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = REQUEST_TIMEOUT_S

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != METRICS_PATH:
            self._reply(HTTPStatus.NOT_FOUND, b"not found: only GET /metrics is served\n")
            return
        body = self.server.body
        if body is None:
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, b"no health snapshot yet\n")
            return
        self._reply(HTTPStatus.OK, body)

    def _reply(self, status: HTTPStatus, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE if status == HTTPStatus.OK else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        # The base class writes every request to stderr, which is the JSON log: keep it out.
        log.debug("metrics_request", client=self.client_address[0], line=format % args)


class MetricsServer(HTTPServer):
    """GET /metrics on one thread, answering with the body last set (503 before the first)."""

    def __init__(self, host: str, port: int) -> None:
        # An IPv6 literal needs an AF_INET6 socket; the class attribute is read at bind time.
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.body: bytes | None = None
        super().__init__((host, port), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="metrics", daemon=True)

    def server_bind(self) -> None:
        # HTTPServer's own looks the host up in DNS (getfqdn), which can hang on a tower's uplink.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()
