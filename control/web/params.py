"""Query strings, path segments and request bodies read and checked: a 400 that names the bad
parameter.

Every value in a request is untrusted; handlers get typed values (Unix seconds, ints, bools, a
node id, text that can be stored) or never run. Unknown and repeated parameters are refused
too: a typo such as `form=` must not silently mean "no lower bound".
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import datetime
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from control.web.exchange import HttpError, Request

MAX_FIELDS: Final = 16
MAX_TIME_CHARS: Final = 40
NODE_FORBIDDEN: Final = frozenset("/+#\x00")
"""Characters no node id can hold: MQTT topic separators and wildcards, and NUL (which
PostgreSQL's text refuses)."""
_TRUE: Final = frozenset({"1", "true", "yes"})
_FALSE: Final = frozenset({"0", "false", "no"})


def bad(name: str, message: str) -> HttpError:
    return HttpError(HTTPStatus.BAD_REQUEST, f"{name}: {message}")


def parse_query(text: str) -> dict[str, str]:
    """The query string's parameters, each once; 400 for bad encoding or a repeated name."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise bad("query", "not valid UTF-8 after percent-decoding") from None
    except ValueError:
        raise bad("query", f"more than {MAX_FIELDS} parameters") from None
    query: dict[str, str] = {}
    for name, value in pairs:
        if name in query:
            raise bad(_shown(name), "given more than once")
        query[name] = value
    return query


def only(query: Mapping[str, str], allowed: Collection[str]) -> None:
    """400 when the query holds a parameter this call does not take."""
    for name in query:
        if name not in allowed:
            takes = ", ".join(sorted(allowed)) or "none"
            raise bad(_shown(name), f"unknown parameter (this call takes: {takes})")


def _shown(name: str) -> str:
    # The name goes back in a JSON error: bounded, and as the client's own text.
    return name if len(name) <= MAX_TIME_CHARS else name[:MAX_TIME_CHARS] + "…"


def time_param(query: Mapping[str, str], name: str) -> float | None:
    """An ISO-8601 time with a zone (`2026-11-25T12:00:00Z`) as Unix seconds; None if absent."""
    text = query.get(name)
    if text is None or text == "":
        return None
    example = "e.g. 2026-11-25T12:00:00Z"
    if len(text) > MAX_TIME_CHARS:
        raise bad(name, f"not an ISO-8601 time ({example})")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise bad(name, f"not an ISO-8601 time ({example})") from None
    if moment.tzinfo is None:
        raise bad(name, f"needs a time zone: Z for UTC ({example})")
    return moment.timestamp()


def time_range(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    start, end = time_param(query, "from"), time_param(query, "to")
    if start is not None and end is not None and start >= end:
        raise bad("from", "must be before to")
    return start, end


def int_param(query: Mapping[str, str], name: str, *, default: int, lo: int, hi: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    value = _int(text)
    if value is None or not lo <= value <= hi:
        raise bad(name, f"expected a whole number from {lo} to {hi}")
    return value


def _int(text: str) -> int | None:
    # str.isdigit admits other scripts' digits and int() reads them: only ASCII here.
    if not text or len(text) > 12 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def flag_param(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name, "0").lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise bad(name, "expected 1 or 0")


def node_segment(segment: str) -> str:
    """A node id from a percent-encoded path segment."""
    try:
        node = unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise bad("node", "not valid UTF-8 after percent-decoding") from None
    return node_name(node)


def node_name(node: str) -> str:
    """node if it can be a node id at all; 404 otherwise (no node has that name)."""
    if not node or NODE_FORBIDDEN.intersection(node):
        raise HttpError(HTTPStatus.NOT_FOUND, "no such node")
    return node


def alarm_id_segment(segment: str) -> int:
    value = _int(segment)
    if value is None or value < 1:
        raise bad("alarm id", "expected a positive whole number")
    return value


def seq_segment(segment: str) -> int:
    value = _int(segment)
    if value is None:
        raise bad("seq", "expected a whole number")
    return value


def body_fields(req: Request) -> dict[str, Any]:
    """The body's fields: a JSON object, or a form (application/x-www-form-urlencoded)."""
    kind = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        text = req.body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("body", "not valid UTF-8") from None
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_query(text))
    if kind != "application/json":
        raise HttpError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "body: send application/json (or a form)"
        )
    try:
        doc = json.loads(text or "{}", parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise bad("body", "not valid JSON") from None
    if not isinstance(doc, dict):
        raise bad("body", "expected a JSON object")
    return doc


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def text_field(
    fields: dict[str, Any], name: str, *, max_chars: int, default: str | None = None
) -> str:
    """A string field that can be stored: bounded, no NUL, no lone surrogate."""
    value = fields.get(name, default)
    if not isinstance(value, str):
        raise bad(name, "expected a string")
    if len(value) > max_chars:
        raise bad(name, f"at most {max_chars} characters")
    try:
        value.encode("utf-8")  # a JSON "\ud800" decodes to a lone surrogate no database stores
    except UnicodeEncodeError:
        raise bad(name, "not valid Unicode text") from None
    if "\x00" in value:
        raise bad(name, "holds a NUL character")
    return value
