"""The HTTP API's flow control: queues (list, pause, resume) and edits of waiting jobs.

Thin like :mod:`conveyor.web.api`: shapes are checked here, decisions made by the app. The
OpenAPI paths and schemas of these endpoints are here too (:func:`flow_paths`), merged into
the one document by :func:`conveyor.web.openapi.build_schema`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conveyor.app import Conveyor
from conveyor.limits import MAX_LIMIT
from conveyor.validate import MAX_REASON
from conveyor.web.common import ApiError, call, known_query, read_json_object

JSON = dict[str, Any]
_RATE = r"^([1-9][0-9]{0,5}|1000000)/[smh]$"
_LIMIT_FIELDS = {"max_running": "integer", "rate_limit": "string", "reason": "string"}
_RESCHEDULE_FIELDS = {"run_at": "string", "delay": "number", "priority": "integer",
                      "reason": "string"}


class FlowApi:
    """``/api/queues`` and the waiting-job edits ``run_now`` and ``reschedule``."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app

    def routes(self) -> list[Route]:
        return [
            Route("/api/queues", self.queues, methods=["GET"], name="api_queues"),
            Route("/api/queues/{name}/pause", self.pause, methods=["POST"],
                  name="api_pause_queue"),
            Route("/api/queues/{name}/resume", self.resume, methods=["POST"],
                  name="api_resume_queue"),
            Route("/api/queues/{name}/limit", self.limit, methods=["POST"],
                  name="api_limit_queue"),
            Route("/api/limits", self.limits, methods=["GET"], name="api_limits"),
            Route("/api/schedules", self.schedules, methods=["GET"], name="api_schedules"),
            Route("/api/jobs/{job_id}/run_now", self.run_now, methods=["POST"],
                  name="api_run_now"),
            Route("/api/jobs/{job_id}/reschedule", self.reschedule, methods=["POST"],
                  name="api_reschedule"),
        ]

    async def queues(self, request: Request) -> Response:
        known_query(request)
        queues = await call(self.app.queues)
        return JSONResponse({"queues": [q.to_dict() for q in queues]})

    async def schedules(self, request: Request) -> Response:
        known_query(request)
        schedules = await call(self.app.schedules)
        return JSONResponse({"schedules": [s.to_dict() for s in schedules]})

    async def limits(self, request: Request) -> Response:
        known_query(request)
        rules = await call(self.app.limits)
        return JSONResponse({"limits": [rule.to_dict() for rule in rules]})

    async def limit(self, request: Request) -> Response:
        from conveyor.web.api import actor_of

        known_query(request)
        body = _fields(await read_json_object(request) or {}, _LIMIT_FIELDS)
        queue = await call(self.app.set_queue_limit, request.path_params["name"],
                           max_running=body.get("max_running"),
                           rate_limit=body.get("rate_limit"), actor=actor_of(request),
                           reason=_reason(body))
        return JSONResponse(queue.to_dict())

    async def pause(self, request: Request) -> Response:
        return await self._set_queue(request, self.app.pause_queue)

    async def resume(self, request: Request) -> Response:
        return await self._set_queue(request, self.app.resume_queue)

    async def _set_queue(self, request: Request, operation: Any) -> Response:
        from conveyor.web.api import actor_of

        known_query(request)
        reason = _reason(_fields(await read_json_object(request) or {}, {"reason": "string"}))
        queue = await call(operation, request.path_params["name"], actor=actor_of(request),
                           reason=reason)
        return JSONResponse(queue.to_dict())

    async def run_now(self, request: Request) -> Response:
        from conveyor.web.api import actor_of

        known_query(request)
        reason = _reason(_fields(await read_json_object(request) or {}, {"reason": "string"}))
        job = await call(self.app.run_now, request.path_params["job_id"],
                         actor=actor_of(request), reason=reason)
        return JSONResponse(job.to_dict())

    async def reschedule(self, request: Request) -> Response:
        from conveyor.web.api import actor_of

        known_query(request)
        body = _fields(await read_json_object(request) or {}, _RESCHEDULE_FIELDS)
        reason = _reason(body)
        run_at = None
        if "run_at" in body:
            try:
                run_at = datetime.fromisoformat(body["run_at"])
            except ValueError:
                raise ApiError(422, "invalid_body", "'run_at' must be an ISO 8601 date-time "
                               f"with a time zone, not {body['run_at']!r}") from None
        job = await call(self.app.reschedule, request.path_params["job_id"], run_at=run_at,
                         delay=body.get("delay"), priority=body.get("priority"),
                         actor=actor_of(request), reason=reason)
        return JSONResponse(job.to_dict())


