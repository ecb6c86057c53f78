"""Statements and parameters the sync store and the async store (:mod:`.aio`) both run.

Built here once, so the two clients can never disagree on what a query means; each store only
sends them over its own kind of connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from conveyor import payload
from conveyor.errors import ConfigurationError
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobProgress
from conveyor.stores.base import JobQuery, NewJob, inserted_job
from conveyor.stores.postgres import wire
from conveyor.stores.postgres.changes import aware
from conveyor.stores.postgres.config import PgSettings
from conveyor.stores.postgres.rows import TextArray, utc

_NO_PROGRESS = JobProgress()
#: The states a job stops in, announced on the stop channel (what Conveyor.wait waits for).
#: Encoded once (:class:`~.rows.TextArray`): every change statement sends it.
STOPS = TextArray(sorted(s.value for s in (JobState.COMPLETED, JobState.FAILED,
                                           JobState.CANCELLED, JobState.PAUSED)))


def _backoffs(jobs: Sequence[NewJob]) -> list[str]:
    """Each job's backoff as JSON text, encoded once per policy (a batch shares one)."""
    encoded: dict[int, str] = {}
    out = []
    for new in jobs:
        text = new.backoff_json or encoded.get(id(new.backoff))
        if text is None:
            text = encoded[id(new.backoff)] = payload.dumps(new.backoff)
        out.append(text)
    return out


def insert_params(jobs: Sequence[NewJob], actor: str, channel: str) -> dict[str, Any]:
    """The ``insert_jobs`` parameters: one array per column, in input order."""
    progress = [new.progress or _NO_PROGRESS for new in jobs]
    return {
        "ids": [new.id for new in jobs],
        "job_types": [new.job_type for new in jobs],
        "queues": [new.queue for new in jobs],
        "priorities": [new.priority for new in jobs],
        "params": [new.params_text() for new in jobs],
        "max_attempts": [new.max_attempts for new in jobs],
        "run_ats": [aware(new.run_at) if new.run_at else None for new in jobs],
        "delays": [new.delay for new in jobs],
        "timeouts": [new.timeout for new in jobs],
        "pause_timeouts": [new.pause_timeout for new in jobs],
        "backoffs": _backoffs(jobs),
        "current_steps": [p.current_step for p in progress],
        "total_steps": [p.total_steps for p in progress],
        "checkpoints": [payload.dumps(p.last_checkpoint) if p.last_checkpoint else "{}"
                        for p in progress],
        "requeued_froms": [new.requeued_from for new in jobs],
        "unique_keys": [new.unique_key for new in jobs],
        "traces": [new.trace for new in jobs],
        "limit_keys": [new.limit_key for new in jobs],
        "actor": actor,
        "channel": channel,
    }


_ALL_COLUMNS = "SELECT inserted.* FROM inserted"
#: What an insert without unique keys returns: only what the server decided, the two clocks
#: (``run_at`` as exact microseconds after ``created_at``); see :func:`inserted_jobs`.
BRIEF_COLUMNS = ("SELECT inserted.created_at, (extract(epoch FROM inserted.run_at - "
                 "inserted.created_at) * 1000000)::bigint AS due_in_us FROM inserted")


def brief(insert_jobs: str) -> str:
    """The ``insert_jobs`` statement returning :data:`BRIEF_COLUMNS` instead of whole rows:
    decoding 30 columns and three JSON values per job cost more than the insert."""
    if insert_jobs.count(_ALL_COLUMNS) != 1:
        raise AssertionError("insert_jobs no longer ends with " + _ALL_COLUMNS)
    return insert_jobs.replace(_ALL_COLUMNS, BRIEF_COLUMNS)


_CHANGED_ROW = "SELECT changed.*, CASE"
_CHANGED_END = "\nFROM changed"
#: What the ``changed`` step of a brief statement returns instead of every column: what its
#: history row, its stop's announcement and the brief row read, and the whole row as one
#: composite value (``whole``) for a job with dependents only.
_RETURNING_ALL = "RETURNING jobs.*, old.old_state"
_RETURNING_BRIEF = ("RETURNING jobs.id, jobs.state, jobs.attempt, jobs.watched, "
                    "jobs.has_dependents, CASE WHEN jobs.has_dependents THEN jobs END AS whole, "
                    "old.old_state")
