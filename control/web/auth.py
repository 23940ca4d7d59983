"""Logins: scrypt password hashes, session tokens, CSRF checks and a limit on password guesses.

Only the sha256 of a session token is stored (a copied database opens no session); the CSRF
token is per session and travels in a header the page's script sets, which another site's form
or script cannot. Everything here is stdlib (hashlib.scrypt, secrets, hmac): no new dependency
on a utility's LAN. Callers pass the clock, so tests need not wait for a lockout to end.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from control.store import Store
from control.store.records import Session
from daemon.errors import CoronaError

SCHEME: Final = "scrypt"
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
"""n=2^14, r=8: 16 MiB and about 50 ms per check on a desktop core (the parameters OWASP names
for scrypt); the parameters are stored in each hash, so they can be raised later."""
SCRYPT_MAX_N: Final = 2**20
"""Parameters read back from the database are bounded: a tampered row must not cost a GiB."""
SCRYPT_MAXMEM: Final = 256 * 1024 * 1024
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
PASSWORD_MIN_CHARS: Final = 8
PASSWORD_MAX_CHARS: Final = 1024
"""Longer is no safer, and the hash of a megabyte would be the attacker's cheap CPU burner."""
USER_MAX_CHARS: Final = 64

SESSION_COOKIE: Final = "corona_session"
TOKEN_BYTES: Final = 32
"""256 bits from secrets: a session token or CSRF token cannot be guessed."""
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")

GUESS_WINDOW_S: Final = 300.0
USER_GUESSES: Final = 5
"""Failed logins per user name within GUESS_WINDOW_S before that name is refused for the rest
of the window: one password in 5 tries per 5 minutes is 1,440 a day, against a search space
of millions for even a weak 8-character password."""
CLIENT_GUESSES: Final = 20
"""Failed logins per client address within the window (many names tried from one address)."""
TRACKED_KEYS: Final = 10_000
"""Names and addresses remembered at most, the oldest forgotten first: memory stays bounded
whatever an attacker sends."""


class UserError(CoronaError):
    """A user name or password is not acceptable; the message says why."""


def check_user_name(name: str) -> str:
    """name if it can be a login: 1-64 printable characters, no spaces at either end."""
    if not 1 <= len(name) <= USER_MAX_CHARS:
        raise UserError(f"user name: 1-{USER_MAX_CHARS} characters, got {len(name)}")
    if name != name.strip():
        raise UserError("user name: no spaces at the start or end")
    for char in name:
        # isprintable refuses controls, format characters (bidi, zero-width), surrogates,
        # unassigned code points and every space but " ": a name shown as "acked by" must look
        # like what it is. Combining marks would stack onto the text before them.
        if not char.isprintable() or unicodedata.category(char).startswith("M"):
            raise UserError(f"user name: U+{ord(char):04X} is not a printable character")
    return name


