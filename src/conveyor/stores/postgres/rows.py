"""Rows to model objects: aware UTC datetimes, enums, and the JSON columns already decoded."""

from __future__ import annotations

import functools
import json
import logging
import struct
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.pq import ExecStatus, Format
from psycopg.rows import RowMaker, dict_row
from psycopg.types.datetime import TimestamptzLoader

from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job, JobError, JobProgress

if TYPE_CHECKING:
    from psycopg._cursor_base import BaseCursor

_INT64_LIMIT = 2**63
log = logging.getLogger("conveyor.store")
# What a timestamptz outside Python's range (year 0 or before, 10000 or after, infinity)
# decodes to: a day inside datetime's limits, so that local-time display still works.
_MIN_TIME = datetime(1, 1, 2, tzinfo=UTC)
_MAX_TIME = datetime(9999, 12, 30, tzinfo=UTC)
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
_unpack_int8 = struct.Struct("!q").unpack
_TEXT_OID = 25
_TEXT_ARRAY_OID = 1009


class LenientTimestamptz(TimestamptzLoader):
    """Clamps a time Python cannot represent, so a row holding one (written by hand or by an
    older conveyor) stays readable and cancellable instead of failing every query that
    returns it."""

    def load(self, data: Any) -> datetime:
        try:
            return super().load(data)
        except psycopg.DataError:
            text = bytes(data)
            return _MIN_TIME if text.startswith(b"-") or text.endswith(b"BC") else _MAX_TIME


class LenientTimestamptzBinary(Loader):
    """:class:`LenientTimestamptz` for binary results (microseconds since 2000, signed),
    given in UTC: every reader of the store turns times into UTC anyway, and this is the
    loader of the worker's hot path (each claimed or finished row has five or more)."""

    format = Format.BINARY

    def load(self, data: Any) -> datetime:
        micros = _unpack_int8(data)[0]
        try:
            return _EPOCH_2000 + timedelta(microseconds=micros)
        except OverflowError:
            return _MIN_TIME if micros < 0 else _MAX_TIME


class TextArray:
    """A ``text[]`` parameter encoded once, in PostgreSQL's binary array format.

    The worker path sends the same few lists in every transaction (the stop states in each
    change, a worker's job types and queues in each claim); psycopg would inspect and encode
    such a list again for each statement (a list dumper per new cursor), several times the
    cost of sending these bytes as they are (:class:`TextArrayDumper`)."""

    __slots__ = ("data", "values")

    def __init__(self, values: Iterable[str]) -> None:
        self.values = tuple(values)
        items = [value.encode("utf-8") for value in self.values]
        # header: dimensions, has-nulls flag, element type; then (length, lower bound)
        # per dimension and (length, bytes) per element; an empty array has no dimension
        head = struct.pack("!iiI", 1 if items else 0, 0, _TEXT_OID)
        if items:
            head += struct.pack("!ii", len(items), 1)
        self.data = head + b"".join(struct.pack("!i", len(item)) + item for item in items)

    def __repr__(self) -> str:
        return f"TextArray({list(self.values)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextArray) and other.values == self.values

    def __hash__(self) -> int:
        return hash(self.values)


class TextArrayDumper(Dumper):
    """Sends a :class:`TextArray`'s bytes as they are, typed ``text[]``."""

    format = Format.BINARY
    oid = _TEXT_ARRAY_OID

    def dump(self, obj: Any) -> bytes:
        return cast(bytes, obj.data)


class KnownColumns:
    """A ``dict_row`` for one statement whose results always have the same columns: their
    names are decoded from the first result and kept, rather than decoded again for each
    result (``dict_row`` reads and decodes every name of every result, ~37 for a job row).
    A result of another width, or whose last column has another name (the schema changed
    under a running process), is read afresh and becomes the kept one."""

    __slots__ = ("_last", "_names", "_width")

    def __init__(self) -> None:
        self._names: list[str] | None = None
        self._width = -1
        self._last = b""

    def __call__(self, cursor: BaseCursor[Any, Any]) -> RowMaker[dict[str, Any]]:
        res = cursor.pgresult
        if res is None or res.status != ExecStatus.TUPLES_OK or res.nfields == 0:
            return dict_row(cursor)
        width = res.nfields
        last = res.fname(width - 1) or b""
        names = self._names
        if names is None or width != self._width or last != self._last:
            encoding = cursor.connection.info.encoding
            names = [(res.fname(i) or b"").decode(encoding) for i in range(width)]
            self._names, self._width, self._last = names, width, last

        def known_row(values: Any) -> dict[str, Any]:
            return dict(zip(names, values))  # noqa: B905 - the width was checked above

        return known_row