#: What a landed change gives back when its caller reads no rows (``landed_rows=False``, a
#: worker whose events nobody subscribes to): the whole row (``whole``, one composite value)
#: only for a job with dependents (the one row the caller then decodes, see
#: :func:`conveyor.stores.base.landed`; the worker path spreads it into columns, see
#: ``worker_path.spread_whole``), NULL otherwise; the job's id and whether it has dependents
#: always. psycopg loads every value it is sent, times and JSON in Python: a finished row's
#: dozen of those cost the worker more than the rest of its share of the statement, for a row
#: it then threw away. The whole row travels through the statement as one composite value and
#: stays one: each step that passes on a row of all the table's columns costs the server a
#: tuple descriptor of them (a catalog lookup per column) in every execution, several times
#: the cost of the update itself, and spreading it at the end made the result 37 columns
#: wider for NULLs (their descriptors, and a RowDescription of them with every result):
#: about 110,000 server instructions of a one-slot worker's transaction.
_BRIEF_ROW = "SELECT changed.whole, changed.id, changed.has_dependents{numbered}, CASE"
_BRIEF_END = "\nFROM changed"


def brief_change(apply_change: str) -> str:
    """The ``apply_change`` or ``apply_change_batch`` statement returning brief rows
    (:data:`_BRIEF_ROW`, with ``batch_n`` for a batch) instead of whole ones; ``unannounced``
    stays: evaluating it is what sends a stop's NOTIFY. Kept short: psycopg parses a statement
    of more than 4 KB again at every execution instead of once."""
    if (apply_change.count(_CHANGED_ROW) != 1 or apply_change.count(_RETURNING_ALL) != 1
            or not apply_change.rstrip(";\n ").endswith(_CHANGED_END)):
        raise AssertionError("apply_change no longer ends with " + _CHANGED_ROW)
    numbered = ", changed.batch_n" if "batch_n" in apply_change else ""
    head, _, _ = apply_change.rstrip(";\n ").rpartition(_CHANGED_END)
    head = head.replace(_RETURNING_ALL, _RETURNING_BRIEF)
    return head.replace(_CHANGED_ROW, _BRIEF_ROW.format(numbered=numbered)) + _BRIEF_END


def one_job_params(new: NewJob, actor: str, channel: str) -> dict[str, Any]:
    """The ``insert_job`` parameters (one job without a unique key)."""
    progress = new.progress or _NO_PROGRESS
    return {
        "id": new.id, "job_type": new.job_type, "queue": new.queue, "priority": new.priority,
        "params": new.params_text(),
        "max_attempts": new.max_attempts,
        "run_at": aware(new.run_at) if new.run_at else None, "delay": new.delay,
        "timeout": new.timeout, "pause_timeout": new.pause_timeout,
        "backoff": new.backoff_json or payload.dumps(new.backoff),
        "current_step": progress.current_step, "total_steps": progress.total_steps,
        "checkpoint": (payload.dumps(progress.last_checkpoint) if progress.last_checkpoint
                       else "{}"),
        "requeued_from": new.requeued_from, "trace": new.trace, "limit_key": new.limit_key,
        "actor": actor, "channel": channel,
    }


#: ``insert_job``'s placeholders, in the order :func:`one_job_text` writes their values.
ONE_JOB_ORDER = ("id", "job_type", "queue", "priority", "params", "max_attempts", "timeout",
                 "pause_timeout", "backoff", "current_step", "total_steps", "checkpoint",
                 "requeued_from", "trace", "limit_key", "run_at", "delay", "actor", "channel")
text = wire.text  # each value as wire.one writes it (None as None)


#: :func:`one_job_text`'s values for each shape of job seen (its type, its options, the
#: actor and the channel: see :func:`one_job_text`), the places each job fills itself (id,
#: params, trace, limit key) at None. At most :data:`SHAPES_KEPT`: a job type's plain
#: enqueue is one shape; past that, new shapes are written value by value.
_SHAPES: dict[tuple[Any, ...], list[bytes | None]] = {}
SHAPES_KEPT = 64
#: The places of ``insert_job``'s values a job of a kept shape fills itself.
_ID, _PARAMS, _TRACE, _LIMIT_KEY = (ONE_JOB_ORDER.index(name)
                                    for name in ("id", "params", "trace", "limit_key"))


