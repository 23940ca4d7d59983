"""The JSON API's answers (DESIGN.md, "Control room"): one function per call.

Each takes the context, the request (its session already checked by routes.py) and the path's
values, and returns a Response or raises HttpError. Node payloads come back as the texts the
store kept (oldest first), never re-encoded from parsed values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Final

from control.store import AckError
from control.web import params
from control.web.context import Context
from control.web.exchange import (
    HttpError,
    Request,
    Response,
    json_response,
    raw_json,
    text_json_response,
)
from control.web.export_csv import csv_chunks
from control.web.fleet import node_json, nodes_json

VERDICTS_DEFAULT: Final = 1000
VERDICTS_MAX: Final = 10_000
"""A month of one node is 86,400 verdicts: a client pages through them with from=, or asks
for the series (a plot) or the CSV export instead of one huge answer."""
ALARMS_DEFAULT: Final = 200
ALARMS_MAX: Final = 10_000
POINTS_DEFAULT: Final = 600
POINTS_MAX: Final = 5000
"""Buckets of a series at most: more than a wall screen has pixels across."""
DEFAULT_SPAN_S: Final = 86400.0
"""A series without from= covers the day before to= (or the node's last day of windows)."""
WINDOW_END_SLACK_S: Final = 1e-3
"""Ranges are [from, to): the last window itself belongs in a range that ends at it."""
NOTE_MAX_CHARS: Final = 2000
CSV_TYPE: Final = "text/csv; charset=utf-8"

Args = Mapping[str, str]


def _now(ctx: Context) -> datetime:
    return datetime.fromtimestamp(ctx.clock(), UTC)


def known_node(ctx: Context, args: Args) -> str:
    node = params.node_segment(args["node"])
    if not ctx.store.has_node(node):
        raise HttpError(HTTPStatus.NOT_FOUND, "no such node")
    return node


def nodes(ctx: Context, req: Request, _args: Args) -> Response:
    params.only(req.query, ())
    stale_after_s = ctx.settings.stale_after_s
    return text_json_response(nodes_json(ctx.store.nodes(), _now(ctx), stale_after_s=stale_after_s))


def node(ctx: Context, req: Request, args: Args) -> Response:
    params.only(req.query, ())
    name = params.node_segment(args["node"])
    state = ctx.store.node(name)
    if state is None:
        raise HttpError(HTTPStatus.NOT_FOUND, "no such node")
    span = ctx.store.window_span(name)
    extra = {"span": None if span is None else {"first": span[0], "last": span[1]}}
    stale_after_s = ctx.settings.stale_after_s
    return text_json_response(node_json(state, _now(ctx), extra, stale_after_s=stale_after_s))


def verdicts(ctx: Context, req: Request, args: Args) -> Response:
    return _stored_texts(ctx, req, args, ctx.store.verdicts)


def health(ctx: Context, req: Request, args: Args) -> Response:
    return _stored_texts(ctx, req, args, ctx.store.health)


def _stored_texts(
    ctx: Context,
    req: Request,
    args: Args,
    read: Callable[[str, float | None, float | None, int], list[str]],
) -> Response:
    """A node's stored documents in [from, to), oldest first, as the JSON array of their texts."""
    params.only(req.query, ("from", "to", "limit"))
    start, end = params.time_range(req.query)
    limit = params.int_param(req.query, "limit", default=VERDICTS_DEFAULT, lo=1, hi=VERDICTS_MAX)
    name = known_node(ctx, args)
    texts = read(name, start, end, limit)
    return text_json_response("[" + ",".join(raw_json(t) for t in texts) + "]")


def series(ctx: Context, req: Request, args: Args) -> Response:
    params.only(req.query, ("from", "to", "points"))
    start, end = params.time_range(req.query)
    points = params.int_param(req.query, "points", default=POINTS_DEFAULT, lo=1, hi=POINTS_MAX)
    name = known_node(ctx, args)
    if end is None:
        # Without to=: the day after from=, or the day up to the node's last window (a
        # replay's windows lie in 1970, a dead node's days ago: either way its data).
        span = ctx.store.window_span(name)
        last = ctx.clock() if span is None else span[1] + WINDOW_END_SLACK_S
        end = last if start is None else start + DEFAULT_SPAN_S
    if start is None:
        start = end - DEFAULT_SPAN_S
    buckets = ctx.store.series(name, start, end, points)
    return json_response(
        {
            "node": name,
            "from": start,
            "to": end,
            "step_s": (end - start) / points,
            "points": [p.as_json() for p in buckets],
        }
    )


def gaps(ctx: Context, req: Request, args: Args) -> Response:
    params.only(req.query, ())
    name = known_node(ctx, args)
    return json_response([g.as_json() for g in ctx.store.gaps(name)])


def node_alarms(ctx: Context, req: Request, args: Args) -> Response:
    params.only(req.query, ("limit",))
    limit = params.int_param(req.query, "limit", default=ALARMS_DEFAULT, lo=1, hi=ALARMS_MAX)
    name = known_node(ctx, args)
    alarms = ctx.store.alarms(open_only=False, node=name, limit=limit)
    return json_response([a.as_json() for a in alarms])


def alarms(ctx: Context, req: Request, _args: Args) -> Response:
    params.only(req.query, ("open", "limit"))
    open_only = params.flag_param(req.query, "open")
    limit = params.int_param(req.query, "limit", default=ALARMS_DEFAULT, lo=1, hi=ALARMS_MAX)
    return json_response([a.as_json() for a in ctx.store.alarms(open_only=open_only, limit=limit)])


def ack(ctx: Context, req: Request, args: Args) -> Response:
    alarm_id = params.alarm_id_segment(args["alarm"])
    fields = params.body_fields(req)
    note = params.text_field(fields, "note", max_chars=NOTE_MAX_CHARS, default="").strip()
    if req.session is None:  # routes.py lets no POST through without one; a second guard
        raise HttpError(HTTPStatus.UNAUTHORIZED, "log in first")
    try:
        alarm = ctx.store.ack(alarm_id, req.session.user, note, ctx.clock())
    except AckError as err:
        raise HttpError(err.status, str(err)) from None
    return json_response(alarm.as_json())


def export(ctx: Context, req: Request, _args: Args) -> Response:
    params.only(req.query, ("node", "from", "to"))
    start, end = params.time_range(req.query)
    name: str | None = None
    if req.query.get("node"):
        name = params.node_name(req.query["node"])
        if not ctx.store.has_node(name):
            raise HttpError(HTTPStatus.NOT_FOUND, "no such node")
    rows = ctx.store.export(name, start, end)
    return Response(
        HTTPStatus.OK,
        csv_chunks(rows),
        content_type=CSV_TYPE,
        headers=[("Content-Disposition", 'attachment; filename="corona-verdicts.csv"')],
    )


def healthz(ctx: Context, req: Request, _args: Args) -> Response:
    """200 while the collector says it is well (its `ok`, default true), else 503."""
    params.only(req.query, ())
    doc: dict[str, Any] = dict(ctx.health())
    status = HTTPStatus.OK if doc.get("ok", True) else HTTPStatus.SERVICE_UNAVAILABLE
    return json_response(doc, status)


def metrics(ctx: Context, req: Request, _args: Args) -> Response:
    params.only(req.query, ())
    return Response(
        HTTPStatus.OK,
        ctx.metrics_text().encode("utf-8"),
        content_type="text/plain; version=0.0.4; charset=utf-8",
    )
