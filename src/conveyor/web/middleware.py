"""The ASGI middleware every request passes: security headers, then authentication.

Authentication is a middleware around the whole router, not a decorator on each endpoint, so a
route added later is protected without anyone remembering to protect it. Only the paths in
:data:`PUBLIC_PATHS` and under :data:`PUBLIC_PREFIXES` (the login page and the static files,
which hold no data) answer without credentials; a test enumerates the app's routes to keep it so.
Who the caller is comes from conveyor's own tokens and session cookies (:class:`AuthConfig`) or,
mounted in another application, from that application's ``authenticate`` (:class:`HostAuth`).

Every decision is made on the *routed* path (:func:`route_path`): the path the router will
match, never ``request.url``, which Starlette rebuilds with the ``Host`` header (on older
versions a ``Host: x/static/`` turned it into ``/static//api/jobs``). Mounted under a prefix,
the prefix (``root_path``) is not part of that path, so ``/conveyor/login`` is the login page of
a dashboard mounted at ``/conveyor`` and ``/static/api/jobs`` is the API of one mounted at
``/static``.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import quote, urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.web.hostauth import HostAuth, HostAuthError
from conveyor.web.security import (
    CSRF_HEADER,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    AuthConfig,
    Principal,
    Role,
    csrf_matches,
)
from conveyor.web.templates import ROOT

log = logging.getLogger("conveyor.web")
PUBLIC_PATHS = frozenset({"/login"})
#: Probes for load balancers and orchestrators: answered without a token and without asking
#: who the caller is (a host application's authenticate is not called for them). They say
#: only "up" and "ready or not", never why in detail (see conveyor.web.operations).
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
PUBLIC_PREFIXES = ("/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Unsafe requests a read-only session may still make.
READ_ONLY_ALLOWED = frozenset({"/logout"})
PRINCIPAL_KEY = "conveyor.principal"
#: The one path the metrics token opens (see AuthConfig.metrics_token).
METRICS_PATH = "/metrics"
#: Sent on responses to HTTPS requests only (a plain-HTTP response cannot set it anyway).
HSTS = "max-age=31536000"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def root_of(scope: Scope) -> str:
    """The prefix the dashboard is mounted under ('' at the root), without a trailing slash."""
    return str(scope.get("root_path") or "").rstrip("/")


def route_path(scope: Scope) -> str:
    """The path the router matches: ``scope["path"]`` without the mount prefix.

    Servers differ on whether ``path`` includes ``root_path`` (Starlette's ``Mount`` and recent
    uvicorn do); both are handled, as Starlette's own router does.
    """
    path = str(scope.get("path") or "/")
    root = root_of(scope)
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return path or "/"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def principal_of(conn: HTTPConnection) -> Principal:
    """The caller the auth middleware let through (every non-public endpoint has one)."""
    principal = conn.scope.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # pragma: no cover - the middleware guarantees it
        raise RuntimeError("request reached an endpoint without passing the auth middleware")
    return principal


def error_body(code: str, message: str) -> dict[str, str]:
    """The one shape of every API error: a stable code and a human message."""
    return {"error": code, "message": message}


class SecurityHeadersMiddleware:
    """Adds the CSP and friends to every response, and ``no-store`` to everything not static.

    Job data (params, errors, tracebacks) must not linger in shared or browser caches.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = route_path(scope).startswith("/static/")
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if not static:
                    headers["cache-control"] = "no-store"
                if https:  # TLS here, or at a proxy the server trusts (it set the scheme)
                    headers.setdefault("strict-transport-security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AuthMiddleware:
    """Lets a request through only with a valid bearer token or session cookie.

    It also enforces what the role allows (read-only callers may only read), CSRF on unsafe
    cookie requests, and the size of request bodies announced by ``Content-Length``.
    """

    def __init__(self, app: ASGIApp, *, auth: AuthConfig | HostAuth,
                 max_body_bytes: int) -> None:
        self.app = app
        self.auth = auth
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here: refuse rather than pass unchecked
            return
        conn = HTTPConnection(scope)
        ROOT.set(root_of(scope))
        if not self.auth.enabled and not _loopback_host(conn.headers.get("host", "")):
            # Without auth, a DNS-rebinding page could otherwise drive the dashboard.
            await _json(403, "forbidden_host", "unauthenticated dashboards answer only to "
                        "loopback host names")(scope, receive, send)
            return
        if route_path(scope) in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            principal, problem = await self.identify(conn)
        except HostAuthError as exc:  # fail closed, loudly: the host's setup is broken
            log.error("request refused: %s", exc)
            await _json(500, "internal", "authentication failed on the server (see its "
                        "log)")(scope, receive, send)
            return
        if is_public(route_path(scope)):
            scope[PRINCIPAL_KEY] = principal
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(conn, principal, problem)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)

    async def identify(self, conn: HTTPConnection) -> tuple[Principal | None, str]:
        """The caller, or None with the reason it was not recognised."""
        if isinstance(self.auth, HostAuth):
            principal = await self.auth.identify(conn)
            return principal, "" if principal else "log in to the application first"
        if not self.auth.enabled:
            return Principal(Role.ADMIN, "open"), ""
        header = conn.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                return None, "the Authorization header must be 'Bearer <token>'"
            role = self.auth.role_of_token(value.strip())
            if role is None and route_path(conn.scope) == METRICS_PATH and \
                    self.auth.is_metrics_token(value.strip()):
                return Principal(Role.READ, "metrics"), ""
            if role is None:
                return None, "the bearer token is not valid"
            return Principal(role, "bearer"), ""
        session = self._session(conn)
        if session is None:
            return None, "log in or send 'Authorization: Bearer <token>'"
        return session, ""

    def _session(self, conn: HTTPConnection) -> Principal | None:
        value = conn.cookies.get(SESSION_COOKIE)
        return self.auth.open_session(value) if value and isinstance(self.auth, AuthConfig) \
            else None

    def refusal(self, conn: HTTPConnection, principal: Principal | None,
                problem: str) -> Response | None:
        """The response that stops this request, or None to let it through."""
        path, method = route_path(conn.scope), conn.scope["method"]
        if principal is None:
            return _unauthenticated(conn, problem, self.auth)
        if method not in SAFE_METHODS:
            if not principal.can_write and path not in READ_ONLY_ALLOWED:
                who = "this user" if principal.via == "host" else "this token"
                return _json(403, "read_only", f"{who} is read-only: it may only GET")
            if principal.via in ("session", "open", "host"):
                why = _cross_site(conn.headers)
                if why is None and principal.via == "open":
                    why = _foreign_origin(conn.headers)
                if why is None and principal.via != "open" and principal.csrf_token and \
                        not csrf_matches(principal, conn.headers.get(CSRF_HEADER)):
                    why = "missing or wrong X-CSRF-Token header"
                if why is not None:
                    return _json(403, "csrf", f"request refused: {why}")
        length = conn.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return _json(413, "payload_too_large",
                         f"request bodies are limited to {self.max_body_bytes} bytes")
        return None


