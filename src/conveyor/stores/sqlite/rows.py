"""SQLite rows to model objects and back, tolerant of rows the core would never write.

Times are stored as seconds since the epoch (:func:`epoch` writes them, :func:`ts` reads them).

A row written by hand, by an older conveyor or by a bug must not take down every reader: an
out-of-range time is clamped (the row stays readable and cancellable), a list skips a row it
cannot decode and logs its id, and reading one job by id decodes what it can and says what
it could not in the job's ``error`` (so ``show`` explains it and ``cancel`` works).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import operator
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from conveyor import payload
from conveyor.errors import UNDECODABLE_ROW, StoreError
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job, JobError, JobProgress
from conveyor.stores.base import NewJob, job_template

log = logging.getLogger("conveyor.store")
# What an out-of-range time decodes to: a day inside datetime's limits, so that converting it
# to local time for display still works.
_MIN_TIME = datetime(1, 1, 2, tzinfo=UTC)
_MAX_TIME = datetime(9999, 12, 30, tzinfo=UTC)
_NO_PROGRESS = JobProgress()


_STATES = {state.value: state for state in JobState}


def ts(value: float | None) -> datetime | None:
    """A stored time (seconds since the epoch); out of range is clamped."""
    if value is None:
        return None
    kind = type(value)
    if kind is not float and kind is not int:  # bool (a subclass of int) included
        raise ValueError(f"a time column holds {value!r}, not a number")
    known = _TIMES.get(value)
    if known is not None:
        return known
    try:
        known = datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        known = _MIN_TIME if value < 0 else _MAX_TIME
    if len(_TIMES) >= _MAX_TIMES:
        _TIMES.clear()
    _TIMES[value] = known
    return known


#: Recently decoded times (a datetime is immutable, so one may be shared): the rows one
#: transaction writes share their times (its now, a batch's created_at and run_at).
_TIMES: dict[float, datetime] = {}
_MAX_TIMES = 4096


def epoch(value: datetime) -> float:
    """A time as stored; a naive datetime is refused (it would be read in local time)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use an aware UTC datetime")
    return value.timestamp()


#: The last values of an ``insert_job`` row (current_step, total_steps, checkpoint,
#: requeued_from, unique_key, trace, limit_key: the last four as NULL, see :data:`_NULL_TEXT`)
#: when all are the jobs table's defaults, as for
#: most new jobs: such a row is written by ``insert_job_plain``, which binds only its first
#: ``PLAIN_COLUMNS`` values and leaves these to the table (fewer values bound and copied).
PLAIN_TAIL: tuple[Any, ...] = (0, 0, "{}", 0, "", 0, "", 0, "", 0, "")
PLAIN_COLUMNS = 14


def new_job_rows(jobs: Iterable[NewJob], now: float) -> list[tuple[Any, ...]]:
    """The ``insert_job`` arguments for each job; its place in line is the run_at it is given.

    A batch of one type shares one backoff dict: it is encoded once per batch, not per job.
    """
    backoffs: dict[int, str] = {}
    rows = []
    for new in jobs:
        progress = new.progress or _NO_PROGRESS
        checkpoint = ("{}" if not progress.last_checkpoint
                      else payload.dumps(progress.last_checkpoint))
        requeued_from, unique_key, trace, limit_key = (
            new.requeued_from, new.unique_key, new.trace, new.limit_key)
        rows.append((
            *job_head(new, now, backoffs),
            progress.current_step, progress.total_steps, checkpoint,
            *(_NULL_TEXT if requeued_from is None else (1, requeued_from)),
            *(_NULL_TEXT if unique_key is None else (1, unique_key)),
            *(_NULL_TEXT if trace is None else (1, trace)),
            *(_NULL_TEXT if limit_key is None else (1, limit_key)),
        ))
    return rows


#: The two arguments of a text column left NULL (``CASE ? WHEN 1 THEN ? END`` in the insert
#: statements; a value given is ``(1, value)``): None is never bound, since Python's sqlite3
#: binds it through its adapter lookup, which raises and clears an AttributeError (about ten
#: times the cost of binding an int or a str; see ``insert_job`` in queries.sql).
_NULL_TEXT = (0, "")