def register_loaders(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """The store's adapters on each of its connections: lenient times, pre-encoded arrays."""
    conn.adapters.register_loader("timestamptz", LenientTimestamptz)
    conn.adapters.register_loader("timestamptz", LenientTimestamptzBinary)
    conn.adapters.register_dumper(TextArray, TextArrayDumper)


def decode_rows(rows: Iterable[Mapping[str, Any]]) -> list[Job]:
    """The jobs of ``rows``, skipping (and logging) any row that cannot be decoded, so one
    bad row never takes down a list, the reaper or a worker."""
    jobs = []
    for row in rows:
        try:
            jobs.append(row_to_job(row))
        except (ValueError, TypeError, KeyError) as exc:
            log.error("job %r cannot be decoded (%s); skipped", row.get("id"), exc)
    return jobs


def _parse_int(text: str) -> int | float:
    """An integer outside 64 bits in a jsonb value was written as a float.

    jsonb stores numbers as ``numeric`` and prints ``1e300`` as 1 followed by 300 zeros;
    conveyor's payloads never hold integers beyond 64 bits, so such a number is turned back
    into the float it was, and payloads compare equal after the round trip.
    """
    value = int(text)
    return value if -_INT64_LIMIT <= value < _INT64_LIMIT else float(value)


#: One decoder for every value: ``json.loads`` with ``parse_int`` builds a new one per call,
#: which cost more than decoding a job's small params.
_decode_json = json.JSONDecoder(parse_int=_parse_int).decode


#: Texts of at most this many bytes may be kept decoded (see :func:`_flat`).
_FLAT_TEXT = 200
_SCALARS = (str, int, float, bool, type(None))


@functools.lru_cache(maxsize=256)
def _flat(key: bytes) -> dict[str, Any] | None:
    """A small flat object's decoding, kept for the next read of the same text (None: not
    such an object). A worker reads the same few texts with every job it claims (``{}``
    params and checkpoint, the default backoff policy); the least recently read are dropped
    first, so the texts a worker keeps meeting stay, whatever came before them. Only objects
    whose values are all immutable scalars qualify, so a copy (:func:`json_loads`) shares
    nothing with another job's."""
    value = _decode_json(key.decode("utf-8", "surrogatepass"))
    if type(value) is dict and all(type(item) in _SCALARS for item in value.values()):
        return value
    return None


def json_loads(data: str | bytes | memoryview) -> Any:
    """The jsonb loader installed on the store's connections (PostgreSQL sends UTF-8)."""
    if isinstance(data, str):
        return _decode_json(data)
    key = bytes(data)
    if len(key) <= _FLAT_TEXT:
        found = _flat(key)
        if found is not None:
            return found.copy()
    return _decode_json(key.decode("utf-8", "surrogatepass"))


def utc(value: datetime | None) -> datetime | None:
    """psycopg gives the session zone's tzinfo (a ZoneInfo); the model speaks ``datetime.UTC``."""
    return None if value is None else value.astimezone(UTC)


def _utc_required(value: datetime) -> datetime:
    return value.astimezone(UTC)


def job_error(value: Any) -> JobError | None:
    """The ``error`` column; tolerant of missing keys so a hand-edited row still loads."""
    if not value:
        return None
    if not isinstance(value, dict):
        return JobError(type="Error", message=str(value))
    return JobError(type=str(value.get("type", "")), message=str(value.get("message", "")),
                    traceback=str(value.get("traceback", "")))


def row_to_job(row: Mapping[str, Any]) -> Job:
    return Job(
        id=row["id"],
        state=JobState(row["state"]),
        created_at=_utc_required(row["created_at"]),
        started_at=utc(row["started_at"]),
        finished_at=utc(row["finished_at"]),
        job_type=row["job_type"],
        params=row["params"],
        max_attempts=row["max_attempts"],
        attempt=row["attempt"],
        progress=JobProgress(row["current_step"], row["total_steps"], row["checkpoint"] or {}),
        result=row["result"],
        error=job_error(row["error"]),
        queue=row["queue"],
        priority=row["priority"],
        run_at=_utc_required(row["run_at"]),
        timeout=row["timeout"],
        pause_timeout=row["pause_timeout"],
        backoff=row["backoff"] or {},
        updated_at=_utc_required(row["updated_at"]),
        paused_at=utc(row["paused_at"]),
        pause_requested=row["pause_requested"],
        cancel_requested=row["cancel_requested"],
        resume_requested=row["resume_requested"],
        worker_id=row["worker_id"],
        lease_token=row["lease_token"],
        lease_expires_at=utc(row["lease_expires_at"]),
        requeued_from=row["requeued_from"],
        unique_key=row["unique_key"],
        trace=row.get("trace"),
        limit_key=row["limit_key"],
        waiting_on=row["waiting_on"],
        has_dependents=row["has_dependents"],
        on_dependency_failure=row["on_dependency_failure"],
    )


def row_to_history(row: Mapping[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        id=row["id"],
        job_id=row["job_id"],
        at=_utc_required(row["at"]),
        action=row["action"],
        from_state=JobState(row["from_state"]) if row["from_state"] else None,
        to_state=JobState(row["to_state"]),
        attempt=row["attempt"],
        actor=row["actor"],
        reason=row["reason"],
    )