def _json(status: int, code: str, message: str) -> Response:
    return JSONResponse(error_body(code, message), status_code=status)


def _unauthenticated(conn: HTTPConnection, problem: str,
                     auth: AuthConfig | HostAuth) -> Response:
    """APIs get a 401; a browser asking for a page is sent to the login page instead.

    That is conveyor's own login page, or the host application's (``HostAuth.login_url``, with
    ``next`` the whole path, mount prefix included); a host without one answers 401.
    """
    path = route_path(conn.scope)
    login = f"{root_of(conn.scope)}/login" if isinstance(auth, AuthConfig) else auth.login_url
    if login and not path.startswith("/api/") and path != METRICS_PATH and \
            conn.scope["method"] in ("GET", "HEAD"):
        query = conn.scope.get("query_string", b"").decode("latin-1")
        target = path + (f"?{query}" if query else "")
        if isinstance(auth, HostAuth):
            target = root_of(conn.scope) + target
        return RedirectResponse(f"{login}?next={quote(target, safe='')}", status_code=303)
    response = _json(401, "unauthorized", f"authentication required: {problem}")
    response.headers["www-authenticate"] = 'Bearer realm="conveyor"'
    return response


def _cross_site(headers: Headers) -> str | None:
    """Why an unsafe browser request looks cross-site, or None.

    ``Sec-Fetch-Site`` is set by the browser itself (a page cannot forge it) and survives
    reverse proxies that rewrite ``Host``, which an ``Origin`` comparison would not.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"it came from another site (Sec-Fetch-Site: {site})"
    return None


def _foreign_origin(headers: Headers) -> str | None:
    """Why an unsafe request's ``Origin`` is not this server's own, or None.

    Without authentication there is no CSRF token, so this (with ``Sec-Fetch-Site``) is what
    keeps another page in the operator's browser from driving the dashboard; ``Origin`` is
    sent with every cross-origin ``POST``, also by browsers too old for ``Sec-Fetch-Site``.
    """
    origin = headers.get("origin")
    if origin is None:
        return None
    host = headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        return f"it came from another origin (Origin: {origin[:100]})"
    return None


def _loopback_host(host_header: str) -> bool:
    host = urlsplit(f"//{host_header}").hostname or ""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
