"""Who may use the web layer: bearer tokens, signed session cookies, CSRF tokens, headers.

The design, and why:

- **Tokens, not passwords.** An operator starts the dashboard with a token (``CONVEYOR_TOKEN``, or
  one generated at start-up) and optionally a read-only token (``CONVEYOR_READ_TOKEN``). API
  clients send it as ``Authorization: Bearer``; tokens are compared with
  :func:`hmac.compare_digest` so that response timing says nothing about how much of a guess
  was right.
- **The browser never holds the token.** ``/login`` exchanges it for a session cookie whose value
  is a random session id, the role, the issue time and an HMAC of those under a per-process
  secret. A stolen cookie expires and dies with the process; the token itself is never stored
  in the browser, so it cannot leak from there.
- **CSRF.** The cookie is ``SameSite=Strict`` and every unsafe request made with it must also
  carry ``X-CSRF-Token``: an HMAC of the session id that the page embeds in a meta tag. A page on
  another site can neither read that tag nor set a custom header without a CORS preflight, which
  we never grant. Bearer requests need no CSRF token: a browser never attaches one by itself.
- **Logout ends the session here, not only in the browser.** The cookie is self-contained, so
  a copy taken before ``/logout`` would otherwise keep working until it expires. Each process
  keeps the ids of the sessions logged out of, each until the moment it would have expired
  anyway (so the set is bounded by the logouts of one session lifetime, and capped). Sessions
  are per process already (the secret is), so a per-process set is complete: a dashboard run
  as several processes behind a balancer needs sticky sessions, and a restart ends them all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum

SESSION_COOKIE = "conveyor_session"
CSRF_HEADER = "x-csrf-token"
#: How long a browser session lasts before the operator must log in again.
SESSION_MAX_AGE = 12 * 3600
_COOKIE_VERSION = "v1"
#: Most logged-out sessions remembered at once; past it the one closest to expiring is dropped.
MAX_ENDED_SESSIONS = 100_000


class Role(StrEnum):
    """What a caller may do: ``admin`` everything, ``read`` only safe (GET/HEAD) requests."""

    ADMIN = "admin"
    READ = "read"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, as the auth middleware found it.

    ``csrf_token``, when set, is what its unsafe requests must carry: cookie sessions and host
    users recognised by a cookie have one; bearer callers need none.
    """

    role: Role
    via: str  # "bearer", "session", "host" (the mounting app's user) or "open" (auth disabled)
    session_id: str | None = None
    csrf_token: str | None = None
    expires: float | None = None  # when a session's cookie expires (sessions only)
    user: str | None = None  # who the host application says it is (host users only)

    @property
    def can_write(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class AuthConfig:
    """The tokens and the server secret of one dashboard process.

    ``token`` None means authentication is disabled (the ``insecure_no_auth`` mode); the
    secret still signs session cookies so that CSRF protection keeps working.
    """

    token: str | None
    read_token: str | None = None
    #: Accepted on ``/metrics`` only (as a bearer token), for a Prometheus scraper that should
    #: read nothing else; the admin and read-only tokens are accepted there too.
    metrics_token: str | None = field(default=None, repr=False)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    session_max_age: int = SESSION_MAX_AGE
    #: Logged-out session id -> when its cookie expires anyway (mutable: frozen means the
    #: tokens and secret cannot change, not that nobody may log out).
    _ended: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (("token", self.token), ("read_token", self.read_token),
                            ("metrics_token", self.metrics_token)):
            if value is not None and len(value) < 16:
                raise ValueError(f"{name} must be at least 16 characters long")
        if self.read_token is not None and self.token is None:
            raise ValueError("a read-only token needs authentication on (a token)")
        if self.read_token is not None and self.token is not None and \
                hmac.compare_digest(self.read_token, self.token):
            raise ValueError("the read-only token must differ from the token")
        if self.metrics_token is not None and self.token is None:
            raise ValueError("a metrics token needs authentication on (a token)")

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def role_of_token(self, candidate: str) -> Role | None:
        """The role a presented token grants, compared in constant time; None if it is wrong."""
        given = candidate.encode("utf-8", "surrogatepass")
        role = None
        # Both comparisons always run, so timing does not reveal which token was close.
        if self.token is not None and hmac.compare_digest(given, self.token.encode()):
            role = Role.ADMIN
        if self.read_token is not None and hmac.compare_digest(given, self.read_token.encode()):
            role = role or Role.READ
        return role

    def is_metrics_token(self, candidate: str) -> bool:
        """Whether ``candidate`` is the metrics token (compared in constant time)."""
        return self.metrics_token is not None and hmac.compare_digest(
            candidate.encode("utf-8", "surrogatepass"), self.metrics_token.encode())

    # -- sessions ----------------------------------------------------------------------------
    def _sign(self, text: str) -> str:
        return hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()

    def new_session(self, role: Role, *, now: float | None = None) -> str:
        """A cookie value for a fresh session: id, role, issue time, signature."""
        issued = int(time.time() if now is None else now)
        body = f"{_COOKIE_VERSION}.{secrets.token_urlsafe(18)}.{role.value}.{issued}"
        return f"{body}.{self._sign(body)}"

    def open_session(self, value: str, *, now: float | None = None) -> Principal | None:
        """The principal of a session cookie, or None when it is forged, foreign or expired."""
        parts = value.split(".")
        if len(parts) != 5 or parts[0] != _COOKIE_VERSION:
            return None
        body, signature = ".".join(parts[:4]), parts[4]
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        _, session_id, role_name, issued_text = parts[:4]
        try:
            role, issued = Role(role_name), int(issued_text)
        except ValueError:
            return None
        current = time.time() if now is None else now
        if issued > current + 60 or current >= issued + self.session_max_age:
            return None
        if role is Role.READ and self.read_token is None:
            return None  # the read-only token was withdrawn: so are its sessions
        with self._lock:
            if session_id in self._ended:
                return None  # logged out: copies of the cookie end with it
        return Principal(role, "session", session_id, self.csrf_token(session_id),
                         expires=issued + self.session_max_age)

    def end_session(self, principal: Principal, *, now: float | None = None) -> None:
        """Log a session out: its cookie, and every copy of it, is refused from now on."""
        if principal.session_id is None:
            return
        current = time.time() if now is None else now
        with self._lock:
            for session_id, expires in list(self._ended.items()):
                if expires <= current:
                    del self._ended[session_id]
            if len(self._ended) >= MAX_ENDED_SESSIONS:
                del self._ended[min(self._ended, key=self._ended.__getitem__)]
            self._ended[principal.session_id] = principal.expires or current + \
                self.session_max_age

    def csrf_token(self, session_id: str) -> str:
        """The CSRF token of a session: derived, so the server stores no session table."""
        return self._sign(f"csrf:{session_id}")



def csrf_matches(principal: Principal, presented: str | None) -> bool:
    """Whether an unsafe request carries its caller's CSRF token (compared in constant time)."""
    if principal.csrf_token is None or not presented:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"),
                               principal.csrf_token.encode())


#: The page policy: our own origin only, no inline script or style, never framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)

#: Sent on every response (API, pages, static files, errors alike).
SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


def generate_token() -> str:
    """A fresh admin token for a dashboard started without one."""
    return secrets.token_urlsafe(32)
