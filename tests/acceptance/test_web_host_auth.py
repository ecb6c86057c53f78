"""The dashboard and API mounted in a host application, authenticated by the host.

The host is a Starlette application (FastAPI's ``app.mount`` is Starlette's) with its own
``AuthenticationMiddleware`` and a cookie login; conveyor is mounted at ``/jobs`` with
``HostAuth``. Alice is an admin, Bob may only read, nobody else gets in, and every mistake in the
host's ``authenticate`` refuses the request instead of opening the dashboard.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from conveyor import Conveyor
from conveyor.web import AuthConfig, HostAuth, HostUser, Role, create_app
from conveyor.web.middleware import HEALTH_PATHS

from .test_web_auth import concrete_requests
from .web_helpers import BEARER, AsgiClient, typed_app

SECRET = "only-for-the-hosts-users"
COOKIES = {"alice-session": "alice", "bob-session": "bob"}
ADMINS = {"alice"}


class CookieLogin(AuthenticationBackend):
    """The host's own login: a session cookie naming a user (enough for a test host)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = COOKIES.get(conn.cookies.get("host_session", ""))
        return None if name is None else (AuthCredentials(["authenticated"]), SimpleUser(name))


def from_host_user(conn: HTTPConnection) -> HostUser | None:
    """What a host writes: its user, and whether it is an admin of the jobs."""
    if not conn.user.is_authenticated:
        return None
    name = conn.user.display_name
    return HostUser(name, Role.ADMIN if name in ADMINS else Role.READ)


def host_app(conveyor: Any, authenticate: Callable[[HTTPConnection], Any] = from_host_user,
             *, middleware: bool = True, login_url: str | None = "/accounts/login",
             stopping: threading.Event | None = None) -> Starlette:
    async def login_page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("the host's login page")

    auth = HostAuth(authenticate, login_url=login_url)
    return Starlette(
        routes=[Route("/accounts/login", login_page),
                Mount("/jobs", app=create_app(conveyor, auth=auth, stopping=stopping))],
        middleware=[Middleware(AuthenticationMiddleware, backend=CookieLogin())]
        if middleware else [])


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return typed_app(make_app)


@pytest.fixture
def job_id(app: Conveyor) -> str:
    return app.enqueue("test.add", {"a": 1}, queue=SECRET).id


@pytest.fixture
def host(app: Conveyor) -> Iterator[Callable[..., AsgiClient]]:
    clients: list[AsgiClient] = []

    def client(user: str | None = None, **options: Any) -> AsgiClient:
        made = AsgiClient(host_app(app, **options), base_url="https://app.example")
        if user is not None:
            made.cookies.set("host_session", f"{user}-session")
        clients.append(made)
        return made

    yield client
    for made in clients:
        made.close()


def csrf_of(page: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]*)">', page)
    assert match
    return match.group(1)


def test_nobody_gets_in_without_the_hosts_login(host: Callable[..., AsgiClient],
                                                job_id: str) -> None:
    anonymous = host()
    page = anonymous.get("/jobs/")
    assert page.status_code == 303
    assert page.headers["location"] == "/accounts/login?next=%2Fjobs%2F"
    assert anonymous.get("/jobs/login").headers["location"] == \
        "/accounts/login?next=%2Fjobs%2F"
    for method, path in [("GET", "/jobs/api/jobs"), ("GET", f"/jobs/api/jobs/{job_id}"),
                         ("POST", "/jobs/api/jobs"), ("POST", f"/jobs/api/jobs/{job_id}/cancel"),
                         ("GET", "/jobs/api/events"), ("GET", "/jobs/api/openapi.json")]:
        response = anonymous.request(method, path, json={})
        assert response.status_code == 401, (method, path)
        assert SECRET not in response.text
    # conveyor's own tokens are not a way in: this dashboard has none
    assert anonymous.get("/jobs/api/jobs", headers=BEARER).status_code == 401
    assert host("mallory").get("/jobs/api/jobs").status_code == 401
    assert host(login_url=None).get("/jobs/").status_code == 401


def test_an_admin_of_the_host_acts_with_the_pages_csrf_token(
        host: Callable[..., AsgiClient], app: Conveyor, job_id: str) -> None:
    alice = host("alice")
    page = alice.get("/jobs/")
    assert page.status_code == 200
    assert f'href="/jobs/jobs/{job_id}"' in page.text
    assert '<span class="user">alice</span>' in page.text
    assert 'id="logout"' not in page.text  # the host logs its users out, not conveyor
    token = csrf_of(page.text)
    assert alice.post(f"/jobs/api/jobs/{job_id}/pause").json()["error"] == "csrf"
    cross_site = alice.post(f"/jobs/api/jobs/{job_id}/cancel",
                            headers={"x-csrf-token": token, "sec-fetch-site": "cross-site"})
    assert cross_site.status_code == 403
    assert app.get(job_id).state.value == "pending"
    cancelled = alice.post(f"/jobs/api/jobs/{job_id}/cancel", json={"reason": "host admin"},
                           headers={"x-csrf-token": token})
    assert cancelled.status_code == 200, cancelled.text
    assert app.history(job_id)[-1].actor == "user:alice"
    created = alice.post("/jobs/api/jobs", json={"job_type": "test.add", "params": {"a": 2}},
                         headers={"x-csrf-token": token})
    assert created.status_code == 201
    assert created.headers["location"].startswith("/jobs/api/jobs/")


