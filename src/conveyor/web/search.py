"""The HTTP API's search filters, the count of a filter, and bulk actions.

``GET /api/jobs`` and ``GET /api/jobs/count`` take the filters as query parameters;
``POST /api/jobs/bulk/{verb}`` takes them as a ``filter`` object. Both forms are read here
into the keyword arguments of :meth:`Conveyor.list`, and the app checks them (the same checks
for every client). Times are ISO 8601 or an age (``15m``, ``2h``, ``7d``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conveyor.app import Conveyor
from conveyor.filters import MAX_TEXT, TIME_FIELDS, parse_when
from conveyor.lifecycle import VERBS, Verb
from conveyor.validate import MAX_REASON
from conveyor.web.common import ApiError, call, known_query, read_json_object

JSON = dict[str, Any]
#: The query parameters (and ``filter`` fields) that narrow a search, besides the list's own.
SEARCH_FIELDS = ("id_prefix", *TIME_FIELDS, "text")
FILTER_FIELDS = ("state", "job_type", "queue", *SEARCH_FIELDS)
_MANY = ("state", "job_type", "queue")


def filters_from_query(query: QueryParams) -> dict[str, Any]:
    """The app's filter arguments from a query string (repeated names: several values)."""
    found: dict[str, Any] = {name: query.getlist(name) or None for name in _MANY}
    for name in SEARCH_FIELDS:
        value = query.get(name)
        if value:
            found[name] = parse_when(name, value) if name in TIME_FIELDS else value
    return found


def filters_from_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The app's filter arguments from a bulk request's ``filter`` object."""
    unknown = sorted(set(body) - set(FILTER_FIELDS))
    if unknown:
        raise ApiError(422, "invalid_body", f"unknown filter field(s) "
                       f"{', '.join(map(repr, unknown))} (allowed: {', '.join(FILTER_FIELDS)})")
    found: dict[str, Any] = {}
    for name, value in body.items():
        many = name in _MANY and isinstance(value, list)
        if not (isinstance(value, str) or (many and all(isinstance(v, str) for v in value))):
            shape = "a string or an array of strings" if name in _MANY else "a string"
            raise ApiError(422, "invalid_body", f"filter field '{name}' must be {shape}")
        if not value:
            raise ApiError(422, "invalid_body", f"filter field '{name}' is empty (leave it "
                           "out to filter nothing by it)")
        found[name] = parse_when(name, value) if name in TIME_FIELDS else value
    return found


class SearchApi:
    """``/api/jobs/count`` and ``/api/jobs/bulk/{verb}``."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app

    def routes(self) -> list[Route]:
        routes = [Route("/api/jobs/count", self.count, methods=["GET"], name="api_job_count")]
        routes.extend(Route(f"/api/jobs/bulk/{verb.value}", self._bulk(verb), methods=["POST"],
                            name=f"api_bulk_{verb.value}") for verb in Verb)
        return routes

    async def count(self, request: Request) -> Response:
        filters = filters_from_query(known_query(request, *FILTER_FIELDS))
        return JSONResponse({"count": await call(self.app.count_jobs, **filters)})

    def _bulk(self, verb: Verb) -> Any:
        fields = {"filter": "object", "dry_run": "boolean", "reason": "string"}
        if VERBS[verb].copies:
            fields["keep_checkpoint"] = "boolean"

        async def endpoint(request: Request) -> Response:
            from conveyor.web.api import _only, actor_of

            known_query(request)
            body = _only(await read_json_object(request) or {}, fields)
            if "filter" not in body:
                raise ApiError(422, "invalid_body", "'filter' is required (an object of "
                               f"{', '.join(FILTER_FIELDS)})")
            if len(body.get("reason", "")) > MAX_REASON:
                raise ApiError(422, "invalid_body",
                               f"'reason' is limited to {MAX_REASON} characters")
            result = await call(
                self.app.bulk, verb, **filters_from_body(body["filter"]),
                actor=actor_of(request), reason=body.get("reason", ""),
                dry_run=body.get("dry_run", False),
                **({"keep_checkpoint": body.get("keep_checkpoint", False)}
                   if VERBS[verb].copies else {}))
            return JSONResponse(result.to_dict())

        endpoint.__name__ = f"api_bulk_{verb.value}"
        return endpoint


# -- OpenAPI ---------------------------------------------------------------------------------
#: A time filter: an RFC 3339 date-time in the years the core accepts, or an age.
WHEN: JSON = {"anyOf": [{"type": "string", "format": "date-time",
                         "pattern": "^(19[7-9][0-9]|20[0-9][0-9])-"},
                        {"type": "string", "pattern": "^[0-9]{1,3}[smhdw]$"}],
              "description": "ISO 8601 date-time (UTC when it has no zone) or an age before "
                             "now: 90s, 15m, 2h, 7d, 2w"}
