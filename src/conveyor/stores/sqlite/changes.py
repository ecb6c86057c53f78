"""Compile a :class:`~conveyor.changes.Change` into the SET and WHERE of one SQLite UPDATE.

Column names come only from :data:`~conveyor.changes.SETTABLE_COLUMNS` and flag names only
from :data:`~conveyor.changes.REQUEST_FLAGS` (checked again here, since this is where they
become SQL); every value travels as a bound parameter. The database's clock is this machine's
(every process sharing the file shares it), read once per transaction and passed in as ``now``,
so every timestamp one transaction writes is the same instant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from conveyor import payload
from conveyor.changes import (
    JSON_COLUMNS,
    REQUEST_FLAGS,
    SETTABLE_COLUMNS,
    Change,
    DbNow,
    FirstTime,
    FreshToken,
    Increment,
)
from conveyor.stores.sqlite.rows import epoch


def marks(count: int) -> str:
    """``?, ?, ?``: the placeholders of an IN-list of ``count`` values."""
    return ",".join("?" * count)


def encode_json(column: str, value: Any) -> str | None:
    """How a JSON column is stored: NULL for None, except the NOT NULL checkpoint (``{}``)."""
    if value is None:
        return "{}" if column == "checkpoint" else None
    return payload.dumps(value)


def set_clause(column: str, value: Any, now: float) -> tuple[str, Any]:
    """``column = ?`` and its argument, resolving the store-side markers."""
    if column not in SETTABLE_COLUMNS:
        raise ValueError(f"column {column!r} may not be set")
    if isinstance(value, DbNow):
        return f"{column} = ?", now + value.offset
    if isinstance(value, FirstTime):
        return f"{column} = coalesce({column}, ?)", now
    if isinstance(value, FreshToken):  # 32 hex digits, like a uuid4's hex
        return f"{column} = lower(hex(randomblob(?)))", 16
    if isinstance(value, Increment):
        return f"{column} = {column} + ?", value.by
    if column in JSON_COLUMNS:
        return f"{column} = ?", encode_json(column, value)
    if isinstance(value, bool):
        return f"{column} = ?", int(value)
    if isinstance(value, datetime):
        return f"{column} = ?", epoch(value)
    return f"{column} = ?", value


def _assignments(change: Change, now: float,
                 json_values: Mapping[str, str | None]) -> tuple[list[str], list[Any]]:
    """The SET part; JSON already encoded (outside the write lock) is taken from ``json_values``."""
    sets: list[str] = ["updated_at = ?"]
    args: list[Any] = [now]
    if change.to_state is not None:
        sets.append("state = ?")
        args.append(change.to_state.value)
    for column, value in change.values.items():
        if column in json_values:
            if column not in SETTABLE_COLUMNS:
                raise ValueError(f"column {column!r} may not be set")
            sql, arg = f"{column} = ?", json_values[column]
        else:
            sql, arg = set_clause(column, value, now)
        sets.append(sql)
        args.append(arg)
    return sets, args


def _guards(change: Change, now: float) -> tuple[list[str], list[Any]]:
    """The compare part of the compare-and-set: the WHERE clauses ``change`` asks for."""
    states = sorted(s.value for s in change.when)
    # "+state": the job is found by its id (the unique index); the unary plus keeps SQLite's
    # planner from walking a state index instead, which it prefers for an IN list of ids
    where = ["id = ?", f"+state IN ({marks(len(states))})"]
    args: list[Any] = [change.job_id, *states]
    if change.lease is not None:
        where.append("lease_token = ? AND attempt = ?")
        args.extend((change.lease.token, change.lease.attempt))
    if change.retryable:
        where.append("attempt < max_attempts")
    if change.lease_expired:
        where.append("lease_expires_at < ?")
        args.append(now)
    if change.due:
        where.append("run_at <= ?")
        args.append(now)
    if change.pause_expired:
        where.append("paused_at + pause_timeout < ? AND resume_requested = 0")
        args.append(now)
    for name, test in ((change.flag, 1), (change.unless_flag, 0)):
        if name is None:
            continue
        if name not in REQUEST_FLAGS:
            raise ValueError(f"flag {name!r} is not a request flag")
        where.append(f"{name} = {test}")
    return where, args


def compile_change(template: str, change: Change, now: float,
                   json_values: Mapping[str, str | None] | None = None) -> tuple[str, list[Any]]:
    """The ``apply_change`` statement for ``change`` (its ``{sets}`` and ``{where}`` filled in)
    and its arguments, in order."""
    sets, set_args = _assignments(change, now, json_values or {})
    where, where_args = _guards(change, now)
    statement = template.format(sets=", ".join(sets), where=" AND ".join(where))
    return statement, [*set_args, *where_args]


def change_shape(change: Change, now: float, json_values: Mapping[str, str | None]
                 ) -> tuple[tuple[str, str], list[Any]]:
    """``change``'s SET and WHERE clauses (its shape: the statement without its values) and
    its arguments in placeholder order. Changes of one shape differ in their values only, so
    a batch of them is one statement (:func:`compile_batch`)."""
    sets, set_args = _assignments(change, now, json_values)
    where, where_args = _guards(change, now)
    return (", ".join(sets), " AND ".join(where)), [*set_args, *where_args]


def compile_batch(template: str, shape: tuple[str, str],
                  rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """One UPDATE for several changes of one ``shape``: each row of arguments becomes a row of
    a VALUES table, and each placeholder of the shape reads its column of that row, so every
    job is still matched by its own id, lease token and attempt (a stale one matches nothing).

    The clauses come from :func:`_assignments` and :func:`_guards` only, whose text holds a
    ``?`` nowhere but as a placeholder.
    """
    width = len(rows[0])
    if sum(part.count("?") for part in shape) != width or any(len(r) != width for r in rows):
        raise ValueError("a batch's rows must fill every placeholder of its shape")
    columns = iter(range(1, width + 1))
    sets, where = [re.sub(r"\?", lambda _: f"batch.column{next(columns)}", part)
                   for part in shape]
    values = ", ".join([f"({marks(width)})"] * len(rows))
    statement = template.format(sets=sets, values=values, where=where)
    return statement, [arg for row in rows for arg in row]


def compile_claim(template: str, change: Change, job_ids: Sequence[str],
                  now: float) -> tuple[str, list[Any]]:
    """``change`` (a claim's start or resume) made to every job of ``job_ids`` in one
    statement: the same SET and guards, with ``id IN (...)`` for the one id."""
    sets, set_args = _assignments(change, now, {})
    where, where_args = _guards(change, now)
    where[0] = f"id IN ({marks(len(job_ids))})"
    statement = template.format(sets=", ".join(sets), where=" AND ".join(where))
    return statement, [*set_args, *job_ids, *where_args[1:]]
