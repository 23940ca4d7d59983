"""The node page's evidence: windows with clips, fetching a clip from its node, playing it, and
an engineer's label for the window (what `corona-control labels export` gives corona-train).

A clip is asked for over MQTT by the collector (`Context.request_clip`); the node answers on
clip/NAME and the collector stores it; the page polls the clip's state and then plays it from
here. Names come from the path, are checked against the clip name pattern, and are only ever
looked up, never used to build a path.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Final

from control.collector import ClipRequestError
from control.ingest import clip_of
from control.web import params
from control.web.api import known_node
from control.web.context import Context
from control.web.exchange import HttpError, Request, Response, json_response

WINDOWS_DEFAULT: Final = 50
WINDOWS_MAX: Final = 1000
NOTE_MAX_CHARS: Final = 2000
LABELS: Final = ("normal", "anomalous")
FLAC_TYPE: Final = "audio/flac"

Args = Mapping[str, str]


def _clip(node: str, segment: str) -> str:
    name = clip_of(node, segment)
    if name is None:
        raise HttpError(HTTPStatus.NOT_FOUND, "no such clip")
    return name.name


def _user(req: Request) -> str:
    if req.session is None:  # routes.py lets no POST through without one; a second guard
        raise HttpError(HTTPStatus.UNAUTHORIZED, "log in first")
    return req.session.user


def windows(ctx: Context, req: Request, args: Args) -> Response:
    """GET /api/nodes/{node}/windows: the newest windows that name a clip, newest first."""
    params.only(req.query, ("limit",))
    limit = params.int_param(req.query, "limit", default=WINDOWS_DEFAULT, lo=1, hi=WINDOWS_MAX)
    node = known_node(ctx, args)
    return json_response([w.as_json() for w in ctx.store.evidence(node, limit)])


def request_clip(ctx: Context, req: Request, args: Args) -> Response:
    """POST /api/nodes/{node}/clips/{clip}/request: ask the node for the clip (202)."""
    node = known_node(ctx, args)
    clip = _clip(node, args["clip"])
    user = _user(req)
    if ctx.request_clip is None:
        raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "no collector to ask the node")
    try:
        ctx.request_clip(node, clip, user)
    except ClipRequestError as err:
        raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, str(err)) from None
    return json_response({"clip": clip, "state": "pending"}, HTTPStatus.ACCEPTED)


def clip_state(ctx: Context, req: Request, args: Args) -> Response:
    """GET /api/nodes/{node}/clips/{clip}: stored, refused or pending (404: never asked for)."""
    params.only(req.query, ())
    node = known_node(ctx, args)
    clip = _clip(node, args["clip"])
    state = ctx.store.clip_state(node, clip)
    if state is None:
        raise HttpError(HTTPStatus.NOT_FOUND, "not requested")
    return json_response({"clip": clip, **state.as_json()})


def clip_audio(ctx: Context, req: Request, args: Args) -> Response:
    """GET /api/nodes/{node}/clips/{clip}/audio: the FLAC as the node sent it."""
    params.only(req.query, ())
    node = known_node(ctx, args)
    clip = _clip(node, args["clip"])
    flac = ctx.store.clip(node, clip)
    if flac is None:
        raise HttpError(HTTPStatus.NOT_FOUND, "clip not here (yet)")
    return Response(
        HTTPStatus.OK,
        flac,
        content_type=FLAC_TYPE,
        headers=[("Content-Disposition", f'inline; filename="{clip}"')],
    )


def label(ctx: Context, req: Request, args: Args) -> Response:
    """POST /api/nodes/{node}/verdicts/{seq}/label {label, note}: a person's judgement."""
    node = known_node(ctx, args)
    seq = params.seq_segment(args["seq"])
    fields = params.body_fields(req)
    value = params.text_field(fields, "label", max_chars=16, default="")
    if value not in LABELS:
        raise params.bad("label", "expected normal or anomalous")
    note = params.text_field(fields, "note", max_chars=NOTE_MAX_CHARS, default="").strip()
    stored = ctx.store.set_label(node, seq, value, user=_user(req), note=note, at=ctx.clock())
    return json_response(stored.as_json())