_TEXT: JSON = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT,
               "pattern": "^[^\\u0000]*$"}
_ID_PREFIX: JSON = {"type": "string", "minLength": 1, "pattern": "^[0-9a-fA-F-]{1,36}$"}


def search_params(name: JSON) -> list[JSON]:
    """The search query parameters (``name``: the schema of a type or queue name); an empty
    one filters nothing, as a form's empty field sends it."""
    when = {**WHEN, "anyOf": [*WHEN["anyOf"], {"type": "string", "maxLength": 0}]}
    return [
        {"name": "id_prefix", "in": "query", "schema": {**_ID_PREFIX, "minLength": 0,
                                                        "pattern": "^[0-9a-fA-F-]{0,36}$"},
         "description": "a job id, or its start or its end (the short id a listing shows)"},
        *({"name": field, "in": "query", "schema": when,
           "description": ("from (inclusive)" if field.endswith("after") else
                           "until (exclusive)") + f": {field.split('_')[0]} time"}
          for field in TIME_FIELDS),
        {"name": "text", "in": "query", "schema": {**_TEXT, "minLength": 0},
         "description": "found, case-insensitively, in the params' or the error's JSON text"},
    ]


def search_schemas(state_ref: JSON, name: JSON) -> JSON:
    many = {"oneOf": [name, {"type": "array", "items": name, "minItems": 1}]}
    bulk_request: JSON = {
        "type": "object", "additionalProperties": False, "required": ["filter"],
        "properties": {"filter": {"$ref": "#/components/schemas/JobFilter"},
                       "dry_run": {"type": "boolean", "default": False,
                                   "description": "count the jobs, change nothing"},
                       "reason": {"type": "string", "maxLength": MAX_REASON,
                                  "pattern": "^[^\\u0000]*$",  # as every reason (NO_NUL)
                                  "description": "kept in each changed job's history"}}}
    return {
        "JobFilter": {
            "type": "object", "additionalProperties": False,
            "description": "the jobs to act on; at least one field", "minProperties": 1,
            "properties": {
                "state": {"oneOf": [state_ref, {"type": "array", "items": state_ref,
                                                "minItems": 1}]},
                "job_type": many, "queue": many, "id_prefix": _ID_PREFIX,
                **dict.fromkeys(TIME_FIELDS, WHEN), "text": _TEXT}},
        "BulkRequest": bulk_request,
        "BulkRequeueRequest": {**bulk_request, "properties": {
            **bulk_request["properties"],
            "keep_checkpoint": {"type": "boolean", "default": False,
                                "description": "start each copy from its original's "
                                               "checkpoint"}}},
        "BulkResult": {
            "type": "object", "additionalProperties": False,
            "required": ["verb", "matched", "changed", "unchanged", "skipped", "dry_run"],
            "properties": {
                "verb": {"type": "string"}, "dry_run": {"type": "boolean"},
                "matched": {"type": "integer", "minimum": 0,
                            "description": "jobs looked at (a dry run: jobs the filter "
                                           "matches now)"},
                "changed": {"type": "integer", "minimum": 0},
                "unchanged": {"type": "integer", "minimum": 0,
                              "description": "jobs the verb does nothing to as they are"},
                "skipped": {"type": "integer", "minimum": 0,
                            "description": "jobs that moved between the read and the write"}}},
        "JobCount": {"type": "object", "additionalProperties": False, "required": ["count"],
                     "properties": {"count": {"type": "integer", "minimum": 0}}},
    }


def search_paths(op: Any, json: Any, error: Any, ref: Any, list_params: list[JSON],
                 write_errors: JSON) -> JSON:
    """The OpenAPI paths of the count and the bulk actions."""
    filter_params = [p for p in list_params if p["name"] not in ("limit", "before")]
    paths: JSON = {"/api/jobs/count": {"get": op(
        "How many jobs match a filter", "count_matching_jobs",
        {"200": json(ref("JobCount"), "the number of matching jobs"),
         "422": error("a bad filter")}, parameters=filter_params)}}
    for verb in Verb:
        paths[f"/api/jobs/bulk/{verb.value}"] = {"post": op(
            f"{verb.value.capitalize()} every job a filter matches", f"bulk_{verb.value}",
            {"200": json(ref("BulkResult"), "what was done (or, dry_run, would be looked at)"),
             **write_errors, "422": error("a bad or missing filter")},
            description="Applied a batch at a time, each job's change its own compare-and-set "
                        "recorded in its history; jobs that moved meanwhile are skipped.",
            body={"required": True, "content": {"application/json": {
                "schema": ref("BulkRequeueRequest" if VERBS[verb].copies else "BulkRequest"),
            }}}, tag="control")}
    return paths
