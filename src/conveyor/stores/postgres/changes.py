"""Compile a :class:`~conveyor.changes.Change` into the SET and WHERE of one UPDATE.

Column names come only from :data:`~conveyor.changes.SETTABLE_COLUMNS` (checked again
here, since this is where they become SQL) and are quoted with :class:`psycopg.sql.Identifier`;
every value travels as a bound parameter. Time is always the database's clock, so hosts with
skewed clocks still agree on when a lease ran out. A change is stamped with the moment it took
effect: ``clock_timestamp()`` read once, after the row lock was granted (``moment.at`` in the
``apply_change`` query), not the transaction's start (``now()``), which may be long before
when the change had to wait for a lock. Every timestamp one change writes (``finished_at``,
``updated_at``, the history row's ``at``, the lease check) is that one instant; the later
changes of a multi-change transaction reuse the first one's, so one transaction is one time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from conveyor import payload
from conveyor.changes import (
    JSON_COLUMNS,
    REQUEST_FLAGS,
    SETTABLE_COLUMNS,
    Change,
    DbNow,
    FirstTime,
    Increment,
)


class Params:
    """Named query parameters with generated names, so composed fragments never collide."""

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self.values: dict[str, Any] = dict(initial or {})
        self._count = itertools.count()

    def add(self, value: Any) -> sql.Composable:
        name = f"v{next(self._count)}"
        self.values[name] = value
        return self.ref(name)

    def ref(self, name: str) -> sql.Composable:
        return sql.Placeholder(name)


class BatchParams(Params):
    """The parameters of one statement for a batch of same-shaped changes: each name whose
    value differs from row to row is read from the row's column of the ``batch`` table
    (``batch.v3``); the others stay ordinary parameters."""

    def __init__(self, initial: Mapping[str, Any], varying: frozenset[str]) -> None:
        super().__init__(initial)
        self.varying = varying

    def ref(self, name: str) -> sql.Composable:
        if name in self.varying:
            return sql.Identifier("batch", name)
        return sql.Placeholder(name)


def json_value(column: str, value: Any) -> Jsonb | None:
    """How a JSON column is written: ``None`` is SQL NULL, except for the NOT NULL checkpoint."""
    if value is None:
        return Jsonb({}) if column == "checkpoint" else None
    return Jsonb(value, dumps=payload.dumps)


def aware(value: datetime) -> datetime:
    """Refuse naive datetimes: PostgreSQL would read them in the session's time zone."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use an aware UTC datetime")
    return value


#: The time of a claim: one autocommit statement that never waits (SKIP LOCKED).
NOW = sql.SQL("now()")
#: The time of a change: when its row lock was granted (see the module docstring).
MOMENT = sql.SQL("moment.at")


def assignment(column: str, value: Any, params: Params,
               now: sql.Composable = NOW) -> sql.Composed:
    """``column = <value>``, resolving the store-side markers to SQL."""
    if column not in SETTABLE_COLUMNS:
        raise ValueError(f"column {column!r} may not be set")
    col = sql.Identifier(column)
    if isinstance(value, DbNow):
        return sql.SQL("{} = {} + {}::float8 * interval '1 second'").format(
            col, now, params.add(float(value.offset)))
    if isinstance(value, FirstTime):
        return sql.SQL("{} = coalesce({}, {})").format(col, col, now)
    if isinstance(value, Increment):
        return sql.SQL("{} = {} + {}::int").format(col, col, params.add(value.by))
    if column in JSON_COLUMNS:
        return sql.SQL("{} = {}").format(col, params.add(json_value(column, value)))
    if isinstance(value, datetime):
        value = aware(value)
    return sql.SQL("{} = {}").format(col, params.add(value))


def assignments(values: Mapping[str, Any], params: Params,
                now: sql.Composable = NOW) -> Iterator[sql.Composable]:
    yield sql.SQL("updated_at = {}").format(now)
    for column, value in values.items():
        yield assignment(column, value, params, now)


def guards(change: Change, params: Params) -> Iterator[sql.Composable]:
    """The compare part of the compare-and-set: the WHERE clauses ``change`` asks for."""
    yield sql.SQL("jobs.id = old.old_id")
    yield sql.SQL("jobs.state = ANY({}::text[])").format(
        params.add(sorted(state.value for state in change.when)))
    if change.lease is not None:
        yield sql.SQL("jobs.lease_token = {} AND jobs.attempt = {}").format(
            params.add(change.lease.token), params.add(change.lease.attempt))
    if change.retryable:
        yield sql.SQL("jobs.attempt < jobs.max_attempts")
    if change.lease_expired:
        yield sql.SQL("jobs.lease_expires_at < {}").format(MOMENT)
    if change.due:
        yield sql.SQL("jobs.run_at <= {}").format(MOMENT)
    if change.pause_expired:
        yield sql.SQL("jobs.paused_at + jobs.pause_timeout * interval '1 second' < {} "
                      "AND NOT jobs.resume_requested").format(MOMENT)
    for name, test in ((change.flag, "TRUE"), (change.unless_flag, "FALSE")):
        if name is None:
            continue
        if name not in REQUEST_FLAGS:
            raise ValueError(f"flag {name!r} is not a request flag")
        yield sql.SQL("{} IS " + test).format(sql.Identifier("jobs", name))


