"""Logins for the web page: hashes, sessions, cookies, CSRF, guess limits, and auth: none.

The parts are unit-tested where they are pure (hashes, cookie parsing, origin checks, the
limiter); everything else against a real WebServer over HTTP (tests/fixtures/control_web.py).
"""

from __future__ import annotations

import hashlib
import json

import pytest

from control.web import auth
from tests.fixtures.control_web import PASSWORD, USER, Clock, Web, WebFactory

PAGES = ["/", "/nodes/tower-0001"]
API_GETS = [
    "/api/nodes",
    "/api/nodes/tower-0001",
    "/api/nodes/tower-0001/verdicts",
    "/api/nodes/tower-0001/series",
    "/api/nodes/tower-0001/health",
    "/api/nodes/tower-0001/gaps",
    "/api/nodes/tower-0001/alarms",
    "/api/alarms?open=1",
    "/api/export.csv",
    "/static/fleet.js",
    "/static/node.js",
    "/static/fleet.html",
]


class TestPasswordHash:
    def test_a_hash_verifies_its_password_only(self) -> None:
        """The password matches its hash; another password, or the same one changed, does not."""
        stored = auth.hash_password(PASSWORD)
        assert auth.verify_password(PASSWORD, stored)
        assert not auth.verify_password(PASSWORD + " ", stored)
        assert not auth.verify_password("", stored)

    def test_hashes_are_salted_and_carry_their_parameters(self) -> None:
        """Two hashes of one password differ (salt), and each names scrypt and its N, r, p."""
        first, second = auth.hash_password(PASSWORD), auth.hash_password(PASSWORD)
        assert first != second
        scheme, n, r, p, _salt, _key = first.split("$")
        assert (scheme, int(n), int(r), int(p)) == ("scrypt", auth.SCRYPT_N, 8, 1)

    def test_other_parameters_still_verify(self) -> None:
        """A hash made with other (cheaper or dearer) parameters verifies: they are read back."""
        stored = auth.hash_password(PASSWORD, n=2**10, r=4, p=2)
        assert auth.verify_password(PASSWORD, stored)

    @pytest.mark.parametrize(
        "stored",
        [
            "",
            "plain",
            "md5$1$2$3$4$5",
            "scrypt$16384$8$1$!!!$AAAA",
            "scrypt$3$8$1$AAAA$AAAA",  # N not a power of two
            f"scrypt${2**30}$8$1$AAAA$AAAA",  # a tampered row asking for a TiB
        ],
    )
    def test_unreadable_hashes_verify_nothing(self, stored: str) -> None:
        """A hash this code cannot read (or would not afford) matches no password, no raise."""
        assert not auth.verify_password(PASSWORD, stored)

    def test_a_lone_surrogate_password_is_refused_not_raised(self) -> None:
        """A JSON "\\ud800" password is a wrong password, not a UnicodeEncodeError."""
        assert not auth.verify_password("\ud800", auth.hash_password(PASSWORD))
        with pytest.raises(auth.UserError, match="Unicode"):
            auth.check_password("abcdefgh\ud800")


class TestNames:
    @pytest.mark.parametrize("name", ["op", "night-shift", "Jörg Müller", "運用者", "a" * 64])
    def test_printable_names_are_accepted(self, name: str) -> None:
        assert auth.check_user_name(name) == name

    @pytest.mark.parametrize(
        "name",
        ["", "a" * 65, " op", "op ", "op\n", "op\x1b[2J", "op\u200b", "\u202eop", "op\ud800",
         "op\u0301", "op\x00"],
    )  # fmt: skip
    def test_invisible_or_control_characters_are_refused(self, name: str) -> None:
        """Empty, too long, padded, or with a control, format, surrogate or combining character."""
        with pytest.raises(auth.UserError, match="user name"):
            auth.check_user_name(name)


