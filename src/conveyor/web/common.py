"""Pieces the API, the stream and the pages share: reading bodies and mapping errors.

Every failure a client can cause maps to a 4xx with a message naming what was wrong, and every
failure of the store to a 503, so that a 500 always means a bug on our side.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request

from conveyor.errors import (
    ConfigurationError,
    ConveyorError,
    DuplicateJob,
    InvalidParams,
    InvalidStateError,
    JobNotFound,
    PayloadTooLarge,
    StoreError,
    UnknownJobType,
    WorkerNotFound,
)

T = TypeVar("T")

#: Largest request body accepted (params are limited to 1 MiB encoded; leave room for escapes).
MAX_BODY_BYTES = 2 * 1024 * 1024
#: Largest page of jobs one request may ask for.
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
_INT64_MIN = -(2.0**63)


class ApiError(Exception):
    """A client mistake found by the web layer itself (before the app is asked)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def classify(exc: Exception) -> tuple[int, str, str]:
    """``(status, code, message)`` for an exception a request may raise.

    Order matters: the specific conveyor errors come before their bases.
    """
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message
    table: tuple[tuple[type[Exception], int, str], ...] = (
        (JobNotFound, 404, "not_found"),
        (WorkerNotFound, 404, "not_found"),
        (InvalidStateError, 409, "invalid_state"),
        (DuplicateJob, 409, "duplicate_job"),
        (UnknownJobType, 422, "unknown_job_type"),
        (PayloadTooLarge, 413, "payload_too_large"),
        (InvalidParams, 422, "invalid_params"),
        (ConfigurationError, 422, "invalid_option"),
        (StoreError, 503, "store_unavailable"),
        (ConveyorError, 409, "conflict"),
    )
    for kind, status, code in table:
        if isinstance(exc, kind):
            return status, code, str(exc)
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {404: "no such page or endpoint",
                   405: "method not allowed here"}.get(exc.status_code, str(exc.detail))
        return exc.status_code, code, message
    raise exc  # pragma: no cover - only registered exception types reach here


async def call(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking app call (the store does I/O) off the event loop."""
    return await run_in_threadpool(func, *args, **kwargs)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` (chunked uploads too)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"request bodies are limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def known_query(request: Request, *allowed: str) -> QueryParams:
    """The query parameters, refusing any this endpoint does not take (a typo filters nothing)."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        accepted = f"(this endpoint takes {', '.join(allowed)})" if allowed else \
            "(this endpoint takes none)"
        raise ApiError(422, "invalid_query",
                       f"unknown query parameter(s) {', '.join(map(repr, unknown))} {accepted}")
    return request.query_params


#: What JSON counts as whitespace (RFC 8259): ``bytes.strip()`` also strips ``\x0b`` and
#: ``\x0c``, which would let a body of nothing but those pass as an empty one.
_JSON_SPACE = b" \t\n\r"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json_object(request: Request) -> dict[str, Any] | None:
    """The body as a JSON object, None when there is no body; 415/422 when it is not one.

    A body is read only when it is declared JSON: a form or ``text/plain`` post (what a page on
    another site can send without asking) is refused, even empty, never guessed at.
    """
    declared = request.headers.get("content-type")
    body = await read_body(request)
    if declared is None and not body.strip(_JSON_SPACE):
        return None
    media_type = (declared or "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        shown = media_type[:60] or "no Content-Type"
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json, not {shown}")
    if not body.strip(_JSON_SPACE):
        return None
    try:
        value = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_body",
                       f"the request body must be a JSON object, not {_json_type(value)}")
    _check_values(value, "$")
    return value


def _check_values(value: Any, path: str, depth: int = 0) -> None:
    """Refuse what the JSON parser lets through but conveyor cannot keep exactly.

    - NUL characters, which PostgreSQL refuses.
    - Lone UTF-16 surrogates (``\\ud800``), which cannot be encoded as UTF-8 and would fail
      deep inside the store instead of here with a message.
    - Whole numbers outside 64 bits, however written: ``1e30`` is the integer 10**30 to JSON
      Schema (and to JavaScript), and conveyor keeps integers to 64 bits so every client reads
      them exactly. The OpenAPI schema states the same rule.
    """
    if depth > 100:
        raise ApiError(422, "invalid_body", f"the request body nests too deep at {path}")
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, float) and value.is_integer() and not _INT64_MIN <= value < 2.0**63:
        raise ApiError(422, "invalid_body",
                       f"{value!r} at {path} is a whole number outside the 64-bit range")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_values(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"{path} (a key)")
            _check_values(item, f"{path}.{key}", depth + 1)


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise ApiError(422, "invalid_body", f"NUL characters are not allowed (at {path})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, "invalid_body",
                       f"lone surrogate characters are not allowed (at {path})") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array"}.get(type(value), type(value).__name__)
