"""The web server's limits at the socket: slow and silent clients, floods of connections and
headers, bodies too large or without a length, requests it cannot parse. Raw sockets, so the
test says exactly what a misbehaving client sends.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager

import pytest

from control.web import handler, server
from tests.daemon_runs import wait_until
from tests.fixtures.control_web import HOST, Web, WebFactory

SHORT_DEADLINE_S = 1.0
SHORT_IDLE_S = 0.5
CLOSE_WAIT_S = 10.0
"""Longest a test waits for the server to close a connection it should close in ~1 s."""


@contextmanager
def connection(web: Web) -> Iterator[socket.socket]:
    with closing(socket.create_connection((HOST, web.port), timeout=CLOSE_WAIT_S)) as sock:
        yield sock


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one answer from a raw socket (status, headers, body), as http.client does."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    headers = {k.lower(): v for k, v in response.getheaders()}
    return response.status, headers, response.read()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler, "REQUEST_DEADLINE_S", SHORT_DEADLINE_S)
    monkeypatch.setattr(handler, "IDLE_TIMEOUT_S", SHORT_IDLE_S)


class TestSlowClients:
    def test_a_silent_connection_is_closed(self, short_timeouts: None, web: Web) -> None:
        with connection(web) as sock:
            started = time.monotonic()
            assert closed_by_server(sock)
            assert time.monotonic() - started < CLOSE_WAIT_S

    def test_a_trickling_request_is_cut_at_the_deadline(
        self, short_timeouts: None, web: Web
    ) -> None:
        """Slowloris: one byte every 0.2 s keeps each read under the idle timeout, but the
        request as a whole must arrive within the deadline."""
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
        with connection(web) as sock:
            started = time.monotonic()
            sock.settimeout(0.2)
            cut = False
            for byte in request:
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    cut = True
                    break
                try:
                    if sock.recv(1) == b"":
                        cut = True
                        break
                except TimeoutError:
                    continue  # still open: the next byte after the 0.2 s the recv waited
                except ConnectionResetError:
                    cut = True
                    break
            elapsed = time.monotonic() - started
        assert cut, "the server waited for the whole trickle"
        assert SHORT_DEADLINE_S * 0.9 < elapsed < SHORT_DEADLINE_S + 2.0

    def test_keep_alive_serves_several_requests(self, web: Web) -> None:
        """Within the limits a connection is kept for the next request (HTTP/1.1)."""
        conn = http.client.HTTPConnection(HOST, web.port, timeout=CLOSE_WAIT_S)
        try:
            for _ in range(3):
                conn.request("GET", "/healthz")
                reply = conn.getresponse()
                assert reply.status == 200
                reply.read()
        finally:
            conn.close()


class TestFloods:
    def test_connections_beyond_the_limit_get_a_503(
        self, monkeypatch: pytest.MonkeyPatch, web_factory: WebFactory
    ) -> None:
        """With MAX_CONNECTIONS held open, the next one is told busy at once; when one
        closes, a new one is served."""
        monkeypatch.setattr(server, "MAX_CONNECTIONS", 2)
        web = web_factory()
        with connection(web) as first, connection(web):
            with connection(web) as third:
                status, headers, body = answer(third)
                assert status == 503
                assert json.loads(body) == {"error": "busy: too many requests"}
                assert headers["connection"] == "close"
            first.close()

            def served() -> bool:
                with connection(web) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    return answer(sock)[0] == 200

            wait_until(served, "a connection served after one of the two closed")

    def test_too_many_headers(self, web: Web) -> None:
        with connection(web) as sock:
            lines = b"".join(b"X-H%d: 1\r\n" % i for i in range(120))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
            status, headers, body = answer(sock)
        assert status == 431
        assert json.loads(body) == {"error": "Too many headers"}
        assert headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in headers["content-security-policy"]

    def test_a_request_line_too_long(self, web: Web) -> None:
        with connection(web) as sock:
            sock.sendall(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _headers, body = answer(sock)
        assert status == 414
        assert "error" in json.loads(body)

    def test_an_unparsable_request(self, web: Web) -> None:
        with connection(web) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1 extra\r\n\r\n")
            status, headers, body = answer(sock)
        assert status == 400
        assert json.loads(body)["error"].startswith("Bad request")
        assert headers["x-frame-options"] == "DENY"

    def test_http_0_9_is_refused_with_headers(self, web: Web) -> None:
        with connection(web) as sock:
            sock.sendall(b"GET /healthz\r\n\r\n")
            status, headers, body = answer(sock)
        assert (status, json.loads(body)) == (400, {"error": "HTTP/0.9 is not served"})
        assert headers["x-content-type-options"] == "nosniff"


class TestBodies:
    def test_a_body_over_the_limit_is_413(self, web: Web) -> None:
        """The answer arrives although the body was not read (the server drains, then closes)."""
        body = json.dumps({"user": "x", "password": "p" * (handler.MAX_BODY_BYTES + 100)})
        with connection(web) as sock:
            head = (
                "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body.encode())
            status, headers, reply = answer(sock)
        assert status == 413
        assert json.loads(reply) == {"error": f"body: at most {handler.MAX_BODY_BYTES} bytes"}
        assert headers["connection"] == "close"

    def test_a_body_at_the_limit_is_read(self, web: Web) -> None:
        """16 KiB exactly is read (and then refused as a password, not as a size)."""
        password = "p" * (handler.MAX_BODY_BYTES - len('{"user": "x", "password": ""}'))
        body = json.dumps({"user": "x", "password": password}).encode()
        assert len(body) == handler.MAX_BODY_BYTES
        reply = web.client().request("POST", "/login", body, {"Content-Type": "application/json"})
        assert reply.status == 400
        assert reply.error == "password: at most 1024 characters"

    def test_a_chunked_body_is_411(self, web: Web) -> None:
        with connection(web) as sock:
            sock.sendall(
                b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\n{}\r\n0\r\n\r\n"
            )
            status, _headers, reply = answer(sock)
        assert status == 411
        assert json.loads(reply) == {"error": "send the body with a Content-Length"}

    @pytest.mark.parametrize("length", ["abc", "-1", "1e3", "99999999999999999"])
    def test_a_bad_content_length_is_400(self, web: Web, length: str) -> None:
        with connection(web) as sock:
            sock.sendall(f"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
                         .encode())  # fmt: skip
            status, _headers, _reply = answer(sock)
        assert status == 400


class TestLifecycle:
    def test_stop_frees_the_port(self, web_factory: WebFactory) -> None:
        web = web_factory()
        port = web.port
        web.server.stop()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, port))

    def test_address_before_start_is_an_error(self, web: Web) -> None:
        web.server.stop()
        with pytest.raises(RuntimeError, match="not started"):
            _ = web.server.address
