"""Operations over HTTP: health probes, the workers list and stop requests, pruning.

``/healthz`` (the process answers) and ``/readyz`` (the store is reachable and its schema
current) are the only endpoints served without a token (see ``HEALTH_PATHS`` in
:mod:`conveyor.web.middleware`). Their answers say ready or not and a short reason, never the
store's address or error text: those go to the server's log.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from conveyor import __version__
from conveyor.app import Conveyor
from conveyor.lifecycle import JobState
from conveyor.presence import WorkerInfo, WorkerStatus
from conveyor.retention import FINISHED_STATES
from conveyor.web.common import ApiError, call, known_query, read_json_object
from conveyor.web.middleware import principal_of
from conveyor.web.templates import Markup, join, page, render, when

log = logging.getLogger("conveyor.web")
JSON = dict[str, Any]
#: The smallest ``older_than`` the HTTP API takes: a slip cannot delete the last hour's jobs.
MIN_HTTP_AGE = 3600.0
_FINISHED = frozenset(state.value for state in FINISHED_STATES)

WORKERS_PAGE = """
<p class="crumbs"><a href="{root}/">← all jobs</a></p>
<section class="panel"><h2>Workers</h2>
<p class="muted">Each worker writes its row on every heartbeat; one whose heartbeat stopped is
<strong>gone</strong> (its jobs go to the reaper). <em>Stop</em> asks a worker to shut down as
on SIGTERM: its running jobs finish or pause at a checkpoint and are resumed elsewhere.</p>
<table class="jobs" id="workers"><thead><tr><th>Worker</th><th>Status</th><th>Host</th>
<th>PID</th><th>Queues</th><th>Running</th><th>Started</th><th>Last heartbeat</th>
<th>Version</th><th>Actions</th></tr></thead>
<tbody>{rows}</tbody></table></section>
"""


def _worker_row(worker: WorkerInfo, can_write: bool) -> Markup:
    live = worker.status is WorkerStatus.RUNNING
    button = render(
        '<button type="button" class="btn btn-cancel" data-post="/api/workers/{path}/stop" '
        'data-confirm="Stop worker {id}? Its running jobs finish or pause at a checkpoint.">'
        'Stop</button>', path=_quoted(worker.id), id=worker.id) if can_write and live \
        else Markup("")
    css = {"running": "running", "stopping": "paused", "stopped": "cancelled",
           "gone": "failed"}[worker.status.value]
    return render(
        '<tr data-worker="{id}"><td class="mono">{id}</td><td><span class="badge state-{css}">'
        '{status}</span></td><td>{host}</td><td>{pid}</td><td>{queues}</td>'
        '<td>{running}/{concurrency}</td><td>{started}</td><td>{seen}</td><td>{version}</td>'
        '<td class="actions">{button}</td></tr>',
        id=worker.id, css=css, status=worker.status.value, host=worker.host, pid=worker.pid,
        queues=", ".join(worker.queues) or "all", running=worker.running,
        concurrency=worker.concurrency, started=when(worker.started_at),
        seen=when(worker.seen_at), version=worker.version, button=button)


def _quoted(worker_id: str) -> str:
    from urllib.parse import quote

    return quote(worker_id, safe="")


class OperationsWeb:
    """The probes, ``/api/workers``, ``/api/prune`` and the workers page."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"], name="healthz"),
            Route("/readyz", self.readyz, methods=["GET"], name="readyz"),
            Route("/api/workers", self.workers, methods=["GET"], name="api_workers"),
            Route("/api/workers/{worker_id}/stop", self.stop, methods=["POST"],
                  name="api_stop_worker"),
            Route("/api/prune", self.prune, methods=["POST"], name="api_prune"),
            Route("/workers", self.workers_page, methods=["GET"], name="workers_page"),
        ]

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    async def readyz(self, request: Request) -> Response:
        readiness = await call(self.app.ready)
        headers = {"cache-control": "no-store"}
        if readiness.ready:
            return JSONResponse({"status": "ready"}, headers=headers)
        log.warning("readyz: not ready: %s", readiness.message)
        return JSONResponse({"status": "unavailable", "reason": readiness.reason},
                            status_code=503, headers=headers)

    async def workers(self, request: Request) -> Response:
        known_query(request)
        found = await call(self.app.workers)
        return JSONResponse({"workers": [w.to_dict() for w in found]})

    async def stop(self, request: Request) -> Response:
        known_query(request)
        info = await call(self.app.stop_worker, request.path_params["worker_id"])
        return JSONResponse(info.to_dict())

    async def prune(self, request: Request) -> Response:
        from conveyor.web.api import _only

        known_query(request)
        raw = await read_json_object(request) or {}
        if "older_than" in raw and raw["older_than"] is None:
            del raw["older_than"]  # null: each state's default, as when absent
        body = _only(raw, {"older_than": "number", "states": "array", "dry_run": "boolean"})
        age = body.get("older_than")
        if age is not None and not MIN_HTTP_AGE <= age <= 100 * 365 * 86400:
            raise ApiError(422, "invalid_body", f"'older_than' must be {MIN_HTTP_AGE:g} "
                           "seconds or more (at most a century)")
        states = body.get("states")
        if states is not None and not all(isinstance(s, str) and s in _FINISHED
                                          for s in states):
            raise ApiError(422, "invalid_body", "'states' may hold only completed, failed "
                           "and cancelled")
        dry_run = bool(body.get("dry_run", False))
        counts = await call(self.app.prune, age, states=states, dry_run=dry_run)
        return JSONResponse(_prune_answer(counts, dry_run))

    async def workers_page(self, request: Request) -> Response:
        from conveyor.web.pages import _user_box  # pages imports the flow pages, like this

        known_query(request)
        principal = principal_of(request)
        found = await call(self.app.workers)
        rows = join([_worker_row(w, principal.can_write) for w in found]) or Markup(
            '<tr class="empty"><td colspan="10">No workers registered.</td></tr>')
        return HTMLResponse(page(
            "Workers", render(WORKERS_PAGE, rows=rows), page_name="workers",
            csrf=principal.csrf_token or "", can_write=principal.can_write,
            user=_user_box(principal), version=__version__, live=""))