def _fields(body: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    from conveyor.web.api import _only

    return _only(body, fields)


def _reason(body: dict[str, Any]) -> str:
    reason: str = body.get("reason", "")
    if len(reason) > MAX_REASON:
        raise ApiError(422, "invalid_body", f"'reason' is limited to {MAX_REASON} characters")
    return reason


# -- OpenAPI ---------------------------------------------------------------------------------
def flow_schemas(ref: Any, name: JSON, run_at_pattern: str) -> JSON:
    """The schemas of these endpoints' bodies and answers."""
    when = {"type": ["string", "null"], "format": "date-time"}
    return {
        "Queue": {"type": "object", "additionalProperties": False,
                  "required": ["name", "paused", "changed_at", "actor", "reason", "counts",
                               "max_running", "rate_limit", "limit_changed_at", "limit_actor",
                               "limit_reason"],
                  "properties": {
                      "name": {"type": "string"}, "paused": {"type": "boolean"},
                      "changed_at": when, "actor": {"type": "string"},
                      "reason": {"type": "string"},
                      "counts": {"type": "object", "additionalProperties": {"type": "integer"},
                                 "description": "jobs by state (states with none left out)"},
                      "max_running": {"type": ["integer", "null"], "minimum": 1},
                      "rate_limit": {"type": ["string", "null"], "pattern": _RATE},
                      "limit_changed_at": when, "limit_actor": {"type": "string"},
                      "limit_reason": {"type": "string"}}},
        "QueueLimitRequest": {
            "type": "object", "additionalProperties": False,
            "description": "both limits as they are to be: one left out is removed",
            "properties": {
                "max_running": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                "rate_limit": {"type": "string", "pattern": _RATE,
                               "description": "claims at most: 100/s, 100/m or 100/h"},
                "reason": {"type": "string", "maxLength": MAX_REASON,
                           "pattern": "^[^\\u0000]*$"}}},  # as every reason: no NUL
        "Limit": {"type": "object", "additionalProperties": False,
                  "required": ["scope", "name", "max_running", "rate_limit", "limit_key",
                               "changed_at", "actor", "reason"],
                  "properties": {
                      "scope": {"type": "string", "enum": ["type", "queue"]},
                      "name": {"type": "string"},
                      "max_running": {"type": ["integer", "null"]},
                      "rate_limit": {"type": ["string", "null"]},
                      "limit_key": {"type": ["string", "null"],
                                    "description": "a job type's key template: its limits "
                                                   "apply to each key value"},
                      "changed_at": when, "actor": {"type": "string"},
                      "reason": {"type": "string"}}},
        "LimitList": {"type": "object", "additionalProperties": False, "required": ["limits"],
                      "properties": {"limits": {"type": "array", "items": ref("Limit")}}},
        "QueueList": {"type": "object", "additionalProperties": False, "required": ["queues"],
                      "properties": {"queues": {"type": "array", "items": ref("Queue")}}},
        "Schedule": {"type": "object", "additionalProperties": False,
                     "required": ["name", "cron", "timezone", "job_type", "queue",
                                  "first_seen", "seen_at", "last_tick", "last_job_id",
                                  "next_run"],
                     "properties": {
                         "name": {"type": "string"}, "cron": {"type": "string"},
                         "timezone": {"type": "string"}, "job_type": {"type": "string"},
                         "queue": {"type": ["string", "null"]},
                         "first_seen": when, "seen_at": when, "last_tick": when,
                         "last_job_id": {"type": ["string", "null"]}, "next_run": when}},
        "ScheduleList": {"type": "object", "additionalProperties": False,
                         "required": ["schedules"],
                         "properties": {"schedules": {"type": "array",
                                                      "items": ref("Schedule")}}},
        "RescheduleRequest": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "run_at": {"type": "string", "format": "date-time", "pattern": run_at_pattern,
                           "description": "new not-before time, with a time zone (not with "
                                          "delay)"},
                "delay": {"type": "number", "minimum": 0, "maximum": 10 * 365 * 86400,
                          "description": "new not-before time, seconds from now"},
                "priority": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
                "reason": {"type": "string", "maxLength": MAX_REASON,
                           "pattern": "^[^\\u0000]*$"}},  # as every reason: no NUL
            "not": {"required": ["delay", "run_at"]},
            "anyOf": [{"required": ["run_at"]}, {"required": ["delay"]},
                      {"required": ["priority"]}]},
    }