class TestCookieAndOrigin:
    def test_the_session_cookie_is_found_among_others(self) -> None:
        """The token is read beside other applications' cookies, even malformed ones."""
        token = auth.new_token()
        header = f'other="x;y; bad; {auth.SESSION_COOKIE}={token}; z=1'
        assert auth.cookie_token(header) == token
        assert auth.cookie_token(f"{auth.SESSION_COOKIE}=short") is None
        assert auth.cookie_token(None) is None

    def test_cookie_attributes(self) -> None:
        """HttpOnly, SameSite=Strict, Path=/ always; Secure only when asked."""
        plain = auth.session_cookie("t" * 43, 3600, secure=False)
        assert {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"} <= set(plain.split("; "))
        assert "Secure" not in plain.split("; ")
        assert "Secure" in auth.session_cookie("t" * 43, 3600, secure=True).split("; ")

    @pytest.mark.parametrize(
        ("origin", "referer", "host", "ok"),
        [
            ("http://ctl:8080", None, "ctl:8080", True),
            ("http://CTL:8080", None, "ctl:8080", True),
            (None, "http://ctl:8080/nodes/x", "ctl:8080", True),
            (None, None, "ctl:8080", True),  # curl: no browser, the CSRF token still applies
            ("http://evil.example", None, "ctl:8080", False),
            ("http://ctl:8081", None, "ctl:8080", False),
            ("null", None, "ctl:8080", False),
            (None, "http://evil.example/", "ctl:8080", False),
            ("http://ctl:8080", None, None, False),
        ],
    )
    def test_same_origin(
        self, origin: str | None, referer: str | None, host: str | None, ok: bool
    ) -> None:
        assert auth.same_origin(origin, referer, host) is ok


class TestLoginLimiter:
    def test_a_name_is_locked_after_its_guesses_for_the_window(self) -> None:
        """Five failures lock the name (from any address) until the first one is a window old."""
        limiter = auth.LoginLimiter(window_s=300, user_guesses=5, client_guesses=100)
        for i in range(5):
            assert limiter.retry_after("op", f"10.0.0.{i}", 1000.0 + i) is None
            limiter.failed("op", f"10.0.0.{i}", 1000.0 + i)
        wait = limiter.retry_after("op", "10.9.9.9", 1010.0)
        assert wait == pytest.approx(290.0)
        assert limiter.retry_after("other", "10.9.9.9", 1010.0) is None
        assert limiter.retry_after("op", "10.9.9.9", 1300.5) is None

    def test_an_address_is_locked_after_its_guesses_over_many_names(self) -> None:
        limiter = auth.LoginLimiter(window_s=300, user_guesses=5, client_guesses=3)
        for i in range(3):
            limiter.failed(f"user{i}", "10.0.0.1", 1000.0)
        assert limiter.retry_after("fresh", "10.0.0.1", 1001.0) is not None
        assert limiter.retry_after("fresh", "10.0.0.2", 1001.0) is None

    def test_memory_is_bounded(self) -> None:
        """A flood of invented names keeps at most TRACKED_KEYS entries."""
        limiter = auth.LoginLimiter()
        for i in range(auth.TRACKED_KEYS + 500):
            limiter.failed(f"user{i}", "10.0.0.1", 1000.0)
        assert len(limiter._seen) <= auth.TRACKED_KEYS


class TestLoginRequired:
    @pytest.mark.parametrize("path", API_GETS)
    def test_api_and_assets_answer_401_without_a_session(self, web: Web, path: str) -> None:
        """Every API call (and every asset but the login page's) refuses without a login."""
        reply = web.client().get(path)
        assert reply.status == 401
        assert reply.error == "log in first"

    @pytest.mark.parametrize("path", PAGES)
    def test_pages_redirect_to_the_login(self, web: Web, path: str) -> None:
        """A page without a session is a 303 to /login, which brings the user back after."""
        reply = web.client().get(path)
        assert reply.status == 303
        assert reply.header("Location") == f"/login?next={path}"

    @pytest.mark.parametrize(
        "path", ["/login", "/static/login.js", "/static/style.css", "/static/common.js", "/healthz"]
    )
    def test_the_login_page_and_healthz_need_none(self, web: Web, path: str) -> None:
        assert web.client().get(path).status == 200

    def test_a_forged_or_unknown_cookie_is_no_session(self, web: Web) -> None:
        client = web.client()
        client.cookie = auth.new_token()
        assert client.get("/api/nodes").status == 401

    def test_only_the_token_hash_is_stored(self, web: Web) -> None:
        """The database holds sha256(token): the cookie's value itself is nowhere in it."""
        client = web.logged_in()
        assert client.cookie is not None
        assert web.store.session(hashlib.sha256(client.cookie.encode()).hexdigest(), web.clock())
        assert web.store.session(client.cookie, web.clock()) is None


class TestLogin:
    def test_login_sets_a_strict_http_only_cookie(self, web: Web) -> None:
        client = web.client()
        reply = client.login()
        assert reply.status == 200
        cookie = reply.header("Set-Cookie") or ""
        attrs = cookie.split("; ")
        assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attrs)
        assert "Secure" not in attrs
        assert attrs[0].startswith(f"{auth.SESSION_COOKIE}=")
        assert client.get("/api/nodes").status == 200
        me = client.get("/api/me").json()
        assert me == {
            "auth": "login",
            "read_only": False,
            "user": USER,
            "csrf_token": client.csrf,
            "expires_at": pytest.approx(web.clock() + 12 * 3600),
        }

    def test_secure_cookies_when_configured(self, web_factory: WebFactory) -> None:
        web = web_factory(secure_cookies=True)
        reply = web.client().login()
        assert "Secure" in (reply.header("Set-Cookie") or "").split("; ")

    def test_a_form_login_works_too(self, web: Web) -> None:
        """curl -d user=...&password=...: the same login, for scripts."""
        client = web.client()
        body = f"user={USER}&password={PASSWORD.replace(' ', '+')}".encode()
        reply = client.request(
            "POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert reply.status == 200
        assert reply.json()["user"] == USER

    @pytest.mark.parametrize(
        ("user", "password"), [(USER, "wrong password"), ("nobody", PASSWORD), (USER, "")]
    )
    def test_a_wrong_password_or_name_is_refused_alike(
        self, web: Web, user: str, password: str
    ) -> None:
        """Wrong password and unknown name get the same 401 and message, and no cookie."""
        reply = web.client().login(user, password)
        assert reply.status == 401
        assert reply.error == "wrong user name or password"
        assert reply.header("Set-Cookie") is None

    @pytest.mark.parametrize(
        "doc",
        [{"user": USER}, {"user": 1, "password": PASSWORD}, {"user": "\ud800", "password": "x"}],
    )
    def test_malformed_logins_are_400(self, web: Web, doc: dict[str, object]) -> None:
        reply = web.client().post("/login", doc)
        assert reply.status == 400

    def test_guessing_is_limited(self, web: Web) -> None:
        """After five wrong passwords even the right one is refused (429, Retry-After) until
        the window has passed; then it logs in."""
        client = web.client()
        for _ in range(auth.USER_GUESSES):
            assert client.login(USER, "guess").status == 401
        limited = client.login(USER, PASSWORD)
        assert limited.status == 429
        assert "too many failed logins" in limited.error
        assert 1 <= int(limited.header("Retry-After") or 0) <= auth.GUESS_WINDOW_S + 1
        web.clock.advance(auth.GUESS_WINDOW_S + 1)
        assert client.login(USER, PASSWORD).status == 200

    def test_logout_ends_the_session(self, web: Web) -> None:
        client = web.logged_in()
        reply = client.post("/logout")
        assert reply.status == 200
        assert (reply.header("Set-Cookie") or "").startswith(f"{auth.SESSION_COOKIE}=;")
        assert client.get("/api/nodes").status == 401

    def test_sessions_expire(self, web_factory: WebFactory) -> None:
        clock = Clock()
        web = web_factory(session_hours=1.0, clock=clock)
        client = web.logged_in()
        clock.advance(3599)
        assert client.get("/api/nodes").status == 200
        clock.advance(2)
        assert client.get("/api/nodes").status == 401

    def test_a_new_password_ends_the_sessions(self, web: Web) -> None:
        client = web.logged_in()
        assert web.store.set_password(USER, auth.hash_password("another password"))
        assert client.get("/api/nodes").status == 401


class TestCsrf:
    def test_a_post_without_the_token_is_refused(self, web: Web) -> None:
        """Logged in but no X-CSRF-Token: 403, and the session stays (not logged out)."""
        client = web.logged_in()
        token, client.csrf = client.csrf, None
        reply = client.post("/logout")
        assert reply.status == 403
        assert reply.error == "missing or wrong X-CSRF-Token"
        client.csrf = token
        assert client.get("/api/nodes").status == 200

    @pytest.mark.parametrize("token", ["wrong", auth.new_token(), "é" * 43])
    def test_a_wrong_token_is_refused(self, web: Web, token: str) -> None:
        client = web.logged_in()
        reply = client.post("/api/alarms/1/ack", {"note": "x"}, csrf=token)
        assert reply.status == 403

    def test_another_sessions_token_is_refused(self, web: Web) -> None:
        """The token belongs to its session: a second login's token does not fit the first."""
        first, second = web.logged_in(), web.logged_in()
        assert first.csrf != second.csrf
        assert first.post("/logout", csrf=second.csrf).status == 403

    def test_a_cross_site_post_is_refused(self, web: Web) -> None:
        """With the right token but another site's Origin (or Origin null): 403."""
        client = web.logged_in()
        for origin in ("http://evil.example", "null"):
            reply = client.post("/logout", origin=origin)
            assert reply.status == 403
            assert reply.error == "cross-site request refused"
        assert client.get("/api/nodes").status == 200

    def test_a_cross_site_login_is_refused(self, web: Web) -> None:
        reply = web.client().post(
            "/login", {"user": USER, "password": PASSWORD}, origin="http://evil.example"
        )
        assert reply.status == 403

    def test_a_post_without_a_session_is_401(self, web: Web) -> None:
        assert web.client().post("/api/alarms/1/ack", {"note": "x"}).status == 401


class TestReadOnlyDisplay:
    def test_gets_need_no_login(self, web_factory: WebFactory) -> None:
        web = web_factory(auth="none")
        client = web.client()
        for path in [*API_GETS, *PAGES, "/metrics"]:
            reply = client.get(path)
            assert reply.status in (200, 404), (path, reply.status)  # 404: no such node yet
        assert client.get("/").status == 200
        assert client.get("/api/me").json()["read_only"] is True

    @pytest.mark.parametrize("path", ["/login", "/logout", "/api/alarms/1/ack"])
    def test_every_post_is_refused(self, web_factory: WebFactory, path: str) -> None:
        """Even a valid user's login: the display writes nothing, acknowledges nothing."""
        web = web_factory(auth="none")
        reply = web.client().post(path, {"user": USER, "password": PASSWORD, "note": "x"})
        assert reply.status == 403
        assert reply.error == "read-only display (http.auth: none)"
        assert reply.header("Set-Cookie") is None


def test_error_bodies_are_json(web: Web) -> None:
    """A refusal is {"error": ...} as JSON, with the security headers."""
    reply = web.client().get("/api/nodes")
    assert json.loads(reply.body) == {"error": "log in first"}
    assert reply.header("X-Content-Type-Options") == "nosniff"