def _prune_answer(counts: dict[JobState, int], dry_run: bool) -> JSON:
    return {"dry_run": dry_run, "total": sum(counts.values()),
            "by_state": {state.value: n for state, n in counts.items()}}


# -- OpenAPI ---------------------------------------------------------------------------------
def operations_schemas(ref: Any) -> JSON:
    when_ = {"type": ["string", "null"], "format": "date-time"}
    states = {"type": "string", "enum": [s.value for s in FINISHED_STATES]}
    return {
        "Worker": {"type": "object", "additionalProperties": False,
                   "required": ["id", "host", "pid", "queues", "concurrency", "version",
                                "started_at", "last_heartbeat", "expires_at", "running",
                                "stop_requested", "stopped_at", "status"],
                   "properties": {
                       "id": {"type": "string"}, "host": {"type": "string"},
                       "pid": {"type": "integer"},
                       "queues": {"type": "array", "items": {"type": "string"},
                                  "description": "empty: every queue"},
                       "concurrency": {"type": "integer"}, "version": {"type": "string"},
                       "started_at": when_, "last_heartbeat": when_, "expires_at": when_,
                       "running": {"type": "integer", "description": "jobs running now"},
                       "stop_requested": {"type": "boolean"}, "stopped_at": when_,
                       "status": {"type": "string", "enum": [s.value for s in WorkerStatus]}}},
        "WorkerList": {"type": "object", "additionalProperties": False, "required": ["workers"],
                       "properties": {"workers": {"type": "array", "items": ref("Worker")}}},
        "PruneRequest": {"type": "object", "additionalProperties": False, "properties": {
            "older_than": {"type": ["number", "null"], "minimum": MIN_HTTP_AGE,
                           "maximum": 100 * 365 * 86400,
                           "description": "seconds since a job finished; absent or null: each "
                                          "state's default (completed 7 days, failed and "
                                          "cancelled 30 days)"},
            "states": {"type": "array", "items": states,
                       "description": "default: all three (failed: only with no retry left)"},
            "dry_run": {"type": "boolean", "description": "only count"}}},
        "PruneResult": {"type": "object", "additionalProperties": False,
                        "required": ["dry_run", "total", "by_state"], "properties": {
                            "dry_run": {"type": "boolean"}, "total": {"type": "integer"},
                            "by_state": {"type": "object",
                                         "additionalProperties": {"type": "integer"}}}},
    }


def operations_paths(op: Any, json: Any, error: Any, ref: Any, write_errors: JSON) -> JSON:
    """The OpenAPI paths of these endpoints (``op``, ``json``... are openapi's helpers)."""
    worker_id = {"name": "worker_id", "in": "path", "required": True,
                 "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
    status = {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string"}, "reason": {"type": "string"}}}
    probe = {"security": [], "tags": ["operations"]}
    return {
        "/healthz": {"get": {**probe, "operationId": "healthz",
                             "summary": "Liveness: the process answers (no token needed)",
                             "responses": {"200": json(status, "status ok")}}},
        "/readyz": {"get": {**probe, "operationId": "readyz",
                            "summary": "Readiness: the store is reachable and its schema "
                                       "current (no token needed)",
                            "responses": {"200": json(status, "status ready"),
                                          "503": json(status, "status unavailable, with a "
                                                              "short reason")}}},
        "/api/workers": {"get": op(
            "Workers: running, stopping, stopped or gone (alive first)", "list_workers",
            {"200": json(ref("WorkerList"), "every registered worker")}, tag="operations")},
        "/api/workers/{worker_id}/stop": {"post": op(
            "Ask a worker to stop gracefully (as on SIGTERM), on its next heartbeat",
            "stop_worker",
            {"200": json(ref("Worker"), "the worker, stop requested"), **write_errors,
             "404": error("no live worker has this id")},
            parameters=[worker_id], tag="operations")},
        "/api/prune": {"post": op(
            "Delete finished jobs and their history (or count them: dry_run)", "prune_jobs",
            {"200": json(ref("PruneResult"), "how many were (or would be) deleted, by state"),
             **write_errors},
            body={"required": False, "content": {"application/json": {
                "schema": ref("PruneRequest")}}}, tag="operations")},
    }
