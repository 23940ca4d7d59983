"""One request and its answer, as plain values: what routes and handlers see instead of sockets.

JSON answers are built here only. They are ASCII (every other character as a \\u escape, lone
surrogates included), and `<`, `>` and `&` are escaped too: in valid JSON they occur only inside
strings, so the escape changes no value, and a body that some tool does render as HTML still
holds no tag. A node's stored payloads are spliced in as the text they were published as.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from control.store.records import Session

JSON_TYPE: Final = "application/json; charset=utf-8"
_HTML_SAFE: Final = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
_NON_ASCII: Final = re.compile(r"[^\x00-\x7f]")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """The path as sent (still percent-encoded), without the query."""
    query: Mapping[str, str]
    """Each parameter once (a repeated one is refused before this is built)."""
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes
    client: str
    """The peer's address."""
    session: Session | None = None
    token: str | None = None
    """The session cookie's token, when the request carried a valid one."""


@dataclass
class Response:
    status: int
    body: bytes | Iterator[bytes]
    """Bytes, or an iterator of chunks sent with chunked transfer as they come."""
    content_type: str = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)


class HttpError(Exception):
    """An answer other than success: the status, and a message for `{"error": ...}`."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def finite(value: float | None) -> float | None:
    """value, or None when it is not a finite number (JSON has no NaN or Infinity)."""
    if value is None or not math.isfinite(value):
        return None
    return value


def _clean(value: Any) -> Any:
    # Only the API's own documents pass here (shallow, built by this package): a float from
    # the database that is infinite (a payload's 1e400 parses to inf) becomes null.
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def json_text(value: Any) -> str:
    return json.dumps(_clean(value), ensure_ascii=True, allow_nan=False).translate(_HTML_SAFE)


def raw_json(text: str) -> str:
    """A stored payload (valid JSON, as published) made safe to splice into an answer."""
    # A payload sent with a UTF-8 byte order mark parses, but a mark inside an array is not JSON.
    text = text.removeprefix("\ufeff").strip()
    # Outside strings valid JSON is ASCII, so escaping every other character changes no value.
    return _NON_ASCII.sub(_json_escape, text).translate(_HTML_SAFE)


def _json_escape(match: re.Match[str]) -> str:
    return json.dumps(match.group(), ensure_ascii=True)[1:-1]


def with_raw(doc: Mapping[str, Any], raw: Mapping[str, str | None]) -> str:
    """json_text(doc) with the members of `raw` added as spliced JSON texts (null for None)."""
    text = json_text(dict(doc))
    if not raw:
        return text
    members = ",".join(
        f"{json_text(name)}:{'null' if value is None else raw_json(value)}"
        for name, value in raw.items()
    )
    return f"{text[:-1]},{members}}}" if doc else f"{{{members}}}"


def json_response(value: Any, status: int = HTTPStatus.OK) -> Response:
    return Response(status, json_text(value).encode("ascii"))


def text_json_response(text: str, status: int = HTTPStatus.OK) -> Response:
    """An answer whose JSON text is already built (from json_text, with_raw, raw_json)."""
    return Response(status, text.encode("ascii"))


def error_body(message: str) -> bytes:
    return json_text({"error": message}).encode("ascii")
