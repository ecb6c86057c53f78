"""The OpenAPI 3.1 description of the HTTP API, written as data.

It is the contract: schemathesis fuzzes the API against it and fails on any response it does not
describe, and ``docs/http-api.md`` is checked to mention every path in it. So when an endpoint
changes, this file changes with it, or the tests say so. The job types an app registers are
listed as the ``job_type`` enum, so the schema of each running dashboard is exact for its app.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conveyor.dependencies import MAX_DEPENDENCIES, ON_DEPENDENCY_FAILURE
from conveyor.lifecycle import JobState
from conveyor.model import JOB_ID_PATTERN
from conveyor.validate import MAX_REASON as CORE_MAX_REASON
from conveyor.web.flow import flow_paths, flow_schemas
from conveyor.web.operations import operations_paths, operations_schemas
from conveyor.web.search import search_params, search_paths, search_schemas

JSON = dict[str, Any]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: Ten years: longer delays and timeouts are mistakes, and bigger numbers overflow dates.
TEN_YEARS = 10 * 365 * 24 * 3600.0
MAX_ATTEMPTS_LIMIT = 1000
MAX_REASON = CORE_MAX_REASON  # enforced by the core; documented and pre-checked here
#: Job ids are UUIDs; the pattern keeps generated ids within one path segment.

STATES = [state.value for state in JobState]
#: Text without NUL characters, which no store keeps (PostgreSQL refuses them).
NO_NUL = "^[^\\u0000]*$"
_NO_NUL_TEXT: JSON = {"type": "string", "pattern": NO_NUL}
#: run_at's years, as conveyor.validate.RUN_AT_YEARS says.
RUN_AT_PATTERN = "^(19[7-9][0-9]|20[0-9][0-9])-"
#: A job type or queue name as the core accepts it (conveyor.validate): no control characters,
#: bidi controls or line separators, 1-200 characters.
NAME: JSON = {"type": "string", "minLength": 1, "maxLength": 200,
              "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f"
                         "\\u202a-\\u202e\\u2028\\u2029\\u2066-\\u2069]*$"}

#: A strict JSON value as conveyor accepts in params and checkpoints (see conveyor.payload):
#: no NUL characters, integers within 64 bits. (Nesting is limited to 64 levels and the whole
#: payload to 1 MiB; those limits are stated in the descriptions, not the schema.)
#:
#: Written as ``if``/``then``/``else`` on purpose, not as a union of types: a validator checks
#: exactly the rules above (``pattern`` applies only to strings, ``items`` only to arrays, and so
#: on), while client generators, which read ``type``, ``anyOf``, ``items`` and
#: ``additionalProperties`` but never ``if``, see "any JSON value". A recursive union (an array
#: of this schema inside an ``anyOf`` of it) is what openapi-python-client cannot generate, and
#: a top-level ``additionalProperties`` makes openapi-typescript type every value as an object.
JSON_VALUE: JSON = {
    "description": (
        "Any JSON value, as conveyor stores params and checkpoints: strings without NUL "
        "characters, whole numbers within 64 bits (from -9223372036854775808 to "
        "9223372036854775807, however they are written), other numbers as they are, and "
        "arrays and objects of such values, nested at most 64 levels, at most 1 MiB in all."),
    "if": {"type": "integer"},
    "then": {"minimum": -(2**63), "maximum": 2**63 - 1},
    "else": {"pattern": NO_NUL, "items": {"$ref": "#/components/schemas/JsonValue"},
             "propertyNames": _NO_NUL_TEXT,
             "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: JSON) -> JSON:
    return {"anyOf": [schema, {"type": "null"}]}


def _json(schema: JSON, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> JSON:
    return _json(_ref("Error"), description)


_DATE_TIME: JSON = {"type": "string", "format": "date-time"}
_MAYBE_DATE_TIME: JSON = {"type": ["string", "null"], "format": "date-time"}


def params_schema(signature: inspect.Signature) -> JSON:
    """What params a job function takes, as ``Conveyor.enqueue`` checks them.

    The names and which are required come from the signature; each value is any strict JSON
    value (see :data:`JSON_VALUE`). Annotations are not enforced by the app, so not here either.
    """
    properties: JSON = {}
    required: list[str] = []
    extra: JSON | bool = False
    for param in list(signature.parameters.values())[1:]:
        if param.kind is param.VAR_KEYWORD:
            extra = _ref("JsonValue")
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            properties[param.name] = _ref("JsonValue")
            if param.default is param.empty:
                required.append(param.name)
    schema: JSON = {"type": "object", "properties": properties, "additionalProperties": extra}
    if extra is not False:  # **kwargs: any name, but a NUL in a key is refused like in a value
        schema["propertyNames"] = _NO_NUL_TEXT
    if required:
        schema["required"] = required
    return schema


def _enqueue_request(job_types: Mapping[str, JSON]) -> JSON:
    """The enqueue body; with job types registered, one alternative per type and its params."""
    schema: JSON = {
        "type": "object", "additionalProperties": False, "required": ["job_type"],
        "properties": {
            "job_type": {"type": "string", "description": "a registered job type "
                                                          "(see /api/job-types)"},
            "params": {"type": "object", "propertyNames": _NO_NUL_TEXT,
                       "additionalProperties": _ref("JsonValue"),
                       "description": "keyword arguments of the job function (JSON, at most "
                                      "1 MiB)"},
            "queue": NAME,
            "priority": {"type": "integer", "minimum": INT32_MIN, "maximum": INT32_MAX},
            "delay": {"type": "number", "minimum": 0, "maximum": TEN_YEARS,
                      "description": "seconds from now (not with run_at)"},
            "run_at": {"type": "string", "format": "date-time", "pattern": RUN_AT_PATTERN,
                       "description": "when to run, with a time zone, in the years "
                                      "1970-2099 (not with delay)"},
            "max_attempts": {"type": "integer", "minimum": 0, "maximum": MAX_ATTEMPTS_LIMIT},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": TEN_YEARS},
            "pause_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": TEN_YEARS},
            "unique_key": {**NAME, "description": "no second job while an unfinished one "
                                                  "(pending, running, paused, or failed with "
                                                  "a retry left) holds this key"},
            "on_conflict": {"type": "string", "enum": ["return_existing", "raise"],
                            "default": "return_existing",
                            "description": "when the key is held: answer 200 with the "
                                           "holder, or 409 duplicate_job"},
            "depends_on": {"type": "array", "items": {"type": "string",
                                                      "pattern": JOB_ID_PATTERN},
                           "maxItems": MAX_DEPENDENCIES,
                           "description": "ids of stored jobs that must all complete before "
                                          "this one runs (404 for an id no job has)"},
            "on_dependency_failure": {"type": "string", "enum": list(ON_DEPENDENCY_FAILURE),
                                      "default": "cancel",
                                      "description": "when a dependency is cancelled or fails "
                                                     "for good: cancel this job, or run it "
                                                     "anyway"},
        },
        "not": {"required": ["delay", "run_at"]},
    }
    if job_types:
        schema["properties"]["job_type"]["enum"] = sorted(job_types)
        schema.update(_params_by_type(job_types))
    return schema


def _params_by_type(job_types: Mapping[str, JSON]) -> JSON:
    """Each job type's params, as a chain of ``if job_type is X then its params, else ...``.

    Not a ``oneOf`` of partial objects: validators read both the same, but generators
    (openapi-python-client, openapi-typescript) turn a ``oneOf`` into a union of models and fail
    on branches that are not whole objects, while they ignore ``if`` and keep one plain
    ``EnqueueRequest`` whose ``job_type`` is the enum of the registered types.
    """
    chain: JSON = {}
    for name, params in sorted(job_types.items(), reverse=True):
        then: JSON = {"properties": {"params": params}}
        if params.get("required"):
            then["required"] = ["params"]
        link: JSON = {"if": {"properties": {"job_type": {"const": name}}}, "then": then}
        if chain:
            link["else"] = chain
        chain = link
    return chain


_LINKED_JOBS: JSON = {
    "type": "array", "items": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "job_type", "state"],
        "properties": {"id": {"type": "string"}, "job_type": {"type": "string"},
                       "state": {"type": "string", "enum": STATES}}}}


def _schemas(actions: Sequence[str], job_types: Mapping[str, JSON]) -> JSON:
    job_fields: JSON = {
        "id": {"type": "string"},
        "job_type": {"type": "string"},
        "state": _ref("JobState"),
        "queue": {"type": "string"},
        "priority": {"type": "integer"},
        "attempt": {"type": "integer", "minimum": 0,
                    "description": "retries used so far (0 on the first run)"},
        "max_attempts": {"type": "integer", "minimum": 0,
                         "description": "retries allowed: a job runs at most 1 + max_attempts "
                                        "times"},
        "params": {"type": "object"},
        "progress": _ref("Progress"),
        "result": {"description": "what the job function returned (any JSON), once completed"},
        "error": _nullable(_ref("JobError")),
        "created_at": _DATE_TIME,
        "updated_at": _DATE_TIME,
        "run_at": _DATE_TIME,
        "started_at": _MAYBE_DATE_TIME,
        "finished_at": _MAYBE_DATE_TIME,
        "paused_at": _MAYBE_DATE_TIME,
        "timeout": {"type": ["number", "null"]},
        "pause_timeout": {"type": "number"},
        "pause_requested": {"type": "boolean"},
        "cancel_requested": {"type": "boolean"},
        "resume_requested": {"type": "boolean"},
        "worker_id": {"type": ["string", "null"]},
        "lease_expires_at": _MAYBE_DATE_TIME,
        "requeued_from": {"type": ["string", "null"]},
        "unique_key": {"type": ["string", "null"]},
        "limit_key": {"type": ["string", "null"],
                      "description": "the job type's limit_key filled from the params"},
        "waiting_on": {"type": "integer", "minimum": 0,
                       "description": "dependencies not completed yet (pending and not "
                                      "claimable while above 0)"},
        "on_dependency_failure": {"type": "string", "enum": list(ON_DEPENDENCY_FAILURE)},
        "is_terminal": {"type": "boolean"},
        "legal_actions": {
            "type": "array", "items": {"type": "string", "enum": list(actions)},
            "description": "the control actions legal now, from the lifecycle table",
        },
    }
    return {
        "JobState": {"type": "string", "enum": STATES},
        "Error": {
            "type": "object", "required": ["error", "message"], "additionalProperties": False,
            "properties": {"error": {"type": "string", "description": "a stable code"},
                           "message": {"type": "string", "description": "what was wrong"}},
        },
        "Progress": {
            "type": "object", "additionalProperties": False,
            "required": ["current_step", "total_steps", "percent", "last_checkpoint"],
            "properties": {"current_step": {"type": "integer"},
                           "total_steps": {"type": "integer"},
                           "percent": {"type": "number", "minimum": 0, "maximum": 100},
                           "last_checkpoint": {"type": "object"}},
        },
        "JobError": {
            "type": "object", "additionalProperties": False,
            "required": ["type", "message", "traceback"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                           "traceback": {"type": "string"}},
        },
        "Job": {"type": "object", "additionalProperties": False,
                "required": list(job_fields), "properties": job_fields},
        "JobDetail": {"type": "object", "additionalProperties": False,
                      "required": [*job_fields, "held", "upstream", "downstream"],
                      "properties": {**job_fields, "held": {
                          "type": ["string", "null"],
                          "description": "why a concurrency or rate limit holds this runnable "
                                         "job back now (\"held: 2/2 running for tenant:7\"), "
                                         "computed when read"},
                          "upstream": _LINKED_JOBS, "downstream": _LINKED_JOBS}},
        "EnqueuedJob": {"type": "object", "additionalProperties": False,
                        "required": [*job_fields, "existing"],
                        "properties": {**job_fields, "existing": {
                            "type": "boolean", "description": "true: the job already held "
                                                              "the unique key"}}},
        "JobList": {
            "type": "object", "additionalProperties": False, "required": ["jobs", "next_before"],
            "properties": {
                "jobs": {"type": "array", "items": _ref("Job")},
                "next_before": {"type": ["string", "null"],
                                "description": "pass as `before` for the next page; null on "
                                               "the last page"},
            },
        },
        "HistoryEntry": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "job_id", "at", "action", "from_state", "to_state", "attempt",
                         "actor", "reason"],
            "properties": {
                "id": {"type": "integer"}, "job_id": {"type": "string"}, "at": _DATE_TIME,
                "action": {"type": "string"},
                "from_state": {"anyOf": [_ref("JobState"), {"type": "null"}]},
                "to_state": _ref("JobState"), "attempt": {"type": "integer"},
                "actor": {"type": "string"}, "reason": {"type": "string"},
            },
        },
        "History": {
            "type": "object", "additionalProperties": False, "required": ["job_id", "history"],
            "properties": {"job_id": {"type": "string"},
                           "history": {"type": "array", "items": _ref("HistoryEntry")}},
        },
        "LogLine": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "attempt", "seq", "at", "level", "message"],
            "properties": {
                "id": {"type": "integer", "description": "the cursor: pass it as `after`"},
                "attempt": {"type": "integer", "description": "retries used before this run"},
                "seq": {"type": "integer", "description": "the line's number in its attempt"},
                "at": _DATE_TIME, "level": {"type": "string"},
                "message": {"type": "string", "description": "the job's own text: untrusted"},
            },
        },
        "Logs": {
            "type": "object", "additionalProperties": False,
            "required": ["job_id", "logs", "next_after"],
            "properties": {"job_id": {"type": "string"},
                           "logs": {"type": "array", "items": _ref("LogLine")},
                           "next_after": {"type": "integer",
                                          "description": "`after` for the next read"}},
        },
        "Counts": {
            "type": "object", "additionalProperties": False, "required": ["counts", "total"],
            "properties": {
                "counts": {"type": "object", "additionalProperties": False, "required": STATES,
                           "properties": {s: {"type": "integer", "minimum": 0} for s in STATES}},
                "total": {"type": "integer", "minimum": 0},
            },
        },
        "JobType": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "queue", "priority", "max_attempts", "timeout",
                         "pause_timeout", "is_async", "signature"],
            "properties": {
                "name": {"type": "string"}, "queue": {"type": "string"},
                "priority": {"type": "integer"}, "max_attempts": {"type": "integer"},
                "timeout": {"type": ["number", "null"]}, "pause_timeout": {"type": "number"},
                "is_async": {"type": "boolean"},
                "signature": {"type": "string", "description": "the params it takes"},
            },
        },
        "JobTypes": {
            "type": "object", "additionalProperties": False, "required": ["job_types"],
            "properties": {"job_types": {"type": "array", "items": _ref("JobType")}},
        },
        "JsonValue": JSON_VALUE,
        "EnqueueRequest": _enqueue_request(job_types),
        "ActionRequest": {
            "type": "object", "additionalProperties": False,
            "properties": {"reason": {"type": "string", "maxLength": MAX_REASON,
                                      "pattern": NO_NUL,
                                      "description": "kept in the job's history"}},
        },
        "RequeueRequest": {
            "type": "object", "additionalProperties": False,
            "properties": {"keep_checkpoint": {
                "type": "boolean", "default": False,
                "description": "start the copy from the original's last checkpoint"}},
        },
    }


_AUTH_ERRORS: JSON = {
    "401": _error("no valid bearer token (or session cookie)"),
    "503": _error("the store is unavailable"),
}
_WRITE_ERRORS: JSON = {
    "403": _error("a read-only token, or a cookie request without a valid CSRF token"),
    "413": _error("the request body is larger than 2 MiB, or params larger than 1 MiB"),
    "415": _error("the body is not application/json"),
    "422": _error("the body is not a JSON object of the documented shape"),
}
_JOB_ID: JSON = {"name": "job_id", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": JOB_ID_PATTERN}}
_LOCATION: JSON = {"location": {"description": "the new job's URL",
                                "schema": {"type": "string"}}}


def _op(summary: str, op_id: str, responses: JSON, *, description: str = "",
        parameters: Iterable[JSON] = (), body: JSON | None = None, tag: str = "jobs") -> JSON:
    operation: JSON = {"summary": summary, "operationId": op_id, "tags": [tag],
                       "responses": {"422": _error("an unknown query parameter"),
                                     **responses, **_AUTH_ERRORS}}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = body
    return operation


def _job_links(actions: Sequence[str]) -> JSON:
    """OpenAPI links from a response holding a job to what can be done with it next.

    They document the id's use, and let stateful fuzzing chain enqueue -> cancel -> requeue.
    """
    job_id = {"job_id": "$response.body#/id"}
    links: JSON = {"GetJob": {"operationId": "get_job", "parameters": job_id},
                   "GetHistory": {"operationId": "job_history", "parameters": job_id}}
    links.update({f"{action.capitalize()}Job": {"operationId": f"{action}_job",
                                                "parameters": job_id} for action in actions})
    return links


def _action_path(action: str, actions: Sequence[str]) -> JSON:
    requeue = action == "requeue"
    body = {"required": False, "content": {"application/json": {
        "schema": _ref("RequeueRequest" if requeue else "ActionRequest")}}}
    done = ({"201": {**_json(_ref("Job"), "the new copy, pending"), "headers": _LOCATION,
                     "links": _job_links(actions)}}
            if requeue else {"200": {**_json(_ref("Job"), "the job after the request"),
                                     "links": _job_links(actions)}})
    descriptions = {
        "pause": "Ask a running job to pause at its next checkpoint; it stays running, with "
                 "pause_requested, until it gets there.",
        "resume": "Mark a paused job ready to resume (a worker picks it up from its "
                  "checkpoint), or withdraw a pending pause request of a running job.",
        "cancel": "Cancel a pending or paused job now; a running job stops at its next "
                  "checkpoint, or is stopped after the worker's grace period.",
        "retry": "Send a failed job with retries left back to pending now.",
        "requeue": "Enqueue a fresh copy of a job that has stopped for good (completed, "
                   "cancelled, or failed with no retry left); it links back to the original.",
    }
    return {"post": _op(
        f"{action.capitalize()} a job", f"{action}_job",
        {**done, **_WRITE_ERRORS,
         "404": _error("no job has this id"),
         "409": _error("the transition is illegal in the job's state; the message names "
                       "both states")},
        description=descriptions.get(action, ""), parameters=[_JOB_ID], body=body,
        tag="control")}


def build_schema(actions: Sequence[str], job_types: Mapping[str, JSON] | None = None) -> JSON:
    """The whole OpenAPI document for an app with these job types (name -> params schema)."""
    list_params: list[JSON] = [
        {"name": "state", "in": "query", "style": "form", "explode": True,
         "schema": {"type": "array", "items": _ref("JobState")},
         "description": "only jobs in these states (repeat the parameter for several)"},
        {"name": "job_type", "in": "query", "style": "form", "explode": True,
         "schema": {"type": "array", "items": NAME}},
        {"name": "queue", "in": "query", "style": "form", "explode": True,
         "schema": {"type": "array", "items": NAME}},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
        {"name": "before", "in": "query", "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
         "description": "a job id: only jobs created before it (the previous page's "
                        "next_before); 404 when no job has it"},
        *search_params(NAME),
    ]
    paths: JSON = {
        "/api/jobs": {
            "get": _op("List jobs, newest first", "list_jobs",
                       {"200": _json(_ref("JobList"), "a page of jobs"),
                        "404": _error("no job has the id given as `before`"),
                        "422": _error("a bad filter, limit or cursor")},
                       parameters=list_params),
            "post": _op("Enqueue a job", "enqueue_job",
                        {"201": {**_json(_ref("Job"), "the job, pending"),
                                 "headers": _LOCATION, "links": _job_links(actions)},
                         "200": {**_json(_ref("EnqueuedJob"), "the unfinished job already "
                                         "holding the unique key (existing: true)"),
                                 "headers": _LOCATION, "links": _job_links(actions)},
                         "409": _error("duplicate_job: the unique key is held and "
                                       "on_conflict is raise"),
                         "404": _error("depends_on names an id no job has"),
                         **_WRITE_ERRORS,
                         "422": _error("unknown job type, params that do not fit the "
                                       "function, or a bad option")},
                        body={"required": True, "content": {"application/json": {
                            "schema": _ref("EnqueueRequest")}}}),
        },
        "/api/jobs/{job_id}": {"get": _op(
            "Get a job", "get_job",
            {"200": {**_json(_ref("JobDetail"), "the job, why a limit holds it if one does, "
                                                "the jobs it depends on (upstream) and those "
                                                "depending on it (downstream)"),
                     "links": _job_links(actions)},
             "404": _error("no job has this id")},
            parameters=[_JOB_ID])},
        "/api/jobs/{job_id}/history": {"get": _op(
            "A job's history of transitions and requests, oldest first", "job_history",
            {"200": _json(_ref("History"), "the history"),
             "404": _error("no job has this id")}, parameters=[_JOB_ID])},
        "/api/jobs/{job_id}/logs": {"get": _op(
            "What a job logged while it ran, oldest first", "job_logs",
            {"200": _json(_ref("Logs"), "the lines after the cursor (at most `limit`)"),
             "404": _error("no job has this id"),
             "422": _error("a bad attempt, cursor or limit")},
            description=("Lines the job wrote with `logging` or `ctx.log()`, kept per attempt "
                         "(the last lines of each, as the worker is configured). Poll with "
                         "`after` set to the previous answer's `next_after` to follow a "
                         "running job."),
            parameters=[_JOB_ID,
                        {"name": "attempt", "in": "query",
                         "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
                         "description": "only this attempt"},
                        {"name": "after", "in": "query",
                         "schema": {"type": "integer", "minimum": 0, "maximum": 2**62,
                                    "default": 0},
                         "description": "only lines with a greater id"},
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 10_000,
                                    "default": 1000}}])},
        **{f"/api/jobs/{{job_id}}/{action}": _action_path(action, actions)
           for action in actions},
        "/api/counts": {"get": _op(
            "How many jobs are in each state", "count_jobs",
            {"200": _json(_ref("Counts"), "counts per state (every state present)")},
            parameters=[{"name": "queue", "in": "query",  # empty: every queue
                         "schema": {**NAME, "minLength": 0}}])},
        "/api/job-types": {"get": _op(
            "The job types this app registers", "list_job_types",
            {"200": _json(_ref("JobTypes"), "the registered job types")})},
        "/api/events": {"get": _op(
            "A live stream of job changes (Server-Sent Events)", "stream_events",
            {"200": {"description": "an endless text/event-stream", "content": {
                "text/event-stream": {"schema": {"type": "string"}}}}},
            description=(
                "Events: `counts` (data: the Counts object) whenever the counts change, and "
                "`job` (data: a job without params, result, checkpoint or traceback, plus "
                "`pending_requests`: the requests still to take effect, none once the job "
                "stopped for good) whenever a job's state, progress or requests change; "
                "`problem` (data: an Error) while "
                "the store is unavailable. Changes made by other processes are found by "
                "reading the store: on SQLite soon after they commit (the workers' commit "
                "watch), on PostgreSQL twice a second; events this process emits are "
                "forwarded at once. Jobs named in `job_id` (at most 200: the dashboard "
                "names every job its table shows) are watched even when old."),
            parameters=[{"name": "job_id", "in": "query", "style": "form", "explode": True,
                         "schema": {"type": "array", "maxItems": 200,
                                    "items": {"type": "string"}}}],
            tag="events")},
        **flow_paths(_op, _json, _error, _ref, _JOB_ID, _WRITE_ERRORS, NAME),
        **search_paths(_op, _json, _error, _ref, list_params, _WRITE_ERRORS),
        **operations_paths(_op, _json, _error, _ref, _WRITE_ERRORS),
        "/api/openapi.json": {"get": _op(
            "This document", "openapi", {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            tag="meta")},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "conveyor HTTP API",
            "version": "1",
            "description": (
                "Durable background jobs: enqueue, inspect, pause, resume, cancel, retry, "
                "requeue and watch them. Every endpoint needs `Authorization: Bearer <token>` "
                "(the dashboard's browser session uses a cookie instead). A read-only token "
                "may only GET. Errors are JSON objects with a stable `error` code and a "
                "`message`."),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {**_schemas(actions, job_types or {}),
                        **flow_schemas(_ref, NAME, RUN_AT_PATTERN),
                        **search_schemas(_ref("JobState"), NAME),
                        **operations_schemas(_ref)},
        },
    }