def _compile(template: str, change: Change, params: Params,
             **parts: sql.Composable) -> sql.Composed:
    sets = list(assignments(change.values, params, MOMENT))
    if change.to_state is not None:
        sets.append(sql.SQL("state = {}").format(params.add(change.to_state.value)))
    where = list(guards(change, params))
    skip = change.lease_expired or change.pause_expired
    return sql.SQL(template).format(
        sets=sql.SQL(", ").join(sets), where=sql.SQL(" AND ").join(where),
        lock=sql.SQL("FOR UPDATE SKIP LOCKED" if skip else "FOR UPDATE"), **parts)


def _base(change: Change) -> dict[str, Any]:
    return {"job_id": change.job_id, "action": change.action, "actor": change.actor,
            "reason": change.reason}


#: The SQL type of a batch column, by the Python type of its values (None aside).
_COLUMN_TYPES: dict[type, str] = {str: "text", int: "int8", float: "float8", bool: "bool",
                                  Jsonb: "jsonb"}
#: Batch columns every batch has (the job and its history row's words).
_ROW_COLUMNS = ("job_id", "action", "actor", "reason")


def compile_batch(template: str, changes: Sequence[Change]
                  ) -> tuple[sql.Composed, dict[str, Any]] | None:
    """One ``apply_change_batch`` statement for ``changes`` (to distinct jobs, of one shape:
    compiled alone, each gives the same statement), reading each row's values from an
    ``unnest`` of arrays; or None when they are not of one shape, or a value that differs
    from row to row has no array type here (the caller then sends them one by one)."""
    rows = []
    for change in changes:
        params = Params(_base(change))
        rows.append((_compile(_SINGLE_SHAPE, change, params), params.values))
    shape, first = rows[0]
    if any(statement != shape or values.keys() != first.keys() for statement, values in rows):
        return None
    varying = {name for name in first if name in _ROW_COLUMNS
               or any(not _same(values[name], first[name]) for _, values in rows)}
    types: dict[str, str] = {}
    for name in sorted(varying):
        kinds = {type(values[name]) for _, values in rows} - {type(None)}
        if len(kinds) > 1 or (kinds and next(iter(kinds)) not in _COLUMN_TYPES):
            return None
        types[name] = _COLUMN_TYPES[next(iter(kinds))] if kinds else "text"
    batch = BatchParams(_base(changes[0]), frozenset(varying))
    names = sorted(varying)
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(f"a_{name}"), sql.SQL(types[name]))
        for name in names)
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in names)
    statement = _compile(template, changes[0], batch, arrays=arrays, columns=columns)
    values = {name: value for name, value in batch.values.items() if name not in varying}
    values.update({f"a_{name}": [row[name] for _, row in rows] for name in names})
    return statement, values


def _same(a: Any, b: Any) -> bool:
    """Equal values (JSON values compared by what they hold, not by their wrapper)."""
    if isinstance(a, Jsonb) or isinstance(b, Jsonb):
        return False  # results and checkpoints: per row
    return type(a) is type(b) and a == b


#: What a change compiles to when only its shape matters (grouping changes for a batch).
_SINGLE_SHAPE = "{sets} WHERE {where} {lock}"


def shape_of(change: Change) -> str:
    """What changes must share to go in one batch statement (their compiled SQL)."""
    return repr(_compile(_SINGLE_SHAPE, change, Params(_base(change))))


def compile_change(template: str, change: Change) -> tuple[sql.Composed, dict[str, Any]]:
    """The ``apply_change`` statement for ``change`` and its parameters.

    A reaper's change (one guarded by an expired lease or pause) skips a row another
    transaction has locked instead of waiting for it: that transaction may belong to a worker
    cut off from the network, and a reaper stuck behind it would stop every other duty of its
    worker. The skipped job is refused this pass and looked at again on the next.
    ``moment`` (the time the change takes effect) is left ``None``: the store sets it for the
    later changes of one transaction.
    """
    params = Params({**_base(change), "moment": None})
    return _compile(template, change, params), params.values
