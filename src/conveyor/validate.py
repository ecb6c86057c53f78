"""Text and time arguments other than payloads, checked once for every store and entry point.

SQLite would store a NUL or a lone surrogate silently, PostgreSQL refuses both with a store
error, and a `run_at` in year 1 is stored by one and unreadable by both; so the core refuses
them before any store sees them, with one message whichever store is behind the app.

What is refused where:
- `run_at`: a timezone-aware datetime in the years 1970-2099 (a `delay` is at most ten years);
- names (job types, queues, actors): empty, too long, or holding a control character
  (C0, DEL, C1), a bidi control, a line/paragraph separator or a lone surrogate; a name is
  an identifier, and these could only hide or reorder what an operator reads;
- reasons: too long, a NUL or a lone surrogate (other controls are stored as given and shown
  escaped, see :mod:`conveyor.display`);
- job ids: anything but the canonical UUID text conveyor generates is a job that cannot
  exist, so it is reported as not found without a query.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from conveyor.errors import ConfigurationError, InvalidParams, JobNotFound
from conveyor.model import JOB_ID_PATTERN

#: Longest job type name, queue name and filter value, in characters.
MAX_NAME = 200
#: Longest actor (who made a change, as recorded in the history).
MAX_ACTOR = 200
#: Longest reason recorded with a control action.
MAX_REASON = 1000
#: The years a `run_at` may fall in (its own calendar year, as written): a fixed window, so the
#: HTTP schema can state it exactly, that every store and client can represent.
RUN_AT_YEARS = (1970, 2099)

_JOB_ID = re.compile(JOB_ID_PATTERN)
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _bad_char(text: str, *, names: bool) -> str | None:
    """A description of the first character refused in ``text``, or None."""
    if text.isascii() and text.isprintable():
        return None  # every character refused here is a control or outside ASCII
    for char in text:
        category = unicodedata.category(char)
        if char == "\x00":
            return "a NUL character (\\u0000)"
        if category == "Cs":
            return "a lone surrogate (not valid Unicode)"
        if names and (category in _HIDDEN_CATEGORIES or char in _BIDI):
            return f"a control character (\\u{ord(char):04x})"
    return None


def _text(what: str, value: object, limit: int, *, names: bool, empty_ok: bool,
          error: type[InvalidParams] | type[ConfigurationError]) -> str:
    if not isinstance(value, str):
        raise error(f"{what} must be a string, not {type(value).__name__}")
    if not value and not empty_ok:
        raise error(f"{what} must be a non-empty name")
    if len(value) > limit:
        raise error(f"{what} is {len(value)} characters long; the limit is {limit}")
    bad = _bad_char(value, names=names)
    if bad is not None:
        raise error(f"{what} {value[:40]!a} holds {bad}")
    return value


def name(what: str, value: object, *, config: bool = False) -> str:
    """A job type or queue name: ConfigurationError when it is an option of the app or a
    registration (``config``), InvalidParams when it is a request's argument."""
    error = ConfigurationError if config else InvalidParams
    return _text(what, value, MAX_NAME, names=True, empty_ok=False, error=error)


def unique_key(value: object) -> str:
    """An idempotency key: a name like a queue's (it is shown and filtered on like one)."""
    return _text("unique_key", value, MAX_NAME, names=True, empty_ok=False, error=InvalidParams)


#: What an enqueue with a unique key does when an unfinished job already holds the key.
ON_CONFLICT = ("return_existing", "raise")


def on_conflict(value: object) -> str:
    if value not in ON_CONFLICT:
        raise ConfigurationError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}, "
                                 f"not {value!r}")
    return str(value)


def actor(value: object) -> str:
    return _text("actor", value, MAX_ACTOR, names=True, empty_ok=True, error=InvalidParams)


def reason(value: object) -> str:
    return _text("reason", value, MAX_REASON, names=False, empty_ok=True, error=InvalidParams)


def search_text(value: object, limit: int) -> str:
    """A text to search jobs for: any printable text, like a reason, up to ``limit``."""
    return _text("search text", value, limit, names=False, empty_ok=False, error=InvalidParams)


def job_id(value: object) -> str:
    """A job id as generated; any other string names no job (JobNotFound, no query)."""
    if not isinstance(value, str):
        raise InvalidParams(f"a job id must be a string, not {type(value).__name__}")
    if _JOB_ID.fullmatch(value) is None:
        raise JobNotFound(value if len(value) <= 100 else value[:100] + "...")
    return value


def run_at(value: object) -> datetime:
    """An aware datetime in the years :data:`RUN_AT_YEARS`."""
    if not isinstance(value, datetime):
        raise ConfigurationError(
            f"run_at must be a timezone-aware datetime, not {value!r} "
            f"(a {type(value).__name__}); for seconds from now use delay")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError("run_at must be timezone-aware (e.g. datetime.now(UTC))")
    first, last = RUN_AT_YEARS
    if not first <= value.year <= last:
        raise ConfigurationError(
            f"run_at {value.isoformat()} is out of range: it must fall in the years "
            f"{first} to {last}")
    return value