def job_head(new: NewJob, now: float, backoffs: dict[int, str]) -> tuple[Any, ...]:
    """The first ``PLAIN_COLUMNS`` values of ``new``'s ``insert_job`` row: all that
    ``insert_job_plain`` takes. ``backoffs``: see :func:`encoded`."""
    params, run_at, backoff = encoded(new, now, backoffs)
    timeout = new.timeout  # two arguments, 0 and 0 for NULL: see _NULL_TEXT
    return (new.id, new.job_type, new.queue, new.priority, params, new.max_attempts, run_at,
            run_at, 0 if timeout is None else 1, 0 if timeout is None else timeout,
            new.pause_timeout, backoff, now, now)


def encoded(new: NewJob, now: float, backoffs: dict[int, str]) -> tuple[str, float, str]:
    """``new``'s params, run_at and backoff as its row stores them, for every statement that
    inserts a job (``insert_job``, ``insert_job_plain``, ``insert_job_shared``): the run_at
    with its delay added, the JSON encoded once. ``backoffs``: the batch's encoded policies
    by the dict's id, so that a batch of one type encodes its shared backoff once."""
    run_at = epoch(new.run_at) if new.run_at else now + (new.delay or 0.0)
    params = new.params_text()
    backoff = new.backoff_json or backoffs.get(id(new.backoff))
    if backoff is None:
        backoff = backoffs[id(new.backoff)] = payload.dumps(new.backoff)
    return params, run_at, backoff


def new_history_rows(jobs: Iterable[NewJob], now: float, actor: str) -> list[tuple[Any, ...]]:
    """The ``insert_history`` arguments of each new job's ``create`` row."""
    pending = JobState.PENDING.value  # once: an enum member is read through a descriptor
    return [(new.id, now, "create", None, pending, 0, actor, "") for new in jobs]


def decode_rows(rows: Iterable[sqlite3.Row],
                pick: Callable[[sqlite3.Row], tuple[Any, ...]] | None = None) -> list[Job]:
    """The jobs of ``rows``, skipping (and logging) any row that cannot be decoded, so one
    corrupt row never takes down a list, the reaper or a worker. ``pick``: the rows'
    :func:`picker`, when the caller knows it already (the worker path, per statement)."""
    jobs = []
    for row in rows:
        if pick is None:  # the rows of one statement share their columns: looked up once
            pick = picker(tuple(row.keys()))
        try:
            jobs.append(row_to_job(row, pick=pick))
        except StoreError as exc:
            log.error("%s; skipped", exc)
    return jobs


def row_to_job(stored: sqlite3.Row, *, lenient: bool = False,
               pick: Callable[[sqlite3.Row], tuple[Any, ...]] | None = None) -> Job:
    """A row as a Job; a row that cannot be decoded is a StoreError naming the job.

    ``lenient`` (reading one job by id): a JSON column that cannot be decoded is replaced by
    its empty value, and the job's ``error`` says which columns were lost. ``pick``: the
    row's :func:`picker`, when the caller looked it up for many rows of one statement.
    """
    # sqlite3.Row finds a column by name with a linear, case-insensitive scan; one itemgetter
    # per column layout takes the ~35 values a job needs in one call (decoding is on the
    # claim's and the completion's path). A row without every column is read by name.
    if pick is None:
        pick = picker(tuple(stored.keys()))
    if pick is not None:
        values = pick(stored)
    else:
        row = dict(zip(stored.keys(), stored, strict=True))
        try:
            values = tuple([row.get(c) if c == "trace" else row[c] for c in _COLUMNS])
        except KeyError as exc:
            raise StoreError(f"job {row.get('id')!r} cannot be decoded: {exc}") from exc
    lost: list[str] = []
    try:
        job = _decode(values, lenient, lost)
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"job {values[0]!r} cannot be decoded: {exc}") from exc
    if lost:
        log.error("job %r: stored %s cannot be decoded", values[0], ", ".join(lost))
        job.error = JobError(UNDECODABLE_ROW, f"stored {', '.join(lost)} cannot be decoded; "
                                          "the job can only be cancelled")
    return job


