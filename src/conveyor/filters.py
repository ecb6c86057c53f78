"""Job search filters, checked once for every client (Python, HTTP API, CLI, dashboard).

A filter names jobs by state, type, queue, id (or its start or end), creation and finish time
windows, and a text found in their params or error. The same filter lists jobs, counts them, and
selects the jobs a bulk action touches, so what an operator previews is what the action acts on.

Times are aware datetimes; the text front ends (query strings, command-line options) give
them as ISO 8601 or as an age (``90s``, ``15m``, ``2h``, ``7d``: that long before now), parsed
here by :func:`parse_when` so that both read them alike.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from conveyor import validate
from conveyor.errors import InvalidParams
from conveyor.stores.base import JobQuery

#: Longest search text, in characters.
MAX_TEXT = 200
_ID_PREFIX = re.compile(r"[0-9a-f-]{1,36}")
_AGE = re.compile(r"(\d{1,9})\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: The fields a filter takes beyond states, types and queues (the HTTP API's and CLI's names).
TIME_FIELDS = ("created_after", "created_before", "finished_after", "finished_before")


@dataclass(frozen=True)
class Search:
    """The search part of a filter, before checking (any field may be None)."""

    id_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    finished_after: datetime | None = None
    finished_before: datetime | None = None
    text: str | None = None


def checked(query: JobQuery, search: Search) -> JobQuery:
    """``query`` with ``search`` added, every field checked; InvalidParams names the bad one.
    (An empty time window is not a mistake: it matches nothing.)"""
    times = {name: _moment(name, getattr(search, name)) for name in TIME_FIELDS}
    return dataclasses.replace(
        query, id_prefix=_id_prefix(search.id_prefix), text=_text(search.text),
        created_after=times["created_after"], created_before=times["created_before"],
        finished_after=times["finished_after"], finished_before=times["finished_before"])


def has_filter(query: JobQuery) -> bool:
    """Whether ``query`` narrows the jobs at all (a bulk action must be asked to)."""
    return bool(query.states or query.job_types or query.queues or query.id_prefix
                or query.text or any(getattr(query, name) is not None for name in TIME_FIELDS))


def parse_when(what: str, text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date-time (UTC when it has no zone) or an age such as ``2h`` (before
    ``now``); InvalidParams naming ``what`` otherwise."""
    value = text.strip()
    age = _AGE.fullmatch(value)
    if age:
        seconds = int(age.group(1)) * _UNITS[age.group(2)]
        if seconds > 100 * 365 * 86400:
            raise InvalidParams(f"{what} {value!r} is too long ago")
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidParams(f"{what} must be an ISO 8601 date-time or an age like 15m, 2h, "
                            f"7d, not {value[:60]!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _moment(what: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidParams(f"{what} must be a timezone-aware datetime, not {value!r}")
    first, last = validate.RUN_AT_YEARS
    if not first <= value.year <= last:
        raise InvalidParams(f"{what} {value.isoformat()} is out of range: it must fall in "
                            f"the years {first} to {last}")
    return value.astimezone(UTC)


def _id_prefix(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ID_PREFIX.fullmatch(value.strip().lower()):
        raise InvalidParams(f"an id, or its start or end, is hex digits and dashes (at most "
                            f"36), not {str(value)[:40]!r}")
    return value.strip().lower()


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return validate.search_text(value, MAX_TEXT).lower()
