"""The Starlette application: routes, middleware and error handling, assembled in one place.

:func:`create_app` is also the seam for mounting the dashboard in another ASGI server or for
testing it in-process (``TestClient(create_app(app, auth=...))``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from conveyor import __version__
from conveyor.app import Conveyor
from conveyor.errors import ConveyorError
from conveyor.web.api import JobsApi
from conveyor.web.common import MAX_BODY_BYTES, ApiError, call, classify
from conveyor.web.flow import FlowApi
from conveyor.web.flow_pages import FlowPages
from conveyor.web.hostauth import HostAuth
from conveyor.web.middleware import (
    AuthMiddleware,
    SecurityHeadersMiddleware,
    error_body,
    root_of,
    route_path,
)
from conveyor.web.operations import OperationsWeb
from conveyor.web.pages import Pages
from conveyor.web.search import SearchApi
from conveyor.web.security import AuthConfig
from conveyor.web.stream import EventStream
from conveyor.web.templates import ROOT, page, render

log = logging.getLogger("conveyor.web")
STATIC_DIR = Path(__file__).with_name("static")


def create_app(app: Conveyor, *, auth: AuthConfig | HostAuth, poll_interval: float = 0.5,
               max_body_bytes: int = MAX_BODY_BYTES,
               stopping: threading.Event | None = None) -> Starlette:
    """The dashboard and the HTTP API over ``app``, protected as ``auth`` says.

    ``auth`` is conveyor's own tokens (:class:`AuthConfig`) or the mounting application's
    users (:class:`HostAuth`); it has no default, and anything else is refused here rather
    than served open. ``stopping``, once set, ends the open event streams (set it when the
    server shuts down).
    """
    if not isinstance(auth, AuthConfig | HostAuth):
        raise TypeError("create_app needs auth=AuthConfig(token=...) or "
                        f"auth=HostAuth(authenticate), not {type(auth).__name__}")
    routes: list[BaseRoute] = [
        *Pages(app, auth).routes(),
        *SearchApi(app).routes(),  # before /api/jobs/{job_id}: "count" and "bulk" are no ids
        *JobsApi(app).routes(),
        *FlowApi(app).routes(),
        *FlowPages(app).routes(),
        *OperationsWeb(app).routes(),
        *EventStream(app, poll_interval=poll_interval, stopping=stopping).routes(),
        Route("/metrics", metrics_endpoint, methods=["GET"], name="metrics"),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    web = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(AuthMiddleware, auth=auth, max_body_bytes=max_body_bytes),
        ],
        exception_handlers={
            ConveyorError: handle_error, ApiError: handle_error, HTTPException: handle_error,
            Exception: handle_crash,
        },
    )
    web.state.conveyor = app
    web.state.auth = auth
    return web


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text: jobs by queue and state, counted now, and this process's registry."""
    try:
        from conveyor.metrics import CONTENT_TYPE, exposition
    except ImportError:
        return JSONResponse(error_body("not_available", "metrics need the metrics extra: "
                                       "pip install 'conveyor[metrics]'"), status_code=404)
    app: Conveyor = request.app.state.conveyor
    body = await call(exposition, app.store)
    return Response(body, media_type=CONTENT_TYPE)


async def handle_error(request: Request, exc: Exception) -> Response:
    """A client's mistake or an unavailable store: JSON for the API, a page for a browser."""
    status, code, message = classify(exc)
    headers = {"retry-after": "5"} if status == 503 else None
    if status == 405 and isinstance(exc, HTTPException) and exc.headers:
        headers = dict(exc.headers)
    if route_path(request.scope).startswith("/api/"):
        return JSONResponse(error_body(code, message), status_code=status, headers=headers)
    ROOT.set(root_of(request.scope))  # errors raised before the auth middleware ran
    body = render('<section class="panel"><h1>{title}</h1><p>{message}</p>'
                  '<p><a href="{root}/">← all jobs</a></p></section>',
                  title=_TITLES.get(status, "Something went wrong"), message=message)
    return HTMLResponse(page(_TITLES.get(status, "Error"), body, page_name="error",
                             version=__version__), status_code=status, headers=headers)


async def handle_crash(request: Request, exc: Exception) -> Response:
    """A bug on our side: log it in full, tell the client nothing about internals."""
    log.error("unhandled error on %s %s", request.method, route_path(request.scope), exc_info=exc)
    return JSONResponse(error_body("internal", "internal server error (see the server log)"),
                        status_code=500)


_TITLES = {404: "Not found", 405: "Not allowed", 409: "Not possible now",
           413: "Too large", 422: "Bad request", 503: "Store unavailable"}
