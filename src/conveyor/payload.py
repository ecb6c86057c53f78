"""Strict JSON for params, checkpoints and results.

Payloads must round-trip unchanged through SQLite and PostgreSQL ``jsonb`` and through any JSON
client, so we refuse what one of them would mangle: NaN and Infinity (not JSON), the NUL
character (rejected by ``jsonb``), integers outside 64 bits (lose precision in most clients),
nesting deeper than :data:`MAX_DEPTH` (blows recursion limits), non-string keys (silently
stringified by ``json``) and anything over :data:`MAX_BYTES` once encoded.
"""

from __future__ import annotations

import json
import math
from typing import Any

from conveyor.errors import InvalidParams, PayloadTooLarge

#: Largest encoded payload accepted, in bytes (params, a checkpoint or a result).
MAX_BYTES = 1024 * 1024
#: Deepest nesting of lists and objects accepted.
MAX_DEPTH = 64
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
#: The one encoding the stores store, made once (``json.dumps`` with options builds a new
#: encoder on every call, which showed on the enqueue path).
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _check(value: Any, path: str, depth: int, what: str) -> None:
    """Walk ``value``; ``depth`` counts the containers around it (scalars add no depth)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidParams(f"{what} hold an integer outside the 64-bit range at {path}")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidParams(f"{what} hold {value!r} at {path}, which is not valid JSON")
        return
    if isinstance(value, str):
        _check_text(value, path, what, "a string")
        return
    if isinstance(value, list | tuple | dict):
        if depth >= MAX_DEPTH:
            raise InvalidParams(f"{what} nest deeper than {MAX_DEPTH} levels at {path}")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidParams(f"{what} have a non-string key {key!r} at {path}")
                _check_text(key, path, what, "a key")
                _check(item, f"{path}.{key}", depth + 1, what)
        else:
            for index, item in enumerate(value):
                _check(item, f"{path}[{index}]", depth + 1, what)
        return
    raise InvalidParams(
        f"{what} hold a {type(value).__name__} at {path}; only JSON values are allowed"
    )


def _check_text(text: str, path: str, what: str, kind: str) -> None:
    if "\x00" in text:
        raise InvalidParams(f"{what} have {kind} with a NUL character (\\u0000) at {path}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParams(
            f"{what} have {kind} with a lone surrogate (not valid Unicode) at {path}"
        ) from None


def validate(value: Any, what: str = "params") -> str:
    """Check that ``value`` is strict, portable JSON and return its encoding.

    Raises :class:`InvalidParams` (or :class:`PayloadTooLarge`) naming what was wrong and where.
    """
    if value is None:  # most jobs' result: nothing to walk or measure
        return "null"
    _check(value, "$", 0, what)
    encoded = _ENCODE(value)
    size = len(encoded.encode("utf-8"))
    if size > MAX_BYTES:
        raise PayloadTooLarge(f"{what} are {size} bytes once encoded; the limit is {MAX_BYTES}")
    return encoded


def validate_object(value: Any, what: str = "params") -> dict[str, Any]:
    """Params and checkpoints are JSON objects: keyword arguments and named resume state."""
    if not isinstance(value, dict):
        raise InvalidParams(f"{what} must be a JSON object, not {type(value).__name__}")
    validate(value, what)
    return value


def encode_object(value: Any, what: str = "params") -> str:
    """:func:`validate_object`, returning the encoding it made (enqueue stores it as is)."""
    if not isinstance(value, dict):
        raise InvalidParams(f"{what} must be a JSON object, not {type(value).__name__}")
    if not value:
        return "{}"  # most jobs: nothing to walk or encode
    return validate(value, what)


def dumps(value: Any) -> str:
    """Encode an already validated value the one way the stores store it."""
    return _ENCODE(value)


def loads(text: str | bytes | None) -> Any:
    return None if text is None else json.loads(text)
