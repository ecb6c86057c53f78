"""Who gets in: tokens, sessions, CSRF, security headers, escaping, and safe serving defaults."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
import uvicorn
from starlette.routing import Mount, Route

from conveyor import ConfigurationError, Conveyor, JobContext
from conveyor.web import AuthConfig, Role, create_app
from conveyor.web.middleware import HEALTH_PATHS, PUBLIC_PATHS, PUBLIC_PREFIXES
from conveyor.web.security import SESSION_COOKIE
from conveyor.web.server import _RedactTokens, auth_config, serve

from .web_helpers import (
    BEARER,
    READ_BEARER,
    READ_TOKEN,
    TOKEN,
    AsgiClient,
    fail_without_retry,
    make_web,
    typed_app,
)

SECRET_PARAM = "top-secret-param-value"


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return typed_app(make_app)


@pytest.fixture
def web(app: Conveyor) -> Any:
    return make_web(app)


@pytest.fixture
def client(web: Any) -> Iterator[AsgiClient]:
    c = AsgiClient(web)
    yield c
    c.close()


@pytest.fixture
def job_id(client: AsgiClient) -> str:
    response = client.post("/api/jobs", headers=BEARER,
                           json={"job_type": "test.add", "params": {"a": 1}, "queue": SECRET_PARAM})
    return str(response.json()["id"])


def log_in(client: AsgiClient, token: str = TOKEN) -> str:
    """Log the client in through /login; returns the page's CSRF token."""
    response = client.get(f"/login?token={token}")
    assert response.status_code == 303
    page = client.get("/")
    assert page.status_code == 200
    match = re.search(r'<meta name="csrf-token" content="([^"]*)">', page.text)
    assert match
    return match.group(1)


# -- every route is protected --------------------------------------------------------------------
def concrete_requests(web: Any) -> list[tuple[str, str, str]]:
    """(method, path, route template) for every route of the app, parameters filled in."""
    requests = []
    for route in web.routes:
        if isinstance(route, Mount):
            requests.append(("GET", f"{route.path}/dashboard.css", route.path))
            continue
        assert isinstance(route, Route), f"unexpected route type {route!r}"
        path = re.sub(r"\{[^}]+\}", "some-id", route.path)
        requests.extend((method, path, route.path) for method in sorted(route.methods or ())
                        if method != "HEAD")
    return requests


def test_no_route_answers_without_credentials_except_login_and_static(
        web: Any, client: AsgiClient, job_id: str) -> None:
    public = set()
    requests = concrete_requests(web)
    assert len(requests) >= 18
    for method, path, template in requests:
        response = client.request(method, path.replace("some-id", job_id), json={})
        assert SECRET_PARAM not in response.text, f"{method} {template} leaked job data"
        if response.status_code in (401, 303):
            if response.status_code == 303:
                assert response.headers["location"].startswith("/login?next=")
            continue
        public.add(template)
    assert public == {"/login", "/static", *HEALTH_PATHS}  # the probes say only up/ready
    assert {"/healthz", "/readyz"} == HEALTH_PATHS
    assert {"/login"} == PUBLIC_PATHS
    assert PUBLIC_PREFIXES == ("/static/",)


def test_static_assets_hold_nothing_sensitive(client: AsgiClient, web: Any) -> None:
    from conveyor.web.asgi import STATIC_DIR

    names = sorted(p.name for p in STATIC_DIR.iterdir())
    assert names == ["dashboard.css", "dashboard.js", "favicon.svg"]
    for name in names:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        assert TOKEN not in response.text
        assert SECRET_PARAM not in response.text