def flow_paths(op: Any, json: Any, error: Any, ref: Any, job_id: JSON, write_errors: JSON,
               name: JSON) -> JSON:
    """The OpenAPI paths of these endpoints (``op``, ``json``... are openapi's helpers)."""
    queue_name = {"name": "name", "in": "path", "required": True, "schema": name}
    reason_body = {"required": False, "content": {"application/json": {
        "schema": ref("ActionRequest")}}}
    not_pending = error("the job is not pending (nothing was changed)")

    def queue_op(verb: str, summary: str) -> JSON:
        return {"post": op(summary, f"{verb}_queue", {
            "200": json(ref("Queue"), "the queue after the change"), **write_errors,
            "422": error("a bad queue name or reason")},
            parameters=[queue_name], body=reason_body, tag="queues")}

    return {
        "/api/queues": {"get": op(
            "Queues: paused or not (who, when, why) and their jobs by state", "list_queues",
            {"200": json(ref("QueueList"), "every queue with jobs or ever paused")},
            tag="queues")},
        "/api/schedules": {"get": op(
            "Periodic schedules with their next run, latest tick and its job",
            "list_schedules",
            {"200": json(ref("ScheduleList"), "the app's schedules and those workers "
                                              "recorded")}, tag="queues")},
        "/api/queues/{name}/limit": {"post": op(
            "Set a queue's concurrency and rate limits (neither: remove them)", "limit_queue",
            {"200": json(ref("Queue"), "the queue with its limits"), **write_errors,
             "422": error("a bad queue name, limit or reason")},
            parameters=[queue_name], body={"required": False, "content": {
                "application/json": {"schema": ref("QueueLimitRequest")}}}, tag="queues")},
        "/api/limits": {"get": op(
            "Every concurrency and rate limit claims obey: job types' and queues'",
            "list_limits", {"200": json(ref("LimitList"), "the limits")}, tag="queues")},
        "/api/queues/{name}/pause": queue_op(
            "pause", "Pause a queue: workers stop claiming its jobs; running jobs go on"),
        "/api/queues/{name}/resume": queue_op(
            "resume", "Resume a queue: workers claim its jobs again"),
        "/api/jobs/{job_id}/run_now": {"post": op(
            "Run a pending job now (it waits out a delay or a backoff)", "run_now_job",
            {"200": json(ref("Job"), "the job, due now"), **write_errors,
             "404": error("no job has this id"), "409": not_pending},
            parameters=[job_id], body=reason_body, tag="control")},
        "/api/jobs/{job_id}/reschedule": {"post": op(
            "Change a pending job's run_at and/or priority", "reschedule_job",
            {"200": json(ref("Job"), "the job after the change"), **write_errors,
             "404": error("no job has this id"), "409": not_pending,
             "422": error("nothing to change, or a bad value")},
            parameters=[job_id], body={"required": True, "content": {"application/json": {
                "schema": ref("RescheduleRequest")}}}, tag="control")},
    }