def one_job_text(new: NewJob, actor: str, channel: str) -> list[bytes | None] | None:
    """:func:`one_job_params`'s values as :func:`.wire.one` would send them (text, see
    :func:`.wire.text`), in ``insert_job``'s placeholder order (:data:`ONE_JOB_ORDER`, checked
    against the statement in the tests), for :func:`.wire.one_text`; None if one of them is of
    a type ``one`` does not send as text (the caller then sends the params dict).

    Why: building the dict and then encoding it value by value was a tenth of the client's
    work per ``enqueue()``; most of these values are text or None, written here directly.
    And a job without run_at, delay, progress or requeued_from (most: every plain enqueue of
    a type shares its options) copies its shape's values (:data:`_SHAPES`) and fills in its
    own four: writing each of the 19 values again was about 18,000 instructions per
    ``enqueue()``, this is about 3,000. The shape's key holds each option's value and the
    type of each number (``1`` and ``1.0``, ``0`` and ``False``, are equal keys but not the
    same text); a shape is kept only when its values were all written as text, its backoff
    came encoded (``backoff_json``: keyed by its text, not by a dict), and neither timeout
    is zero (``0.0`` and ``-0.0`` are equal keys; the core refuses both anyway)."""
    key = None
    if new.run_at is None and new.delay is None and new.progress is None and \
            new.requeued_from is None:
        timeout, pause_timeout = new.timeout, new.pause_timeout
        key = (new.job_type, new.queue, new.priority, new.max_attempts, timeout, pause_timeout,
               new.backoff_json, actor, channel, type(new.priority), type(new.max_attempts),
               type(timeout), type(pause_timeout))
        shape = _SHAPES.get(key)
        if shape is not None:
            return _with_own(shape.copy(), new)
        if not (new.backoff_json and timeout != 0 and pause_timeout != 0):
            key = None
    shape = _shape_text(new, actor, channel)
    if shape is None:
        return None
    if key is not None and len(_SHAPES) < SHAPES_KEPT:
        _SHAPES[key] = shape.copy()
    return _with_own(shape, new)


def _with_own(values: list[bytes | None], new: NewJob) -> list[bytes | None] | None:
    """``values`` (a shape's, see :func:`_shape_text`) with ``new``'s own id, params, trace
    and limit key written in; None if one is of a type not sent as text."""
    try:
        values[_ID] = new.id.encode()
        values[_PARAMS] = new.params_text().encode()
        if new.trace is not None:
            values[_TRACE] = text(new.trace)
        if new.limit_key is not None:
            values[_LIMIT_KEY] = text(new.limit_key)
    except (KeyError, AttributeError):  # not a type sent as text: as one_job_params has it
        return None
    return values


def _shape_text(new: NewJob, actor: str, channel: str) -> list[bytes | None] | None:
    """:func:`one_job_text`'s values written value by value, but for the places each job
    fills itself (:func:`_with_own`), left None."""
    progress = new.progress or _NO_PROGRESS
    try:
        return [
            None, new.job_type.encode(), new.queue.encode(),
            text(new.priority),
            None,
            text(new.max_attempts),
            text(new.timeout), text(new.pause_timeout),
            (new.backoff_json or payload.dumps(new.backoff)).encode(),
            text(progress.current_step), text(progress.total_steps),
            (payload.dumps(progress.last_checkpoint).encode() if progress.last_checkpoint
             else b"{}"),
            text(new.requeued_from), None, None,
            None if not new.run_at else text(aware(new.run_at)), text(new.delay),
            actor.encode(), channel.encode(),
        ]
    except (KeyError, AttributeError):  # not a type sent as text: as one_job_params has it
        return None


