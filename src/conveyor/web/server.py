"""``serve()``: run the dashboard and API under uvicorn, safely by default.

Defaults, and why: bind to loopback (a dashboard is reachable from elsewhere only when someone
asks for it), authentication always on (a token from ``CONVEYOR_TOKEN`` or a fresh one printed
at start-up), and no way to turn it off except an explicitly named ``insecure_no_auth`` that is
refused on anything but loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import sys
import threading
import webbrowser
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import unquote_plus

import uvicorn

from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError
from conveyor.web.asgi import create_app
from conveyor.web.security import AuthConfig, generate_token

TOKEN_ENV = "CONVEYOR_TOKEN"  # noqa: S105 - the name of the variable, not a secret
READ_TOKEN_ENV = "CONVEYOR_READ_TOKEN"  # noqa: S105
METRICS_TOKEN_ENV = "CONVEYOR_METRICS_TOKEN"  # noqa: S105
#: Query parameters whose values never reach a log (matched against the decoded name).
_SECRET_NAME = re.compile(r"token|secret|passw|key|session|auth")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, allow_remote_http: bool) -> None:
    """Refuse to serve plain HTTP off loopback unless the caller said so in as many words."""
    if is_loopback(host) or allow_remote_http:
        return
    raise ConfigurationError(
        f"refusing to serve plain HTTP on {host}: tokens and session cookies would cross the "
        "network unencrypted; keep the dashboard on loopback behind a TLS proxy, or pass "
        "--allow-remote-http (allow_remote_http=True) to accept that")


def proxy_options(trusted_proxies: Sequence[str]) -> dict[str, Any]:
    """uvicorn's settings to believe ``X-Forwarded-Proto``/``-For`` from these addresses only.

    Without any, uvicorn's default stands: only a proxy on 127.0.0.1 is believed.
    """
    if not trusted_proxies:
        return {}
    for address in trusted_proxies:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ConfigurationError(f"trusted proxy {address[:80]!r} is not an IP address or "
                                     "network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(trusted_proxies)}


def auth_config(host: str, token: str | None, read_token: str | None,
                insecure_no_auth: bool) -> tuple[AuthConfig, bool]:
    """The auth settings for a server on ``host``, and whether the token was generated."""
    if insecure_no_auth:
        if not is_loopback(host):
            raise ConfigurationError(
                f"refusing to serve without authentication on {host}: insecure_no_auth is "
                "only allowed on a loopback address (127.0.0.1, ::1, localhost)")
        if token or read_token:
            raise ConfigurationError("insecure_no_auth cannot be combined with a token")
        return AuthConfig(token=None), False
    token = token or os.environ.get(TOKEN_ENV) or None
    read_token = read_token or os.environ.get(READ_TOKEN_ENV) or None
    metrics_token = os.environ.get(METRICS_TOKEN_ENV) or None
    generated = token is None
    try:
        return AuthConfig(token=token or generate_token(), read_token=read_token,
                          metrics_token=metrics_token), generated
    except ValueError as exc:
        raise ConfigurationError(f"dashboard tokens: {exc}") from None


def redact_query(target: str) -> str:
    """``target`` (a path and query) with the value of every secret-bearing parameter hidden.

    Parameter names are compared as the server reads them, percent- and plus-decoded and
    case-folded, so ``?%74oken=`` or ``?TOKEN=`` (which a client may send, and which
    ``/login`` may one day accept) is redacted like ``?token=``.
    """
    path, mark, query = target.partition("?")
    if not mark:
        return target
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        secret = equals and _SECRET_NAME.search(unquote_plus(name).casefold())
        pairs.append(f"{name}=[redacted]" if secret else pair)
    return f"{path}?{'&'.join(pairs)}"


class _RedactTokens(logging.Filter):
    """Keeps ``/login?token=...`` (however spelled) out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def announce(base_url: str, auth: AuthConfig, generated: bool, out: TextIO) -> str:
    """Print how to reach the dashboard; returns the URL a browser should open."""
    if not auth.enabled:
        print(f"conveyor dashboard on {base_url}/ — WITHOUT authentication (loopback only)",
              file=out)
        return f"{base_url}/"
    if generated:
        login = f"{base_url}/login?token={auth.token}"
        print(f"conveyor dashboard on {base_url}/\n"
              f"  API token (generated; set {TOKEN_ENV} to choose one): {auth.token}\n"
              f"  open in a browser to log in: {login}", file=out)
        return login
    print(f"conveyor dashboard on {base_url}/ — log in with the token in {TOKEN_ENV}",
          file=out)
    return f"{base_url}/login"


def serve(app: Conveyor, *, host: str = "127.0.0.1", port: int = 8080,
          token: str | None = None, read_token: str | None = None,
          open_browser: bool = False, insecure_no_auth: bool = False,
          allow_remote_http: bool = False, trusted_proxies: Sequence[str] = (),
          log_level: str = "info", out: TextIO | None = None,
          uvicorn_options: dict[str, Any] | None = None) -> None:
    """Serve the dashboard and the HTTP API until interrupted (Ctrl-C / SIGTERM).

    Raises :class:`~conveyor.errors.ConfigurationError` for an unsafe or invalid setup
    (no auth or plain HTTP on a public address without saying so, a too-short token, a
    malformed proxy address) before binding anything.
    """
    auth, generated = auth_config(host, token, read_token, insecure_no_auth)
    check_bind(host, allow_remote_http)
    proxies = proxy_options(trusted_proxies)
    out = out or sys.stdout
    app.store  # noqa: B018 - open the store now: a bad URL fails here, not on the first request
    stopping = threading.Event()
    web = create_app(app, auth=auth, stopping=stopping)
    shown_host = f"[{host}]" if ":" in host else host
    login_url = announce(f"http://{shown_host}:{port}", auth, generated, out)
    if not is_loopback(host):
        print(f"WARNING: serving plain, unencrypted HTTP on {shown_host}:{port}: anyone on the "
              "network path can read the token and the session cookies", file=out)
    logging.getLogger("uvicorn.access").addFilter(_RedactTokens())
    config = uvicorn.Config(web, host=host, port=port, log_level=log_level,
                            server_header=False, timeout_graceful_shutdown=3,
                            **{**proxies, **(uvicorn_options or {})})
    server = _Server(config, stopping)
    if open_browser:
        threading.Thread(target=_open_when_started, args=(server, login_url),
                         daemon=True, name="conveyor-open-browser").start()
    server.run()


class _Server(uvicorn.Server):
    """uvicorn, telling the event streams to end as soon as a shutdown begins."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.stopping.set()
        super().handle_exit(sig, frame)


def _open_when_started(server: Any, url: str) -> None:
    for _ in range(200):
        if server.started:
            webbrowser.open(url)
            return
        threading.Event().wait(0.05)