@pytest.mark.parametrize("header", [
    "Bearer wrong-token-wrong-token", "Basic dXNlcjpwYXNz", "Bearer", "Bearer " + TOKEN[:-1],
])
def test_wrong_or_malformed_tokens_are_401(client: AsgiClient, header: str) -> None:
    response = client.get("/api/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="conveyor"'
    assert response.json()["error"] == "unauthorized"


def test_a_bearer_header_wins_over_a_session_cookie(client: AsgiClient) -> None:
    log_in(client)
    response = client.get("/api/jobs", headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert response.status_code == 401


def test_the_read_only_token_may_only_get(client: AsgiClient, job_id: str) -> None:
    assert client.get("/api/jobs", headers=READ_BEARER).status_code == 200
    assert client.get(f"/api/jobs/{job_id}", headers=READ_BEARER).status_code == 200
    for path in ("/api/jobs", f"/api/jobs/{job_id}/cancel"):
        response = client.post(path, headers=READ_BEARER, json={"job_type": "test.add"})
        assert response.status_code == 403
        assert "read-only" in response.json()["message"]
    assert client.get(f"/api/jobs/{job_id}", headers=BEARER).json()["state"] == "pending"


def test_tokens_must_be_long_and_distinct() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        AuthConfig(token="short")
    with pytest.raises(ValueError, match="must differ"):
        AuthConfig(token=TOKEN, read_token=TOKEN)
    with pytest.raises(ValueError, match="needs authentication"):
        AuthConfig(token=None, read_token=READ_TOKEN)


# -- browser sessions ------------------------------------------------------------------------------
def test_login_link_sets_a_signed_httponly_strict_cookie(client: AsgiClient) -> None:
    assert client.get("/").headers["location"] == "/login?next=%2F"
    response = client.get(f"/login?token={TOKEN}&next=/jobs/abc")
    assert response.status_code == 303
    assert response.headers["location"] == "/jobs/abc"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert TOKEN not in cookie
    assert client.get("/").status_code == 200
    assert client.get("/api/counts").status_code == 200  # the API takes the cookie too (GET)


def test_login_form_post(client: AsgiClient) -> None:
    form = client.get("/login?next=/x")
    assert form.status_code == 200
    assert 'name="next" value="/x"' in form.text
    response = client.post("/login", data={"token": TOKEN, "next": "/"})
    assert response.status_code == 303
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil"])
def test_login_never_redirects_off_site(client: AsgiClient, target: str) -> None:
    response = client.get("/login", params={"token": TOKEN, "next": target})
    assert response.headers["location"] == "/"


def test_a_wrong_login_token_sets_no_cookie(client: AsgiClient) -> None:
    response = client.post("/login", data={"token": "guess-guess-guess-guess"})
    assert response.status_code == 401
    assert "not valid" in response.text
    assert "set-cookie" not in response.headers
    assert client.get("/login?token=nope").status_code == 401


def test_login_posts_from_another_site_are_refused(client: AsgiClient) -> None:
    response = client.post("/login", data={"token": TOKEN},
                           headers={"sec-fetch-site": "cross-site"})
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_forged_and_expired_sessions_are_refused() -> None:
    auth = AuthConfig(token=TOKEN, read_token=READ_TOKEN)
    value = auth.new_session(Role.ADMIN, now=1000.0)
    assert auth.open_session(value, now=1001.0) is not None
    assert auth.open_session(value, now=1000.0 + auth.session_max_age) is None  # expired
    forged = value.replace(".admin.", ".read.")
    assert auth.open_session(forged, now=1001.0) is None
    flipped = "1" if value.endswith("0") else "0"  # a changed signature, whatever it ended in
    assert auth.open_session(value[:-1] + flipped, now=1001.0) is None
    other_process = AuthConfig(token=TOKEN)
    assert other_process.open_session(value, now=1001.0) is None  # another secret
    assert auth.open_session("garbage") is None


def test_cookie_posts_need_the_csrf_token(client: AsgiClient, job_id: str) -> None:
    csrf = log_in(client)
    url = f"/api/jobs/{job_id}/cancel"
    missing = client.post(url)
    assert missing.status_code == 403
    assert "X-CSRF-Token" in missing.json()["message"]
    assert client.post(url, headers={"x-csrf-token": "0" * 64}).status_code == 403
    cross = client.post(url, headers={"x-csrf-token": csrf, "sec-fetch-site": "cross-site"})
    assert cross.status_code == 403
    ok = client.post(url, headers={"x-csrf-token": csrf, "sec-fetch-site": "same-origin"})
    assert ok.status_code == 200
    assert ok.json()["state"] == "cancelled"
    history = client.get(f"/api/jobs/{job_id}/history").json()["history"]
    assert history[-1]["actor"] == "dashboard"


def test_bearer_posts_need_no_csrf_token(client: AsgiClient, job_id: str) -> None:
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=BEARER).status_code == 200


def test_read_only_sessions_see_no_buttons_and_cannot_act(client: AsgiClient,
                                                          job_id: str) -> None:
    csrf = log_in(client, READ_TOKEN)
    page = client.get("/")
    assert job_id in page.text
    assert "data-action=" not in page.text
    assert '<meta name="conveyor-can-write" content="false">' in page.text
    assert "read-only" in page.text
    response = client.post(f"/api/jobs/{job_id}/cancel", headers={"x-csrf-token": csrf})
    assert response.status_code == 403
    logout = client.post("/logout", headers={"x-csrf-token": csrf})
    assert logout.status_code == 303
    assert client.get("/").status_code == 303  # logged out: back to the login page


def test_withdrawing_the_read_token_ends_its_sessions(app: Conveyor) -> None:
    with_read = AuthConfig(token=TOKEN, read_token=READ_TOKEN)
    value = with_read.new_session(Role.READ)
    without = AuthConfig(token=TOKEN, secret=with_read.secret)
    assert without.open_session(value) is None


# -- headers and escaping ----------------------------------------------------------------------
def test_every_response_carries_the_security_headers(client: AsgiClient, job_id: str) -> None:
    log_in(client)
    for path in ("/", f"/jobs/{job_id}", "/login", "/api/jobs", "/static/dashboard.js",
                 "/api/nothing"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert "http:" not in csp
        assert "https:" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
        if not path.startswith("/static/"):
            assert headers["cache-control"] == "no-store"
    unauthenticated = AsgiClient(client.client._transport.app)  # type: ignore[attr-defined]
    try:
        assert "content-security-policy" in unauthenticated.get("/api/jobs").headers
    finally:
        unauthenticated.close()


class _Audit(HTMLParser):
    """Collects what a CSP-strict page must not have: inline script, inline style, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.problems.append("inline <script>")
        if tag == "script" and any(v and "//" in v for n, v in attrs if n == "src"):
            self.problems.append("external script")
        if tag == "style":
            self.problems.append("<style> element")
        self.problems.extend(f"{name}= on <{tag}>" for name in names
                             if name == "style" or name.startswith("on"))
        self.problems.extend(f"external {name} on <{tag}>" for name, value in attrs
                             if name in ("src", "href") and value and "://" in value)


NASTY = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_job_data_is_escaped_and_pages_have_no_inline_code(app: Conveyor,
                                                           client: AsgiClient) -> None:
    @app.job(f"evil.{NASTY}")
    def evil(ctx: JobContext, text: str = "") -> None: ...

    nasty = client.post("/api/jobs", headers=BEARER,
                        json={"job_type": f"evil.{NASTY}", "params": {"text": NASTY}}).json()
    failing = client.post("/api/jobs", headers=BEARER,
                          json={"job_type": "test.fail", "params": {"message": NASTY}}).json()
    fail_without_retry(app, failing["id"], message=NASTY)
    log_in(client)
    pages = [client.get("/"), client.get(f"/jobs/{nasty['id']}"),
             client.get(f"/jobs/{failing['id']}"), client.get("/login"),
             client.get(f"/?job_type={NASTY}"), client.get(f"/jobs/{NASTY}")]
    for page in pages:
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        audit = _Audit()
        audit.feed(page.text)
        assert audit.problems == [], page.url
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in pages[1].text
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[2].text


def test_the_script_never_writes_html(client: AsgiClient) -> None:
    script = client.get("/static/dashboard.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


# -- serving -----------------------------------------------------------------------------------
def test_no_auth_is_refused_off_loopback() -> None:
    for host in ("0.0.0.0", "192.168.1.4", "example.com", "::"):
        with pytest.raises(ConfigurationError, match="loopback"):
            auth_config(host, None, None, insecure_no_auth=True)
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        auth, _ = auth_config(host, None, None, insecure_no_auth=True)
        assert not auth.enabled


def test_tokens_come_from_the_environment_or_are_generated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_TOKEN", TOKEN)
    monkeypatch.setenv("CONVEYOR_READ_TOKEN", READ_TOKEN)
    auth, generated = auth_config("0.0.0.0", None, None, insecure_no_auth=False)
    assert (auth.token, auth.read_token, generated) == (TOKEN, READ_TOKEN, False)
    monkeypatch.delenv("CONVEYOR_TOKEN")
    monkeypatch.delenv("CONVEYOR_READ_TOKEN")
    auth, generated = auth_config("127.0.0.1", None, None, insecure_no_auth=False)
    assert generated
    assert auth.token
    assert len(auth.token) >= 40
    with pytest.raises(ConfigurationError, match="at least 16"):
        auth_config("127.0.0.1", "short", None, insecure_no_auth=False)


def test_serve_binds_loopback_and_prints_the_login_link(
        app: Conveyor, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: seen.append(self.config))
    monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
    out = io.StringIO()
    serve(app, port=8999, out=out)
    (config,) = seen
    assert (config.host, config.port) == ("127.0.0.1", 8999)
    printed = out.getvalue()
    token = re.search(r"login\?token=(\S+)", printed)
    assert token
    assert "generated" in printed
    with pytest.raises(ConfigurationError):
        serve(app, host="0.0.0.0", insecure_no_auth=True, out=out)


def test_the_access_log_hides_login_tokens() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1", "GET", f"/login?token={TOKEN}&next=/", "1.1", 303),
                               None)
    _RedactTokens().filter(record)
    assert TOKEN not in record.getMessage()
    assert "token=[redacted]&next=/" in record.getMessage()


def test_open_mode_answers_only_to_loopback_host_names(app: Conveyor) -> None:
    """Without auth, a DNS-rebinding page (Host: evil.example) must get nothing."""
    web = create_app(app, auth=AuthConfig(token=None))
    local = AsgiClient(web, base_url="http://localhost:8080")
    rebound = AsgiClient(web, base_url="http://evil.example:8080")
    try:
        assert local.get("/api/jobs").status_code == 200
        assert local.get("/").status_code == 200
        assert rebound.get("/api/jobs").status_code == 403
        cross = local.post("/api/jobs", json={"job_type": "test.add", "params": {"a": 1}},
                           headers={"sec-fetch-site": "cross-site"})
        assert cross.status_code == 403
        same = local.post("/api/jobs", json={"job_type": "test.add", "params": {"a": 1}},
                          headers={"sec-fetch-site": "same-origin"})
        assert same.status_code == 201
    finally:
        local.close()
        rebound.close()
