"""The JSON HTTP API: a thin adapter from HTTP requests to :class:`~conveyor.Conveyor` calls.

Each endpoint checks the shape of its input (types, bounds, unknown fields), calls one app
method off the event loop, and returns the app's own JSON views (``Job.to_dict``,
``HistoryEntry.to_dict``). Decisions about what is legal stay in the app and the lifecycle
table; errors are mapped to statuses in :mod:`conveyor.web.common`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conveyor.app import Conveyor
from conveyor.lifecycle import VERBS, JobState, Verb
from conveyor.web.common import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ApiError,
    call,
    known_query,
    read_json_object,
)
from conveyor.web.middleware import principal_of, root_of
from conveyor.web.openapi import (
    INT32_MAX,
    INT32_MIN,
    MAX_ATTEMPTS_LIMIT,
    MAX_REASON,
    TEN_YEARS,
    build_schema,
    params_schema,
)

#: The control verbs of the lifecycle's verbs table, each a :class:`Conveyor` method of the same
#: name. The buttons a job shows come from ``Job.legal_actions``; these are only the endpoints
#: that perform them.
CONTROL_ACTIONS = tuple(verb.value for verb in Verb)


_FIELD_TYPES: dict[str, str] = {
    "job_type": "string", "params": "object", "queue": "string", "priority": "integer",
    "delay": "number", "run_at": "string", "max_attempts": "integer", "timeout": "number",
    "pause_timeout": "number", "unique_key": "string", "on_conflict": "string",
}

Endpoint = Callable[[Request], Awaitable[Response]]


def actor_of(request: Request) -> str:
    """Who the history will say made a change: the dashboard, or an API client."""
    principal = principal_of(request)
    if principal.via == "host" and principal.user is not None:
        return f"user:{principal.user}"  # the host application's user, by its id
    return {"session": "dashboard", "bearer": "http-api"}.get(principal.via, "http")


def job_url(request: Request, job_id: str) -> str:
    """Where a new job can be read, under the prefix the dashboard is mounted at."""
    return f"{root_of(request.scope)}/api/jobs/{job_id}"


class JobsApi:
    """The ``/api`` endpoints over one app."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app

    def routes(self) -> list[Route]:
        routes = [
            Route("/api/openapi.json", self.openapi, methods=["GET"], name="api_openapi"),
            Route("/api/jobs", self.jobs, methods=["GET", "POST"], name="api_jobs"),
            Route("/api/jobs/{job_id}", self.get_job, methods=["GET"], name="api_get_job"),
            Route("/api/jobs/{job_id}/history", self.history, methods=["GET"],
                  name="api_history"),
            Route("/api/counts", self.counts, methods=["GET"], name="api_counts"),
            Route("/api/job-types", self.job_types, methods=["GET"], name="api_job_types"),
        ]
        routes.extend(Route(f"/api/jobs/{{job_id}}/{action}", self._control(action),
                            methods=["POST"], name=f"api_{action}")
                      for action in CONTROL_ACTIONS)
        return routes

    # -- reading ------------------------------------------------------------------------------
    async def openapi(self, request: Request) -> Response:
        known_query(request)
        types = {name: params_schema(spec.signature) for name, spec in self.app.job_types.items()}
        return JSONResponse(build_schema(CONTROL_ACTIONS, types))

    async def jobs(self, request: Request) -> Response:
        """One route per path, so that a 405's ``Allow`` header lists every method of it."""
        if request.method == "POST":
            return await self.enqueue(request)
        return await self.list_jobs(request)

    async def list_jobs(self, request: Request) -> Response:
        query = known_query(request, "state", "job_type", "queue", "limit", "before")
        limit = parse_limit(query.get("limit"))
        jobs = await call(self.app.list, query.getlist("state") or None,
                          job_type=query.getlist("job_type") or None,
                          queue=query.getlist("queue") or None,
                          limit=limit, before=query.get("before"))
        next_before = jobs[-1].id if len(jobs) == limit else None
        return JSONResponse({"jobs": [job.to_dict() for job in jobs],
                             "next_before": next_before})

    async def get_job(self, request: Request) -> Response:
        known_query(request)
        job = await call(self.app.get, request.path_params["job_id"])
        return JSONResponse(job.to_dict())

    async def history(self, request: Request) -> Response:
        known_query(request)
        job_id = request.path_params["job_id"]
        entries = await call(self.app.history, job_id)
        return JSONResponse({"job_id": job_id,
                             "history": [entry.to_dict() for entry in entries]})

    async def counts(self, request: Request) -> Response:
        queue = known_query(request, "queue").get("queue") or None
        counts = await call(self.app.counts, queue)
        by_state = {state.value: counts.get(state, 0) for state in JobState}
        return JSONResponse({"counts": by_state, "total": sum(by_state.values())})

    async def job_types(self, request: Request) -> Response:
        known_query(request)
        types = [
            {"name": spec.name, "queue": spec.options.queue, "priority": spec.options.priority,
             "max_attempts": spec.options.max_attempts, "timeout": spec.options.timeout,
             "pause_timeout": spec.options.pause_timeout, "is_async": spec.is_async,
             "signature": _signature(spec.signature)}
            for spec in sorted(self.app.job_types.values(), key=lambda s: s.name)
        ]
        return JSONResponse({"job_types": types})

    # -- writing ------------------------------------------------------------------------------
    async def enqueue(self, request: Request) -> Response:
        known_query(request)
        body = await read_json_object(request)
        if body is None:
            raise ApiError(422, "invalid_body", "send a JSON object with at least 'job_type'")
        options = parse_enqueue(body)
        job = await call(self.app.enqueue, options.pop("job_type"), options.pop("params", None),
                         actor=actor_of(request), **options)
        # a unique key already held: the holder, 200 rather than 201 (nothing was created)
        body = {**job.to_dict(), "existing": True} if job.existing else job.to_dict()
        return JSONResponse(body, status_code=200 if job.existing else 201,
                            headers={"location": job_url(request, job.id)})

    def _control(self, action: str) -> Endpoint:
        copies = VERBS[Verb(action)].copies

        async def endpoint(request: Request) -> Response:
            known_query(request)
            job_id = request.path_params["job_id"]
            body = await read_json_object(request) or {}
            actor = actor_of(request)
            if copies:  # requeue: a new job, at a new address
                keep = _only(body, {"keep_checkpoint": "boolean"}).get("keep_checkpoint", False)
                job = await call(self.app.requeue, job_id, actor=actor, keep_checkpoint=keep)
                return JSONResponse(job.to_dict(), status_code=201,
                                    headers={"location": job_url(request, job.id)})
            reason = _only(body, {"reason": "string"}).get("reason", "")
            if len(reason) > MAX_REASON:
                raise ApiError(422, "invalid_body",
                               f"'reason' is limited to {MAX_REASON} characters")
            job = await call(getattr(self.app, action), job_id, actor=actor, reason=reason)
            return JSONResponse(job.to_dict())

        endpoint.__name__ = f"api_{action}"
        endpoint.__doc__ = f"POST /api/jobs/{{job_id}}/{action}"
        return endpoint


def parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, "invalid_query",
                       f"limit must be an integer from 1 to {MAX_LIMIT}, not {text!r}")
    return limit


def parse_enqueue(body: dict[str, Any]) -> dict[str, Any]:
    """Check an enqueue body's fields and bounds; the app then checks the rest."""
    options = _only(body, _FIELD_TYPES)
    if "job_type" not in options:
        raise ApiError(422, "invalid_body", "'job_type' is required")
    _bounded(options, "priority", INT32_MIN, INT32_MAX)
    _bounded(options, "max_attempts", 0, MAX_ATTEMPTS_LIMIT)
    _bounded(options, "delay", 0, TEN_YEARS)
    for name in ("timeout", "pause_timeout"):
        _bounded(options, name, 0, TEN_YEARS)
        if options.get(name) == 0:
            raise ApiError(422, "invalid_body", f"'{name}' must be greater than 0")
    if "run_at" in options:
        try:
            options["run_at"] = datetime.fromisoformat(options["run_at"])
        except ValueError:
            raise ApiError(422, "invalid_body", "'run_at' must be an ISO 8601 date-time with "
                           f"a time zone, not {options['run_at']!r}") from None
    return options


def _only(body: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """The body's fields, each of the JSON type given; unknown fields are refused."""
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiError(422, "invalid_body", f"unknown field(s) {', '.join(map(repr, unknown))} "
                       f"(allowed: {', '.join(fields)})")
    values = dict(body)
    for name, value in body.items():
        if not _is_json_type(value, fields[name]):
            raise ApiError(422, "invalid_body", f"'{name}' must be {_article(fields[name])}, "
                           f"not {_kind(value)}")
        if fields[name] == "integer":
            values[name] = int(value)  # 3.0 is an integer in JSON Schema, so take it as one
    return values


def _is_json_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or \
            (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    python = {"string": str, "object": dict, "boolean": bool, "array": list}[kind]
    return isinstance(value, python)


def _bounded(options: dict[str, Any], name: str, low: float, high: float) -> None:
    value = options.get(name)
    if value is not None and not low <= value <= high:
        raise ApiError(422, "invalid_body", f"'{name}' must be between {low:g} and {high:g}, "
                       f"not {value!r}")


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
             dict: "object"}
    return _article(names.get(type(value), type(value).__name__))


def _signature(signature: inspect.Signature) -> str:
    """The params a job type takes, as written in its source (string annotations unquoted)."""
    parts = []
    for param in list(signature.parameters.values())[1:]:
        text = param.name
        if param.kind is param.VAR_POSITIONAL:
            text = "*" + text
        elif param.kind is param.VAR_KEYWORD:
            text = "**" + text
        if param.annotation is not param.empty:
            annotation = param.annotation
            text += ": " + (annotation if isinstance(annotation, str)
                            else inspect.formatannotation(annotation))
        if param.default is not param.empty:
            text += f" = {param.default!r}"
        parts.append(text)
    return "(" + ", ".join(parts) + ")"