#: The columns a Job is decoded from, in the order :func:`_decode` takes them.
_COLUMNS = (
    "id", "state", "created_at", "started_at", "finished_at", "job_type", "params",
    "max_attempts", "attempt", "current_step", "total_steps", "checkpoint", "result", "error",
    "queue", "priority", "run_at", "timeout", "pause_timeout", "backoff", "updated_at",
    "paused_at", "pause_requested", "cancel_requested", "resume_requested", "worker_id",
    "lease_token", "lease_expires_at", "requeued_from", "unique_key", "trace", "limit_key",
    "waiting_on", "has_dependents", "on_dependency_failure",
)
#: Parsed backoff policies by their stored text (each decode gets its own copy).
_BACKOFFS: dict[str, dict[str, Any]] = {}
_MAX_BACKOFFS = 256


@functools.lru_cache(maxsize=64)
def picker(keys: tuple[str, ...]) -> Callable[[sqlite3.Row], tuple[Any, ...]] | None:
    """One call taking a job's columns, in :data:`_COLUMNS`' order, from rows of ``keys``
    (a name given twice is read from its last column, as reading the row into a dict did)."""
    place = {key: n for n, key in enumerate(keys)}
    if any(column not in place for column in _COLUMNS):
        return None
    return operator.itemgetter(*(place[column] for column in _COLUMNS))


def _json(column: str, text: str | None, default: Any, lenient: bool, lost: list[str]) -> Any:
    if text is None:
        return None
    if text == "{}":  # most checkpoints, params and backoffs: no parser needed
        return {}
    if column == "backoff" and text in _BACKOFFS:  # a job type's jobs share one policy
        return dict(_BACKOFFS[text])
    try:
        value = payload.loads(text)
    except ValueError as exc:
        if not lenient:
            raise ValueError(f"{column} is not valid JSON ({exc})") from None
        lost.append(column)
        return default
    if (column == "backoff" and isinstance(value, dict) and len(_BACKOFFS) < _MAX_BACKOFFS
            and not any(isinstance(v, dict | list) for v in value.values())):
        _BACKOFFS[text] = dict(value)  # flat: a copy is as good as parsing it again
    return value


def _decode(values: tuple[Any, ...], lenient: bool, lost: list[str]) -> Job:
    """The Job of one row's ``values`` (in :data:`_COLUMNS`' order).

    Made by setting each field of a bare object in Job's field order (as ``Job(...)``'s
    ``__init__`` does) rather than through ``Job(...)``: the generated ``__init__`` takes 36
    keywords one by one, and a claim decodes every job it takes. Attribute by attribute,
    not by assigning a built ``__dict__`` (~34,000 instructions a decode, callgrind): timed
    on CPython 3.11, 36 attribute stores on a bare object took 1.8 µs, a 36-key dict
    literal assigned as ``__dict__`` 2.9 µs. (CPython 3.11 keeps an object's attributes in
    its compact per-class layout only up to 30 names: a Job's 36 leave it for a dict of
    their own either way; with 28 names the same stores took 0.4 µs.) Job is a plain
    dataclass (no slots, no ``__post_init__``, no ``__setattr__``), so the object is the one
    ``Job(...)`` would make, field order too; :func:`_check_decoded_fields` refuses at
    import a Job for which this would not hold, and tests compare both ways.
    """
    (job_id, state, created_at, started_at, finished_at, job_type, params, max_attempts,
     attempt, current_step, total_steps, checkpoint, result, error, queue, priority, run_at,
     timeout, pause_timeout, backoff, updated_at, paused_at, pause_requested,
     cancel_requested, resume_requested, worker_id, lease_token, lease_expires_at,
     requeued_from, unique_key, trace, limit_key, waiting_on, has_dependents,
     on_dependency_failure) = values
    # Each column's common case inline (a time decoded before, no time, no JSON, ``{}``),
    # a call only for the rest: a claim decodes every job it takes, ~7 times and 5 JSON
    # columns each, and a call per column was a third of the decode.
    times = _TIMES
    failure = None if error is None else _json("error", error, None, lenient, lost)
    job = _new_object(Job)
    # in Job's field order, as Job(...) sets them
    job.id = job_id
    job.state = _STATES[state]
    job.created_at = times.get(created_at) or ts(created_at) or datetime.now(UTC)
    job.started_at = None if started_at is None else times.get(started_at) or ts(started_at)
    job.finished_at = (None if finished_at is None
                       else times.get(finished_at) or ts(finished_at))
    job.job_type = job_type
    job.params = {} if params == "{}" else _json("params", params, {}, lenient, lost)
    job.max_attempts = max_attempts
    job.attempt = attempt
    job.progress = JobProgress(current_step, total_steps, {} if checkpoint == "{}" else
                               _json("checkpoint", checkpoint, {}, lenient, lost) or {})
    job.result = None if result is None else _json("result", result, None, lenient, lost)
    job.error = JobError(**failure) if failure else None
    job.queue = queue
    job.priority = priority
    job.run_at = times.get(run_at) or ts(run_at) or datetime.now(UTC)
    job.timeout = timeout
    job.pause_timeout = pause_timeout
    known = _BACKOFFS.get(backoff)  # a job type's jobs share one policy: no call for it
    job.backoff = (dict(known) if known is not None
                   else _json("backoff", backoff, {}, lenient, lost) or {})
    job.updated_at = times.get(updated_at) or ts(updated_at) or datetime.now(UTC)
    job.paused_at = None if paused_at is None else times.get(paused_at) or ts(paused_at)
    job.pause_requested = bool(pause_requested)
    job.cancel_requested = bool(cancel_requested)
    job.resume_requested = bool(resume_requested)
    job.worker_id = worker_id
    job.lease_token = lease_token
    job.lease_expires_at = (None if lease_expires_at is None
                            else times.get(lease_expires_at) or ts(lease_expires_at))
    job.requeued_from = requeued_from
    job.unique_key = unique_key
    job.trace = trace
    job.limit_key = limit_key
    job.waiting_on = waiting_on
    job.has_dependents = bool(has_dependents)
    job.on_dependency_failure = on_dependency_failure
    job.existing = _NOT_DECODED["existing"]
    return job


