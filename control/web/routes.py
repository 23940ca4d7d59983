"""Every URL the server answers, who may call it, and the checks before any handler runs.

Access, in this order: `auth: none` refuses every POST (a wall display writes nothing); a POST
must come from our own origin (Origin/Referer, when the browser sends them) and, but for the
login itself, carry the session's CSRF token in `X-CSRF-Token`; then PUBLIC needs nothing,
LOGIN a session (API: 401, page: a redirect to /login), METRICS a session unless asked from
this machine directly (a Prometheus scraper cannot log in; through a proxy on this machine it
is not direct, see `direct_loopback`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from http import HTTPStatus
from typing import Final
from urllib.parse import quote

from control.web import api, auth, evidence, login
from control.web.context import Context
from control.web.exchange import HttpError, Request, Response
from control.web.pages import PUBLIC_ASSETS, Pages

Handler = Callable[[Context, Request, Mapping[str, str]], Response]

CSRF_HEADER: Final = "x-csrf-token"
PROXY_HEADERS: Final = ("forwarded", "x-forwarded-for", "x-real-ip")
"""A request carrying one of these came through a proxy: its peer address is the proxy's."""
_PLACEHOLDER: Final = re.compile(r"\{(\w+)\}")


class Access(Enum):
    PUBLIC = "public"
    LOGIN = "login"
    METRICS = "metrics"


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    """Path segments; `{name}` matches one whole segment, still percent-encoded."""
    handler: Handler
    access: Access = Access.LOGIN
    page: bool = False
    """A page a person opens: without a session, a redirect to the login page, not a 401."""
    csrf: bool = True
    """A POST must carry the session's CSRF token (all but the login, which has no session)."""

    def match(self, segments: list[str]) -> dict[str, str] | None:
        parts = self.pattern.strip("/").split("/") if self.pattern != "/" else [""]
        if len(parts) != len(segments):
            return None
        args: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            placeholder = _PLACEHOLDER.fullmatch(part)
            if placeholder is not None:
                if not segment:
                    return None
                args[placeholder.group(1)] = segment
            elif part != segment:
                return None
        return args


def direct_loopback(req: Request) -> bool:
    """Whether the peer is this machine itself and no proxy says it forwards someone else."""
    try:
        address = ipaddress.ip_address(req.client)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 on a dual-stack socket
    loopback = address.is_loopback
    return loopback and not any(name in req.headers for name in PROXY_HEADERS)


def _page(pages: Pages, name: str) -> Handler:
    return lambda _ctx, _req, _args: pages.file(name)


def _static(pages: Pages) -> Handler:
    return lambda _ctx, req, args: pages.static(req, args)


def build_routes(pages: Pages) -> list[Route]:
    public, metrics = Access.PUBLIC, Access.METRICS
    return [
        Route("GET", "/", _page(pages, "fleet.html"), page=True),
        Route("GET", "/nodes/{node}", _page(pages, "node.html"), page=True),
        Route("GET", "/login", _page(pages, "login.html"), public, page=True),
        Route("GET", "/static/{name}", _static(pages)),
        Route("GET", "/healthz", api.healthz, public),
        Route("GET", "/metrics", api.metrics, metrics),
        Route("POST", "/login", login.login, public, csrf=False),
        Route("POST", "/logout", login.logout),
        Route("GET", "/api/me", login.me, public),
        Route("GET", "/api/nodes", api.nodes),
        Route("GET", "/api/nodes/{node}", api.node),
        Route("GET", "/api/nodes/{node}/verdicts", api.verdicts),
        Route("GET", "/api/nodes/{node}/series", api.series),
        Route("GET", "/api/nodes/{node}/health", api.health),
        Route("GET", "/api/nodes/{node}/gaps", api.gaps),
        Route("GET", "/api/nodes/{node}/alarms", api.node_alarms),
        Route("GET", "/api/nodes/{node}/windows", evidence.windows),
        Route("POST", "/api/nodes/{node}/clips/{clip}/request", evidence.request_clip),
        Route("GET", "/api/nodes/{node}/clips/{clip}", evidence.clip_state),
        Route("GET", "/api/nodes/{node}/clips/{clip}/audio", evidence.clip_audio),
        Route("POST", "/api/nodes/{node}/verdicts/{seq}/label", evidence.label),
        Route("GET", "/api/alarms", api.alarms),
        Route("POST", "/api/alarms/{alarm}/ack", api.ack),
        Route("GET", "/api/export.csv", api.export),
    ]


class Router:
    def __init__(self, ctx: Context, pages: Pages) -> None:
        self.ctx = ctx
        self.routes = build_routes(pages)

    def dispatch(self, req: Request) -> Response:
        if self.ctx.read_only and not auth.host_allowed(
            req.headers.get("host"), self.ctx.settings.http.hosts
        ):
            # Without logins, the Host is the only thing a rebinding page cannot choose.
            raise HttpError(HTTPStatus.MISDIRECTED_REQUEST, "unknown Host: add it to http.hosts")
        segments = req.path.split("/")[1:]
        matches = [(r, args) for r in self.routes if (args := r.match(segments)) is not None]
        if not matches:
            raise HttpError(HTTPStatus.NOT_FOUND, "no such page or API call")
        # HEAD is GET without the body (the server leaves it out): monitors probe /healthz so.
        method = "GET" if req.method == "HEAD" else req.method
        for route, args in matches:
            if route.method == method:
                return self._call(route, args, self._with_session(req))
        allowed = ", ".join(sorted({r.method for r, _ in matches}))
        raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allowed}", [("Allow", allowed)])

    def _with_session(self, req: Request) -> Request:
        if self.ctx.read_only:
            return req
        token = auth.cookie_token(req.headers.get("cookie"))
        session = self.ctx.sessions.find(token, self.ctx.clock())
        return replace(req, session=session, token=token if session is not None else None)

    def _call(self, route: Route, args: dict[str, str], req: Request) -> Response:
        if req.method == "POST":
            self._check_post(route, req)
        if not self._allowed(route, args, req):
            if route.page:
                target = quote(req.path, safe="/")
                raise HttpError(
                    HTTPStatus.SEE_OTHER, "log in first", [("Location", f"/login?next={target}")]
                )
            raise HttpError(HTTPStatus.UNAUTHORIZED, "log in first")
        return route.handler(self.ctx, req, args)

    def _allowed(self, route: Route, args: Mapping[str, str], req: Request) -> bool:
        if route.access is Access.PUBLIC or self.ctx.read_only or req.session is not None:
            return True
        if route.access is Access.METRICS:
            return direct_loopback(req)
        # The login page's own script and style are served to anyone.
        return route.pattern == "/static/{name}" and args["name"] in PUBLIC_ASSETS

    def _check_post(self, route: Route, req: Request) -> None:
        if self.ctx.read_only:
            raise HttpError(HTTPStatus.FORBIDDEN, "read-only display (http.auth: none)")
        h = req.headers
        if not auth.same_origin(h.get("origin"), h.get("referer"), h.get("host")):
            raise HttpError(HTTPStatus.FORBIDDEN, "cross-site request refused")
        if not route.csrf:
            return  # no session yet: the origin check and the password are the guard
        if req.session is None:
            raise HttpError(HTTPStatus.UNAUTHORIZED, "log in first")
        if not auth.tokens_equal(h.get(CSRF_HEADER), req.session.csrf_token):
            raise HttpError(HTTPStatus.FORBIDDEN, "missing or wrong X-CSRF-Token")
