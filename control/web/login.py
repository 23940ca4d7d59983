"""`POST /login`, `POST /logout` and `GET /api/me`: sessions begin, end, and tell the page who.

A failed login says only "wrong user name or password" (not which), unknown names cost the
same scrypt as known ones, and guesses are limited per name and per address (auth.LoginLimiter).
The CSRF token reaches the page through `/api/me`, never through a cookie a script could read
on another tab of the same site.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

import structlog

from control.sanitize import terminal_safe
from control.web import auth, params
from control.web.api import Args
from control.web.context import Context
from control.web.exchange import HttpError, Request, Response, json_response

log = structlog.get_logger(__name__)

WRONG: Final = "wrong user name or password"
LOG_CHARS: Final = 80
"""A user name as logged: a guesser's 64 characters of escapes must not reach a terminal raw."""
PASSWORD_CHECK_WAIT_S: Final = 10.0
"""A login waits this long for a free password check before the server says it is busy."""


def _session_cookie(ctx: Context, token: str) -> str:
    secure = ctx.settings.http.secure_cookies
    return auth.session_cookie(token, ctx.sessions.lifetime_s, secure=secure)


def login(ctx: Context, req: Request, _args: Args) -> Response:
    fields = params.body_fields(req)
    user = params.text_field(fields, "user", max_chars=auth.USER_MAX_CHARS)
    password = params.text_field(fields, "password", max_chars=auth.PASSWORD_MAX_CHARS)
    now = ctx.clock()
    wait = ctx.limiter.retry_after(user, req.client, now)
    if wait is not None:
        log.warning("login_limited", user=terminal_safe(user, LOG_CHARS), client=req.client)
        seconds = max(int(wait) + 1, 1)
        raise HttpError(
            HTTPStatus.TOO_MANY_REQUESTS,
            f"too many failed logins: try again in {seconds} s",
            [("Retry-After", str(seconds))],
        )
    if not ctx.password_checks.acquire(timeout=PASSWORD_CHECK_WAIT_S):
        raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "busy: try again")
    try:
        stored = ctx.store.password_hash(user)
        ok = auth.verify_password(password, stored or auth.dummy_hash()) and stored is not None
    finally:
        ctx.password_checks.release()
    if not ok:
        ctx.limiter.failed(user, req.client, ctx.clock())
        log.warning("login_failed", user=terminal_safe(user, LOG_CHARS), client=req.client)
        raise HttpError(HTTPStatus.UNAUTHORIZED, WRONG)
    ctx.limiter.succeeded(user)
    token, session = ctx.sessions.start(user, ctx.clock())
    log.info("login", user=terminal_safe(user, LOG_CHARS), client=req.client)
    answer = json_response(
        {"user": user, "csrf_token": session.csrf_token, "expires_at": session.expires_at}
    )
    answer.headers.append(("Set-Cookie", _session_cookie(ctx, token)))
    return answer


def logout(ctx: Context, req: Request, _args: Args) -> Response:
    ctx.sessions.end(req.token)
    if req.session is not None:
        log.info("logout", user=terminal_safe(req.session.user, LOG_CHARS), client=req.client)
    answer = json_response({"user": None})
    secure = ctx.settings.http.secure_cookies
    answer.headers.append(("Set-Cookie", auth.cleared_cookie(secure=secure)))
    return answer


def me(ctx: Context, req: Request, _args: Args) -> Response:
    """Who is logged in, the CSRF token for POSTs, and whether anything may be written."""
    params.only(req.query, ())
    session = req.session
    return json_response(
        {
            "auth": ctx.settings.http.auth,
            "read_only": ctx.read_only,
            "user": None if session is None else session.user,
            "csrf_token": None if session is None else session.csrf_token,
            "expires_at": None if session is None else session.expires_at,
        }
    )