def check_password(password: str) -> str:
    """password if it can be set: 8-1024 characters of valid Unicode."""
    if len(password) < PASSWORD_MIN_CHARS:
        raise UserError(f"password: at least {PASSWORD_MIN_CHARS} characters")
    if len(password) > PASSWORD_MAX_CHARS:
        raise UserError(f"password: at most {PASSWORD_MAX_CHARS} characters")
    if not _encodable(password):
        raise UserError("password: not valid Unicode text")
    return password


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from a JSON "\ud800"
        return False
    return True


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$N$R$P$SALT$KEY` (base64): a new random salt each time."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password.encode("utf-8"), salt, n, r, p)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=KEY_BYTES)


def verify_password(password: str, stored: str) -> bool:
    """Whether password matches the stored hash; False for a hash this code cannot read."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME or not _encodable(password):
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5])
    except ValueError:  # binascii.Error is a ValueError
        return False
    if not (2 <= n <= SCRYPT_MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    try:
        candidate = _scrypt(password.encode("utf-8"), salt, n, r, p)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(candidate, key)


@functools.cache
def dummy_hash() -> str:
    """A hash to check unknown user names against, so they take as long as known ones (the
    time of the answer must not tell which names exist). Made once, at the first need."""
    return hash_password(secrets.token_urlsafe(TOKEN_BYTES))


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a token from a request with the stored one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


class Sessions:
    """Session tokens in the store: start one at login, find it per request, end it at logout."""

    def __init__(self, store: Store, hours: float) -> None:
        self._store = store
        self.lifetime_s = hours * 3600.0

    def start(self, user: str, now: float) -> tuple[str, Session]:
        token, csrf = new_token(), new_token()
        expires = now + self.lifetime_s
        self._store.create_session(token_hash(token), user, csrf, now, expires)
        return token, Session(user, csrf, expires)

    def find(self, token: str | None, now: float) -> Session | None:
        if token is None or not _TOKEN.fullmatch(token):
            return None
        return self._store.session(token_hash(token), now)

    def end(self, token: str | None) -> None:
        if token is not None and _TOKEN.fullmatch(token):
            self._store.delete_session(token_hash(token))


def session_cookie(token: str, max_age_s: float, *, secure: bool) -> str:
    """The Set-Cookie value: never readable by script, never sent by another site's request."""
    attrs = [f"{SESSION_COOKIE}={token}", "HttpOnly", "SameSite=Strict", "Path=/"]
    attrs.append(f"Max-Age={max(int(max_age_s), 0)}")
    if secure:
        attrs.append("Secure")
    return "; ".join(attrs)


def cleared_cookie(*, secure: bool) -> str:
    return session_cookie("", 0, secure=secure)


def cookie_token(header: str | None) -> str | None:
    """The session token from a Cookie header, None when absent or not a token's shape."""
    if not header:
        return None
    # By hand rather than http.cookies: SimpleCookie drops every cookie after one it cannot
    # parse, so another application's odd cookie on the same host would log the user out.
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == SESSION_COOKIE and _TOKEN.fullmatch(value):
            return value
    return None


def host_allowed(host: str | None, names: Collection[str]) -> bool:
    """Whether a request's Host is an IP address, localhost, or one of the configured names.

    A page on another site can make a browser send requests to a LAN address under that site's
    own name (DNS rebinding); naming the host is what it cannot fake.
    """
    if not host:
        return False
    try:
        hostname = urlsplit(f"//{host.strip()}").hostname
    except ValueError:
        return False
    if hostname is None:
        return False
    if hostname == "localhost" or hostname in {n.lower() for n in names}:
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """Whether a browser's POST comes from our own pages.

    Browsers send Origin on every POST from script; Referer is the fallback. A request with
    neither is not a browser's cross-site request (curl, a script): the CSRF token and the
    session still apply. Origin "null" (a sandboxed frame, a page's form under no-referrer)
    is refused: it could be anyone's.
    """
    source = origin if origin is not None else referer
    if source is None:
        return True
    if host is None or source == "null":
        return False
    try:
        netloc = urlsplit(source).netloc
    except ValueError:
        return False
    return netloc.lower() == host.strip().lower()


@dataclass
class _Failures:
    times: deque[float]


class LoginLimiter:
    """Counts failed logins per user name and per client address in a sliding window.

    In memory and per process: a restart forgives, which is fine for a control room's few
    users; what it stops is a script trying thousands of passwords a minute. A name under
    attack is locked for everyone until the window passes: the price of stopping a guesser
    who rotates addresses.
    """

    def __init__(
        self,
        *,
        window_s: float = GUESS_WINDOW_S,
        user_guesses: int = USER_GUESSES,
        client_guesses: int = CLIENT_GUESSES,
    ) -> None:
        self.window_s = window_s
        self._limits = {"user": user_guesses, "client": client_guesses}
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, str], _Failures] = OrderedDict()

    def retry_after(self, user: str, client: str, now: float) -> float | None:
        """Seconds until this user and client may try again; None when they may now."""
        waits = []
        with self._lock:
            for key in (("user", user), ("client", client)):
                failures = self._recent(key, now)
                if failures is not None and len(failures.times) >= self._limits[key[0]]:
                    waits.append(failures.times[0] + self.window_s - now)
        return max(waits) if waits else None

    def failed(self, user: str, client: str, now: float) -> None:
        with self._lock:
            for key in (("user", user), ("client", client)):
                failures = self._recent(key, now) or _Failures(deque())
                failures.times.append(now)
                self._seen[key] = failures
                self._seen.move_to_end(key)
            while len(self._seen) > TRACKED_KEYS:
                self._seen.popitem(last=False)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._seen.pop(("user", user), None)

    def _recent(self, key: tuple[str, str], now: float) -> _Failures | None:
        failures = self._seen.get(key)
        if failures is None:
            return None
        while failures.times and failures.times[0] <= now - self.window_s:
            failures.times.popleft()
        if not failures.times:
            del self._seen[key]
            return None
        return failures