def inserted_jobs(jobs: Sequence[NewJob], rows: Sequence[Mapping[str, Any]]) -> list[Job]:
    """The jobs an insert returning :data:`BRIEF_COLUMNS` stored, in input order."""
    out = []
    for new, row in zip(jobs, rows, strict=True):
        created = utc(row["created_at"])
        assert created is not None
        out.append(inserted_job(new, created,
                                created + timedelta(microseconds=row["due_in_us"])))
    return out


#: From this many jobs on, a batch of plain jobs goes in by COPY (see :func:`copy_job_row`); a
#: smaller one is one ``insert_jobs`` statement (a COPY costs a few more round trips).
COPY_FROM = 64
#: The types psycopg sends ``copy_jobs``'s columns as. A jsonb column goes in jsonb's binary
#: form, a version byte then the JSON text, which psycopg's text dumper (C code, in the
#: connection's encoding) writes as it is; psycopg's own jsonb dumper would encode again.
COPY_JOB_TYPES = ("text", "text", "text", "int4", "text", "int4", "float8", "float8", "text",
                  "int8", "int8", "text", "text", "text", "text")
COPY_HISTORY_TYPES = ("text", "text", "text", "int4", "text")
_JSONB_V1 = "\x01"
_EMPTY_JSONB = _JSONB_V1 + "{}"
_PENDING_STATE = JobState.PENDING.value


def copies(jobs: Sequence[NewJob]) -> bool:
    """Whether ``jobs`` go in by COPY: a large batch whose every row is known without the
    server's clock (no run_at or delay: those are computed from now()) and without reading
    other rows (no unique key, no dependency)."""
    return len(jobs) >= COPY_FROM and not any(
        new.run_at is not None or new.delay is not None or new.unique_key is not None
        or new.depends_on for new in jobs)


def copy_job_row(new: NewJob) -> tuple[Any, ...]:
    """One ``copy_jobs`` row (in :data:`COPY_JOB_TYPES`); JSON already encoded by the core is
    sent as it is."""
    progress = new.progress or _NO_PROGRESS
    params = new.params_text()
    backoff = new.backoff_json or payload.dumps(new.backoff)
    return (
        new.id, new.job_type, new.queue, new.priority,
        _EMPTY_JSONB if params == "{}" else _JSONB_V1 + params, new.max_attempts,
        new.timeout, new.pause_timeout,
        _EMPTY_JSONB if backoff == "{}" else _JSONB_V1 + backoff,
        progress.current_step, progress.total_steps,
        _JSONB_V1 + payload.dumps(progress.last_checkpoint) if progress.last_checkpoint
        else _EMPTY_JSONB, new.requeued_from, new.trace, new.limit_key)


def copy_history_row(new: NewJob, actor: str) -> tuple[Any, ...]:
    """One ``copy_history`` row (in :data:`COPY_HISTORY_TYPES`): the job's 'create'."""
    return (new.id, "create", _PENDING_STATE, 0, actor)


#: The term that names the partial indexes holding the states a list asks for (pending aside:
#: no index holds pending jobs, their list walks the table newest first), by (running asked
#: for, another state asked for): running jobs are in ``jobs_lease``, the other states in
#: ``jobs_state_seq`` (migration 0014), each term the very predicate of its index.
_INDEXED_STATES: dict[tuple[bool, bool], sql.Composable] = {
    (True, False): sql.SQL("state = 'running'"),
    (False, True): sql.SQL("state NOT IN ('pending', 'running')"),
    # both: each side of the OR implies its index's predicate, so the planner may read each
    # index (a BitmapOr) and sort the rows it finds
    (True, True): sql.SQL("(state = 'running' OR (state = ANY({}::text[]) "
                          "AND state NOT IN ('pending', 'running')))").format(
                              sql.Placeholder("state")),
}