def test_a_reader_reads_and_cannot_use_an_admins_token(host: Callable[..., AsgiClient],
                                                       app: Conveyor, job_id: str) -> None:
    alice_token = csrf_of(host("alice").get("/jobs/").text)
    bob = host("bob")
    page = bob.get(f"/jobs/jobs/{job_id}")
    assert page.status_code == 200
    assert "read-only" in page.text
    bob_token = csrf_of(page.text)
    assert bob_token != alice_token
    refused = bob.post(f"/jobs/api/jobs/{job_id}/cancel", headers={"x-csrf-token": bob_token})
    assert refused.status_code == 403
    assert refused.json()["error"] == "read_only"
    # an admin's token does not work with another user's cookie
    ADMINS.add("bob")
    try:
        stolen = bob.post(f"/jobs/api/jobs/{job_id}/cancel",
                          headers={"x-csrf-token": alice_token})
    finally:
        ADMINS.discard("bob")
    assert stolen.status_code == 403
    assert stolen.json()["error"] == "csrf"
    assert app.get(job_id).state.value == "pending"


def test_a_host_user_known_by_a_header_needs_no_csrf_token(host: Callable[..., AsgiClient],
                                                           app: Conveyor, job_id: str) -> None:
    async def by_api_key(conn: HTTPConnection) -> HostUser | None:  # async works too
        if conn.headers.get("x-api-key") == "service-key":
            return HostUser("billing-service", Role.ADMIN, cookie=False)
        return None

    service = host(authenticate=by_api_key, middleware=False)
    response = service.post(f"/jobs/api/jobs/{job_id}/cancel",
                            headers={"x-api-key": "service-key"})
    assert response.status_code == 200, response.text
    assert app.history(job_id)[-1].actor == "user:billing-service"
    assert service.post(f"/jobs/api/jobs/{job_id}/requeue",
                        headers={"x-api-key": "wrong"}).status_code == 401


@pytest.mark.parametrize("mistake", [
    "no-middleware", "returns-true", "returns-the-hosts-user", "returns-a-role", "bad-user-id"])
def test_a_broken_authenticate_refuses_instead_of_opening(
        host: Callable[..., AsgiClient], app: Conveyor, job_id: str, mistake: str,
        caplog: pytest.LogCaptureFixture) -> None:
    answers: dict[str, Callable[[HTTPConnection], Any]] = {
        "no-middleware": from_host_user,  # conn.user without AuthenticationMiddleware raises
        "returns-true": lambda conn: True,
        "returns-the-hosts-user": lambda conn: conn.user,
        "returns-a-role": lambda conn: Role.ADMIN,
        "bad-user-id": lambda conn: HostUser("eve\x1b[2J", Role.ADMIN),
    }
    client = host("alice", authenticate=answers[mistake],
                  middleware=mistake != "no-middleware")
    with caplog.at_level(logging.ERROR, logger="conveyor.web"):
        for method, path in [("GET", "/jobs/"), ("GET", "/jobs/api/jobs"),
                             ("POST", f"/jobs/api/jobs/{job_id}/cancel")]:
            response = client.request(method, path, json={})
            assert response.status_code == 500, (mistake, method, path, response.text)
            assert SECRET not in response.text
    assert "authenticate" in caplog.text
    assert app.get(job_id).state.value == "pending"


def test_host_auth_cannot_be_set_up_open_by_mistake(app: Conveyor) -> None:
    with pytest.raises(TypeError, match="authenticate"):
        HostAuth(None)  # type: ignore[arg-type]
    for wrong in (None, from_host_user, "token-" * 4):
        with pytest.raises(TypeError, match="auth="):
            create_app(app, auth=wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="login_url"):
        HostAuth(from_host_user, login_url="https://elsewhere.example/login")
    with pytest.raises(ValueError, match="non-empty"):
        HostUser("", Role.ADMIN)
    with pytest.raises(TypeError, match="Role"):
        HostUser("alice", "admin")  # type: ignore[arg-type]
    assert isinstance(create_app(app, auth=AuthConfig(token="t" * 20)), Starlette)


def test_no_route_answers_a_stranger_except_login_and_static(app: Conveyor, job_id: str,
                                                             host: Callable[..., AsgiClient]
                                                             ) -> None:
    web = create_app(app, auth=HostAuth(from_host_user, login_url="/accounts/login"))
    stranger = host("mallory")
    public = set()
    for method, path, template in concrete_requests(web):
        response = stranger.request(method, "/jobs" + path.replace("some-id", job_id), json={})
        assert SECRET not in response.text, f"{method} {template} leaked job data"
        if response.status_code == 401 or (
                response.status_code == 303 and
                response.headers["location"].startswith("/accounts/login?next=%2Fjobs")):
            continue
        public.add(template)
    assert public == {"/static", *HEALTH_PATHS}  # the probes say only up/ready


def test_a_plain_authenticate_runs_off_the_event_loop(host: Callable[..., AsgiClient]) -> None:
    """A host's lookup may block on its database: it must not stall every other request."""
    import asyncio

    loops: list[bool] = []

    def lookup(conn: HTTPConnection) -> HostUser:
        try:
            asyncio.get_running_loop()
            loops.append(True)
        except RuntimeError:
            loops.append(False)
        return HostUser("alice", Role.READ)

    assert host(authenticate=lookup, middleware=False).get("/jobs/api/counts").status_code == 200
    assert loops == [False]