_new_object = object.__new__
#: The Job fields :func:`_decode` fills from a row, in Job's field order.
_DECODED = (
    "id", "state", "created_at", "started_at", "finished_at", "job_type", "params",
    "max_attempts", "attempt", "progress", "result", "error", "queue", "priority", "run_at",
    "timeout", "pause_timeout", "backoff", "updated_at", "paused_at", "pause_requested",
    "cancel_requested", "resume_requested", "worker_id", "lease_token", "lease_expires_at",
    "requeued_from", "unique_key", "trace", "limit_key", "waiting_on", "has_dependents",
    "on_dependency_failure",
)
#: The Job fields no column holds (``existing``), at their defaults (set by name last).
_NOT_DECODED: dict[str, Any] = {}


def _check_decoded_fields() -> None:
    """Fill :data:`_NOT_DECODED` (from :func:`~conveyor.stores.base.job_template`, which
    refuses a Job that a filled ``__dict__`` would not make as ``Job(...)`` does), refusing
    too a :data:`_DECODED` that is not Job's first fields in Job's order, which
    :func:`_decode`'s literal relies on."""
    if tuple(spec.name for spec in dataclasses.fields(Job))[:len(_DECODED)] != _DECODED:
        raise TypeError("rows._DECODED must name Job's fields, in Job's order, first")
    if Job.__setattr__ is not object.__setattr__:
        raise TypeError("rows._decode sets Job's fields one by one: Job may not define "
                        "__setattr__")
    template = job_template(Job, _DECODED, "rows._decode")
    _NOT_DECODED.clear()
    _NOT_DECODED.update((name, value) for name, value in template.items()
                        if name not in _DECODED)
    if list(_NOT_DECODED) != ["existing"]:  # _decode sets this one by name, last
        raise TypeError("rows._decode must set every Job field: update it (and _DECODED)")


_check_decoded_fields()


def row_to_history(row: sqlite3.Row) -> HistoryEntry:
    return HistoryEntry(
        id=row["id"], job_id=row["job_id"], at=ts(row["at"]) or datetime.now(UTC),
        action=row["action"],
        from_state=JobState(row["from_state"]) if row["from_state"] else None,
        to_state=JobState(row["to_state"]), attempt=row["attempt"], actor=row["actor"],
        reason=row["reason"],
    )