def filter_terms(query: JobQuery) -> tuple[list[sql.Composable], dict[str, Any]]:
    """The WHERE terms and parameters of ``query``'s filters (column names whitelisted here).

    States other than pending and running are in ``jobs_state_seq`` (partial, migrations 0012
    and 0014), running jobs in ``jobs_lease``: when pending is not asked for, the terms say
    which of the two indexes holds the jobs asked for (see :data:`_INDEXED_STATES`).

    The id search compares the first or the last characters exactly (a listing shows an id's
    end, see :func:`conveyor.ids.short_id`): a range on the id index would follow the
    database's collation, which may order the dashes of ids in its own way.
    """
    where: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for column, values in (("state", {s.value for s in query.states}),
                           ("job_type", set(query.job_types)),
                           ("queue", set(query.queues))):
        if column == "state" and len(values) == 1:
            # one state: an equality, which walks jobs_state_seq in seq order and stops at the
            # page; PostgreSQL 15 reads `= ANY(...)` on an index's first column unordered, so
            # a list of a rare state walked the table newest first instead
            where.append(sql.SQL("state = {}::text").format(sql.Placeholder(column)))
            (params[column],) = values
        elif values:
            where.append(sql.SQL("{} = ANY({}::text[])").format(
                sql.Identifier(column), sql.Placeholder(column)))
            params[column] = sorted(values)
    if query.states and JobState.PENDING not in query.states:
        # a prepared statement's generic plan may use a partial index only when the query's
        # own terms imply the index's predicate
        where.append(_INDEXED_STATES[JobState.RUNNING in query.states,
                                     bool(query.states - {JobState.RUNNING})])
    if query.id_prefix is not None:
        where.append(sql.SQL("(left(id, %(id_length)s) = %(id_prefix)s "
                             "OR right(id, %(id_length)s) = %(id_prefix)s)"))
        params.update(id_prefix=query.id_prefix, id_length=len(query.id_prefix))
    for name, column, operator in (("created_after", "created_at", ">="),
                                   ("created_before", "created_at", "<"),
                                   ("finished_after", "finished_at", ">="),
                                   ("finished_before", "finished_at", "<")):
        if getattr(query, name) is not None:
            where.append(sql.SQL("{} {} {}").format(sql.Identifier(column), sql.SQL(operator),
                                                    sql.Placeholder(name)))
            params[name] = getattr(query, name)
    if query.text is not None:
        where.append(sql.SQL("(strpos(lower(params::text), %(text)s) > 0 "
                             "OR strpos(lower(coalesce(error::text, '')), %(text)s) > 0)"))
        params["text"] = query.text
    return where, params


def where_clause(where: list[sql.Composable]) -> sql.Composable:
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")


def list_statement(template: str, query: JobQuery) -> tuple[sql.Composed, dict[str, Any]]:
    """The ``list_jobs`` statement for ``query``: its filters, its cursor and its limit."""
    where, params = filter_terms(query)
    params["limit"] = max(0, query.limit)
    if query.before is not None:
        where.append(sql.SQL(
            "seq < coalesce((SELECT seq FROM jobs WHERE id = %(before)s), -1)"))
        params["before"] = query.before
    return sql.SQL(template).format(where=where_clause(where)), params


def count_statement(queries: Mapping[str, str], queue: str | None) -> tuple[str, dict[str, Any]]:
    """The counts by state, of every job or of one queue's: two statements, since one with
    ``queue IS NULL OR ...`` scanned the whole table under a prepared statement's generic
    plan even when a queue was given."""
    if queue is None:
        return queries["count_by_state"], {}
    return queries["count_by_state_in_queue"], {"queue": queue}


def apply_params(params: dict[str, Any], moment: Any, settings: PgSettings) -> dict[str, Any]:
    """One compiled change's parameters, with the transaction's moment and the stop channel."""
    return {**params, "moment": moment, "stops": STOPS, "stop_channel": settings.stop_channel}


def check_caller_connection(found: Sequence[dict[str, Any]], settings: PgSettings) -> None:
    """Refuse a caller's connection to another database, or to one without the store's schema
    (the ``caller_connection`` query's answer): its jobs would never reach our workers."""
    database = conninfo_to_dict(settings.conninfo).get("dbname")
    row = found[0]
    if database is not None and row["database"] != database:
        raise ConfigurationError(
            f"connection= is to database {row['database']!r}, not the store's ({database!r}): "
            "enqueue in a transaction of the store's own database")
    if not row["present"]:
        raise ConfigurationError(
            f"connection= has no conveyor schema {settings.schema!r} (run migrate() first, or "
            "pass a connection to the store's database)")
