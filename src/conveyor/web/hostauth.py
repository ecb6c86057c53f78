"""Letting the application the dashboard is mounted in decide who the caller is.

Mounted inside a FastAPI, Starlette or Django (ASGI) application, the dashboard should not ask
its users for a second login: ``create_app(app, auth=HostAuth(authenticate))`` trusts the host's
``authenticate(connection)`` instead of conveyor's tokens. It is built so that no mistake turns
into open access:

- ``authenticate`` is required and must return a :class:`HostUser` or None. None is a ``401``
  (or a redirect to the host's ``login_url``); anything else, ``True`` or the host's own user
  object included, and any exception it raises (Starlette's ``request.user`` without its
  ``AuthenticationMiddleware``, say) refuses the request with a ``500`` and a log line naming
  the mistake. Nothing is let through by default.
- The host's login is usually a cookie, which a browser sends on its own, so every unsafe
  request of a host user must carry the CSRF token the dashboard's page holds: an HMAC of the
  user's id, so one user's token is worthless for another. A host that authenticates a request
  by something a browser never adds by itself (an ``Authorization`` header) may say so with
  ``HostUser(..., cookie=False)``; such requests need no token. Cross-site requests
  (``Sec-Fetch-Site``) are refused either way.
- A host user is an admin only when ``authenticate`` says ``Role.ADMIN``; ``Role.READ`` users
  may only read, exactly like the read-only token.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from conveyor import validate
from conveyor.errors import ConveyorError
from conveyor.web.security import Principal, Role

log = logging.getLogger("conveyor.web")
#: Longest user id accepted from the host (shown in the page, recorded as the actor).
MAX_USER_ID = 100

Authenticate = Callable[[HTTPConnection], "HostUser | Awaitable[HostUser | None] | None"]


class HostAuthError(Exception):
    """The host's ``authenticate`` broke its contract: the request is refused, never let in."""


@dataclass(frozen=True)
class HostUser:
    """Who the host application says the caller is.

    ``id`` is the host's stable identity for the user (a user id or name): the CSRF token is
    derived from it and the dashboard shows it. ``cookie`` False says the host recognised the
    request by something a browser does not send on its own (so it needs no CSRF token).
    """

    id: str
    role: Role
    cookie: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or len(self.id) > MAX_USER_ID:
            raise ValueError(f"HostUser.id must be a non-empty string of at most "
                             f"{MAX_USER_ID} characters")
        try:
            validate.actor(self.actor)  # it is recorded in the history as who acted
        except ConveyorError as exc:
            raise ValueError(f"HostUser.id cannot be recorded as an actor: {exc}") from None
        if not isinstance(self.role, Role):
            raise TypeError(f"HostUser.role must be Role.ADMIN or Role.READ, not {self.role!r}")

    @property
    def actor(self) -> str:
        """Who the history says made a change through the dashboard or the API."""
        return f"user:{self.id}"


@dataclass(frozen=True)
class HostAuth:
    """Trust the mounting application's ``authenticate(connection) -> HostUser | None``.

    ``authenticate`` may be a plain function (run in a thread, so it may block on a database)
    or an ``async`` one (run on the event loop); it gets the request's
    :class:`~starlette.requests.HTTPConnection` (the host's middleware has already run, so its
    ``scope["user"]``, ``scope["session"]`` and headers are there). ``login_url`` is where a
    browser without a user is sent (``?next=`` the page it wanted); without it, it gets a
    ``401``. ``secret`` signs the CSRF tokens: give the same one to every process of the host
    (say, derived from its own secret key), or a page served by one process cannot act through
    another; by default each process makes its own.
    """

    authenticate: Authenticate
    login_url: str | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def __post_init__(self) -> None:
        if not callable(self.authenticate):
            raise TypeError("HostAuth needs authenticate: a function of the request that "
                            "returns a HostUser, or None for nobody")
        if self.login_url is not None and not self.login_url.startswith("/"):
            raise ValueError("login_url must be a path on this site, starting with '/'")
        if len(self.secret) < 16:
            raise ValueError("the CSRF secret must be at least 16 bytes long")

    @property
    def enabled(self) -> bool:
        """Authentication is never off in this mode."""
        return True

    async def identify(self, conn: HTTPConnection) -> Principal | None:
        """The caller as the host says, or None; :class:`HostAuthError` if it answers wrongly."""
        try:
            if inspect.iscoroutinefunction(self.authenticate):
                answer = await self.authenticate(conn)
            else:  # it may query a database: not on the event loop
                answer = await run_in_threadpool(self.authenticate, conn)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:
            raise HostAuthError(f"the host's authenticate raised {type(exc).__name__}: "
                                f"{str(exc)[:200]}") from exc
        if answer is None:
            return None
        if not isinstance(answer, HostUser):
            raise HostAuthError("the host's authenticate must return a HostUser or None, not "
                                f"a {type(answer).__name__}")
        return Principal(answer.role, "host", csrf_token=self.csrf_token(answer.id)
                         if answer.cookie else None, user=answer.id)

    def csrf_token(self, user_id: str) -> str:
        return hmac.new(self.secret, f"host-csrf:{user_id}".encode("utf-8", "surrogatepass"),
                        hashlib.sha256).hexdigest()
