"""Attacks from outside: hostile Host headers, a prefix mount, logout, remote binds, open mode.

Each test here is one of the defects an outside probe found (issue 8), kept fixed.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from conveyor import ConfigurationError, Conveyor
from conveyor.web import AuthConfig, create_app
from conveyor.web.middleware import route_path
from conveyor.web.security import SESSION_COOKIE
from conveyor.web.server import _RedactTokens, serve

from .cli_helpers import run_cli
from .web_helpers import BEARER, READ_TOKEN, TOKEN, AsgiClient, make_web, typed_app

SECRET = "queue-only-the-owner-may-see"
HOSTILE_HOSTS = ["x/static/", "x/login#", "x/login?", "x/static/..", "evil.example/static/x",
                 "x/login", "localhost/static/"]


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return typed_app(make_app)


@pytest.fixture
def job_id(app: Conveyor) -> str:
    return app.enqueue("test.add", {"a": 1}, queue=SECRET).id


def protected_requests(job_id: str) -> list[tuple[str, str]]:
    return [("GET", "/"), ("GET", f"/jobs/{job_id}"), ("GET", "/api/jobs"),
            ("GET", f"/api/jobs/{job_id}"), ("GET", f"/api/jobs/{job_id}/history"),
            ("GET", "/api/counts"), ("GET", "/api/job-types"), ("GET", "/api/openapi.json"),
            ("GET", "/api/events"), ("POST", "/api/jobs"), ("POST", f"/api/jobs/{job_id}/cancel"),
            ("POST", "/logout")]


def naive_url(self: HTTPConnection) -> URL:
    """``request.url`` as Starlette 1.0-1.6 built it: the Host header pasted before the path."""
    host = dict(self.scope["headers"]).get(b"host", b"").decode("latin-1")
    return URL(f"http://{host}{self.scope['path']}")


# -- 1. the routed path decides, whatever Host says ------------------------------------------------
@pytest.mark.parametrize("naive", [False, True], ids=["starlette", "host-pasted-url"])
def test_hostile_host_headers_reach_nothing(app: Conveyor, job_id: str, naive: bool,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    if naive:  # what the old Starlette versions did: the middleware must not depend on it
        monkeypatch.setattr(HTTPConnection, "url", property(naive_url))
    client = AsgiClient(make_web(app))
    try:
        for host in HOSTILE_HOSTS:
            for method, path in protected_requests(job_id):
                response = client.request(method, path, headers={"host": host}, json={})
                assert response.status_code in (401, 303), (host, method, path)
                assert SECRET not in response.text
                if response.status_code == 303:
                    assert response.headers["location"].startswith("/login?next=")
    finally:
        client.close()
    assert app.get(job_id).state.value == "pending"


def test_route_path_strips_only_the_mount_prefix() -> None:
    assert route_path({"path": "/conveyor/login", "root_path": "/conveyor"}) == "/login"
    assert route_path({"path": "/conveyor", "root_path": "/conveyor"}) == "/"
    assert route_path({"path": "/login", "root_path": "/conveyor"}) == "/login"  # stripped
    assert route_path({"path": "/conveyorx/login", "root_path": "/conveyor"}) == \
        "/conveyorx/login"
    assert route_path({"path": "/static/api/jobs", "root_path": "/static"}) == "/api/jobs"


# -- 1. mounted under a prefix ---------------------------------------------------------------------
def host_app(web: Any, prefix: str) -> Starlette:
    """Another application with conveyor mounted at ``prefix`` and its own /login."""
    async def own_login(request: Any) -> PlainTextResponse:
        return PlainTextResponse("the host application's login")

    return Starlette(routes=[Route("/login", own_login), Mount(prefix, app=web)])


@pytest.fixture
def mounted(app: Conveyor) -> Iterator[AsgiClient]:
    client = AsgiClient(host_app(make_web(app), "/conveyor"))
    yield client
    client.close()


def csrf_of(page: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]*)">', page)
    assert match
    return match.group(1)


def test_a_dashboard_mounted_under_a_prefix_works(mounted: AsgiClient, job_id: str) -> None:
    first = mounted.get("/conveyor/jobs/" + job_id)
    assert first.status_code == 303
    assert first.headers["location"] == f"/conveyor/login?next=%2Fjobs%2F{job_id}"
    form = mounted.get("/conveyor/login")
    assert form.status_code == 200
    assert 'action="/conveyor/login"' in form.text
    for asset in re.findall(r'(?:href|src)="(/conveyor/static/[^"?]+)', form.text):
        assert mounted.get(asset).status_code == 200
    login = mounted.post("/conveyor/login", data={"token": TOKEN, "next": f"/jobs/{job_id}"})
    assert login.status_code == 303
    assert login.headers["location"] == f"/conveyor/jobs/{job_id}"
    assert "Path=/conveyor" in login.headers["set-cookie"]
    page = mounted.get("/conveyor/")
    assert page.status_code == 200
    assert '<meta name="conveyor-root" content="/conveyor">' in page.text
    assert f'href="/conveyor/jobs/{job_id}"' in page.text
    assert 'href="/conveyor/static/dashboard.js' not in page.text  # a script, not a link
    assert 'src="/conveyor/static/dashboard.js' in page.text
    assert not re.search(r'(?:href|src|action)="/(?!conveyor)', page.text)
    created = mounted.post("/conveyor/api/jobs", headers=BEARER,
                           json={"job_type": "test.add", "params": {"a": 2}})
    assert created.headers["location"] == f"/conveyor/api/jobs/{created.json()['id']}"
    cancel = mounted.post(f"/conveyor/api/jobs/{job_id}/cancel",
                          headers={"x-csrf-token": csrf_of(page.text)})
    assert cancel.status_code == 200
    logout = mounted.post("/conveyor/logout", headers={"x-csrf-token": csrf_of(page.text)})
    assert logout.headers["location"] == "/conveyor/login"
    assert mounted.get("/conveyor/").status_code == 303


def test_a_dashboard_mounted_at_static_is_not_public(app: Conveyor, job_id: str) -> None:
    client = AsgiClient(host_app(make_web(app), "/static"))
    try:
        assert client.get("/static/api/jobs").status_code == 401
        assert client.get(f"/static/api/jobs/{job_id}").status_code == 401
        home = client.get("/static/")
        assert home.status_code == 303
        assert home.headers["location"] == "/static/login?next=%2F"
        assert client.get("/static/static/dashboard.css").status_code == 200
        assert client.get("/static/login").status_code == 200
    finally:
        client.close()


# -- 4. logout ends the session on the server ------------------------------------------------------
def test_a_cookie_copied_before_logout_is_refused_after_it(app: Conveyor) -> None:
    web = make_web(app)
    browser, thief, other = AsgiClient(web), AsgiClient(web), AsgiClient(web)
    try:
        assert browser.get(f"/login?token={TOKEN}").status_code == 303
        assert other.get(f"/login?token={TOKEN}").status_code == 303
        stolen = browser.cookies[SESSION_COOKIE]
        thief.cookies.set(SESSION_COOKIE, stolen)
        assert thief.get("/api/counts").status_code == 200
        csrf = csrf_of(browser.get("/").text)
        assert browser.post("/logout", headers={"x-csrf-token": csrf}).status_code == 303
        assert thief.get("/api/counts").status_code == 401
        assert thief.get("/").status_code == 303
        assert other.get("/api/counts").status_code == 200  # only that session ended
    finally:
        for client in (browser, thief, other):
            client.close()


def test_ended_sessions_are_forgotten_once_they_would_have_expired() -> None:
    auth = AuthConfig(token=TOKEN)
    from conveyor.web.security import Role

    old = auth.open_session(auth.new_session(Role.ADMIN, now=1000.0), now=1001.0)
    assert old is not None
    auth.end_session(old, now=1002.0)
    later = auth.open_session(auth.new_session(Role.ADMIN, now=1000.0 + auth.session_max_age),
                              now=1001.0 + auth.session_max_age)
    assert later is not None
    auth.end_session(later, now=1002.0 + auth.session_max_age)
    assert list(auth._ended) == [later.session_id]  # the expired entry was dropped


# -- 25. a token check must compare every character ------------------------------------------------
def same_length_wrong(token: str) -> list[str]:
    return [token[:-1] + ("b" if token[-1] != "b" else "c"), "x" + token[1:],
            token[: len(token) // 2] + "z" + token[len(token) // 2 + 1:], "q" * len(token)]


def test_wrong_tokens_of_the_right_length_are_refused(app: Conveyor) -> None:
    client = AsgiClient(make_web(app))
    try:
        for token in (TOKEN, READ_TOKEN):
            for wrong in same_length_wrong(token):
                assert len(wrong) == len(token)
                bearer = client.get("/api/jobs", headers={"authorization": f"Bearer {wrong}"})
                assert bearer.status_code == 401
                login = client.post("/login", data={"token": wrong})
                assert login.status_code == 401
                assert "set-cookie" not in login.headers
                assert client.get(f"/login?token={wrong}").status_code == 401
    finally:
        client.close()


def test_a_read_token_of_the_admin_tokens_length_grants_only_reading(app: Conveyor,
                                                                     job_id: str) -> None:
    admin, reader = "A" * 32, "B" * 32
    client = AsgiClient(make_web(app, auth=AuthConfig(token=admin, read_token=reader)))
    try:
        read = {"authorization": f"Bearer {reader}"}
        assert client.get("/api/jobs", headers=read).status_code == 200
        assert client.post(f"/api/jobs/{job_id}/cancel", headers=read).status_code == 403
        assert client.post(f"/api/jobs/{job_id}/cancel",
                           headers={"authorization": f"Bearer {admin}"}).status_code == 200
    finally:
        client.close()


# -- 5. plain HTTP off loopback only when asked; HSTS over HTTPS -----------------------------------
@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> list[uvicorn.Config]:
    seen: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: seen.append(self.config))
    monkeypatch.setenv("CONVEYOR_TOKEN", TOKEN)
    return seen


def test_a_remote_bind_needs_the_unencrypted_option(app: Conveyor,
                                                    no_run: list[uvicorn.Config]) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.4"):
        with pytest.raises(ConfigurationError, match=r"plain HTTP.*--allow-remote-http"):
            serve(app, host=host, out=io.StringIO())
    assert no_run == []
    out = io.StringIO()
    serve(app, host="0.0.0.0", allow_remote_http=True, out=out)
    assert no_run[0].host == "0.0.0.0"
    assert "WARNING: serving plain, unencrypted HTTP" in out.getvalue()
    quiet = io.StringIO()
    serve(app, host="127.0.0.1", out=quiet)
    assert "WARNING" not in quiet.getvalue()


def test_trusted_proxies_are_checked_and_passed_to_uvicorn(
        app: Conveyor, no_run: list[uvicorn.Config]) -> None:
    serve(app, trusted_proxies=["10.0.0.5", "10.1.0.0/16"], out=io.StringIO())
    assert no_run[0].forwarded_allow_ips == "10.0.0.5,10.1.0.0/16"
    with pytest.raises(ConfigurationError, match="not an IP address"):
        serve(app, trusted_proxies=["proxy.example"], out=io.StringIO())


def test_the_cli_refuses_a_remote_bind_in_one_line(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    result = run_cli("--store", url, "dashboard", "--host", "0.0.0.0",
                     env={"CONVEYOR_TOKEN": TOKEN})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "plain HTTP" in lines[0]
    assert "--allow-remote-http" in lines[0]
    assert not (tmp_path / "jobs.db").exists()  # refused before the store was opened
    bad = run_cli("--store", url, "dashboard", "--trusted-proxy", "not-an-ip",
                  env={"CONVEYOR_TOKEN": TOKEN})
    assert bad.exit_code == 2
    assert len(bad.stderr.strip().splitlines()) == 1


def test_hsts_only_for_https_from_a_trusted_proxy(app: Conveyor) -> None:
    proxied = ProxyHeadersMiddleware(make_web(app), trusted_hosts=["10.0.0.5"])
    forwarded = {**BEARER, "x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"}

    trusted = AsgiClient(proxied, peer=("10.0.0.5", 1))
    stranger = AsgiClient(proxied, peer=("198.51.100.7", 1))
    direct_tls = AsgiClient(make_web(app), base_url="https://127.0.0.1:8443")
    try:
        assert "max-age" in trusted.get("/api/counts", headers=forwarded).headers[
            "strict-transport-security"]
        assert "strict-transport-security" not in stranger.get(
            "/api/counts", headers=forwarded).headers
        assert "strict-transport-security" not in trusted.get(
            "/api/counts", headers=BEARER).headers
        assert "strict-transport-security" in direct_tls.get("/login").headers
    finally:
        for client in (trusted, stranger, direct_tls):
            client.close()


# -- 6. open mode still refuses cross-site writes and non-JSON bodies ------------------------------
@pytest.fixture
def open_client(app: Conveyor) -> Iterator[AsgiClient]:
    client = AsgiClient(create_app(app, auth=AuthConfig(token=None)),
                        base_url="http://127.0.0.1:8080")
    yield client
    client.close()


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:9999",
                                    "http://localhost:8080"])
def test_open_mode_refuses_foreign_origins(open_client: AsgiClient, job_id: str,
                                           origin: str) -> None:
    response = open_client.post(f"/api/jobs/{job_id}/cancel", headers={"origin": origin})
    assert response.status_code == 403
    assert "origin" in response.json()["message"].lower()
    enqueue = open_client.post("/api/jobs", headers={"origin": origin},
                               json={"job_type": "test.add", "params": {"a": 1}})
    assert enqueue.status_code == 403


def test_open_mode_accepts_its_own_origin(open_client: AsgiClient, job_id: str) -> None:
    response = open_client.post(f"/api/jobs/{job_id}/cancel",
                                headers={"origin": "http://127.0.0.1:8080"})
    assert response.status_code == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_bodies_that_are_not_declared_json_are_refused(app: Conveyor, open_client: AsgiClient,
                                                       job_id: str,
                                                       content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    body = b'{"job_type": "test.add", "params": {"a": 1}}'
    before = len(app.list(limit=200))
    response = open_client.post("/api/jobs", content=body, headers=headers)
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert len(app.list(limit=200)) == before
    if content_type:  # a form post with no body must not cancel either
        empty = open_client.post(f"/api/jobs/{job_id}/cancel", content=b"", headers=headers)
        assert empty.status_code == 415
        assert app.get(job_id).state.value == "pending"
    bare = open_client.post(f"/api/jobs/{job_id}/pause", content=b"")
    assert bare.status_code in (200, 409)  # no body, no type: nothing to misread


# -- 7. the access log never shows a token, however the parameter is spelled -----------------------
@pytest.mark.parametrize("query", [f"token={TOKEN}", f"%74oken={TOKEN}", f"TOKEN={TOKEN}",
                                   f"to%6Ben={TOKEN}&next=/", f"next=/&%74%6F%6B%65%6E={TOKEN}",
                                   f"read_token={TOKEN}", f"x=1&token={TOKEN}&token={TOKEN}",
                                   f"api%5Fkey={TOKEN}"])
def test_the_access_log_redacts_every_spelling_of_a_token(query: str) -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1", "GET", f"/login?{query}", "1.1", 303), None)
    _RedactTokens().filter(record)
    assert TOKEN not in record.getMessage()
    assert "[redacted]" in record.getMessage()


def test_the_login_link_accepts_an_encoded_parameter_name(app: Conveyor) -> None:
    """Why the redaction must decode names: the server itself reads %74oken as token."""
    client = AsgiClient(make_web(app))
    try:
        assert client.get(f"/login?%74oken={TOKEN}").status_code == 303
    finally:
        client.close()
