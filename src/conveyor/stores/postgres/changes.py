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

import functools
import itertools
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
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
    ClaimStart,
    DbNow,
    FirstTime,
    Increment,
    marker_kind,
    shape_key,
)
from conveyor.lifecycle import JobState
from conveyor.stores.postgres.rows import TextArray


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


@functools.lru_cache(maxsize=64)
def states_param(when: frozenset[JobState]) -> TextArray:
    """The states a change moves from, as the ``text[]`` it binds: encoded once per set (a
    worker sends the same one or two sets with every change it writes)."""
    return TextArray(sorted(state.value for state in when))


def guards(change: Change, params: Params) -> Iterator[sql.Composable]:
    """The compare part of the compare-and-set: the WHERE clauses ``change`` asks for."""
    yield sql.SQL("jobs.id = old.old_id")
    yield sql.SQL("jobs.state = ANY({}::text[])").format(params.add(states_param(change.when)))
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


def set_values(values: Mapping[str, Any]) -> list[Any]:
    """The parameters :func:`assignments` binds for ``values``, in the order it names them,
    without composing any SQL (a cached statement only needs these)."""
    bound: list[Any] = []
    for column, value in values.items():
        kind = marker_kind(value)  # one dict lookup for a plain value (most of them)
        if kind is None:
            if column in JSON_COLUMNS:
                bound.append(json_value(column, value))
            else:
                bound.append(aware(value) if isinstance(value, datetime) else value)
        elif kind is DbNow:
            bound.append(float(value.offset))
        elif kind is Increment:
            bound.append(value.by)
        elif kind is not FirstTime:
            bound.append(value)
    return bound


def bound_values(change: Change) -> list[Any]:
    """The parameters ``v0``, ``v1``... that :func:`_compile` binds for ``change``, in order."""
    bound = set_values(change.values)
    if change.to_state is not None:
        bound.append(change.to_state.value)
    bound.append(states_param(change.when))
    if change.lease is not None:
        bound += [change.lease.token, change.lease.attempt]
    return bound


_NAMES = tuple(f"v{n}" for n in range(64))


def _names(count: int) -> Sequence[str]:
    """``v0``... ``v{count - 1}``, the names :class:`Params` gives bound values in order."""
    return _NAMES[:count] if count <= len(_NAMES) else [f"v{n}" for n in range(count)]


#: Compiled statements by shape; shapes are few (a worker's completions, a claim), the cap is
#: insurance against a caller making endless new ones. Statements are rendered once: the
#: SQL of a shape never changes, and only ASCII names go into it.
CACHE_SIZE = 256
_cache: dict[Hashable, str] = {}
_cache_lock = threading.Lock()


def cached(key: Hashable, build: Callable[[], sql.Composed]) -> str:
    """The statement of ``key``, built and rendered on its first use."""
    found = _cache.get(key)
    if found is not None:
        return found
    statement = build().as_string(None)
    with _cache_lock:
        while len(_cache) >= CACHE_SIZE:
            del _cache[next(iter(_cache))]  # the oldest shape
        _cache[key] = statement
    return statement


def checked(composed: sql.Composed, params: Params, bound: Sequence[Any]) -> sql.Composed:
    """``composed``, once its parameters are seen to be ``bound`` in order: what the cached
    statement is sent with from then on must be what compiling it would have bound."""
    names = [name for name in params.values if name.startswith("v")]
    if names != list(_names(len(bound))) or not all(
            _same_value(params.values[name], value)
            for name, value in zip(names, bound, strict=True)):
        raise AssertionError("a cached shape's parameters differ from its compiled ones")
    return composed


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, Jsonb) and isinstance(b, Jsonb):
        return bool(a.obj == b.obj)
    return type(a) is type(b) and bool(a == b)


def compile_batch(template: str, changes: Sequence[Change]
                  ) -> tuple[str, dict[str, Any]] | None:
    """One ``apply_change_batch`` statement for ``changes`` (to distinct jobs, of one shape:
    compiled alone, each gives the same statement), reading each row's values from an
    ``unnest`` of arrays; or None when they are not of one shape, or a value that differs
    from row to row has no array type here (the caller then sends them one by one)."""
    key = shape_key(changes[0])
    if any(shape_key(change) != key for change in changes[1:]):
        return None
    return batch_of_shape(template, key, changes)


def batch_of_shape(template: str, key: Hashable, changes: Sequence[Change]
                   ) -> tuple[str, dict[str, Any]] | None:
    """:func:`compile_batch` for changes already known to share the shape ``key``."""
    rows = [bound_values(change) for change in changes]
    first = rows[0]
    params: dict[str, Any] = {}
    columns: dict[str, str] = {}  # the varying values' names, and their SQL types
    for name, values in zip(_names(len(first)), zip(*rows, strict=True), strict=True):
        head = values[0]
        if all(_same(value, head) for value in values):
            params[name] = head
            continue
        kinds = {type(value) for value in values} - {type(None)}
        if len(kinds) > 1 or (kinds and next(iter(kinds)) not in _COLUMN_TYPES):
            return None
        columns[name] = _COLUMN_TYPES[next(iter(kinds))] if kinds else "text"
        params[f"a_{name}"] = list(values)
    for name in _ROW_COLUMNS:
        params[f"a_{name}"] = [getattr(change, name) for change in changes]
    statement = cached((template, key, tuple(columns.items())),
                       lambda: _compile_batch(template, changes[0], columns, first))
    return statement, params


def _compile_batch(template: str, change: Change, types: Mapping[str, str],
                   bound: Sequence[Any]) -> sql.Composed:
    varying = sorted({*types, *_ROW_COLUMNS})
    every = {**types, **dict.fromkeys(_ROW_COLUMNS, "text")}
    batch = BatchParams(_base(change), frozenset(varying))
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(f"a_{name}"), sql.SQL(every[name]))
        for name in varying)
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in varying)
    composed = _compile(template, change, batch, arrays=arrays, columns=columns)
    return checked(composed, batch, bound)


def _same(a: Any, b: Any) -> bool:
    """Equal values (JSON values compared by what they hold, not by their wrapper)."""
    if isinstance(a, Jsonb) or isinstance(b, Jsonb):
        return False  # results and checkpoints: per row
    return type(a) is type(b) and a == b


def compile_change(template: str, change: Change) -> tuple[str, dict[str, Any]]:
    """The ``apply_change`` statement for ``change`` and its parameters.

    A reaper's change (one guarded by an expired lease or pause) skips a row another
    transaction has locked instead of waiting for it: that transaction may belong to a worker
    cut off from the network, and a reaper stuck behind it would stop every other duty of its
    worker. The skipped job is refused this pass and looked at again on the next.
    ``moment`` (the time the change takes effect) is left ``None``: the store sets it for the
    later changes of one transaction.
    """
    bound = bound_values(change)

    def build() -> sql.Composed:
        params = Params({**_base(change), "moment": None})
        return checked(_compile(template, change, params), params, bound)

    statement = cached((template, shape_key(change)), build)
    params = {**_base(change), "moment": None}
    params.update(zip(_names(len(bound)), bound, strict=True))
    return statement, params


def compile_claim(template: str, start: ClaimStart, queued: bool) -> tuple[str, dict[str, Any]]:
    """A claim query's ``{sets}`` (the core's start values, with a fresh token the database
    makes per job: a uuid4) and ``{queue_filter}`` (``queued``: only the given queues), and
    the parameters those bind (the query's own are the caller's)."""
    values = start.values
    bound = [JobState.RUNNING.value, *set_values(values)]

    def build() -> sql.Composed:
        params = Params()
        sets = [
            sql.SQL("state = {}").format(params.add(JobState.RUNNING.value)),
            *assignments(values, params),
            sql.SQL("lease_token = replace(gen_random_uuid()::text, '-', '')"),
        ]
        queue_filter = sql.SQL("AND queue = ANY(%(queues)s::text[])" if queued else "")
        composed = sql.SQL(template).format(queue_filter=queue_filter,
                                            sets=sql.SQL(", ").join(sets))
        return checked(composed, params, bound)

    kinds = tuple((column, marker_kind(value)) for column, value in values.items())
    statement = cached((template, queued, kinds), build)
    return statement, dict(zip(_names(len(bound)), bound, strict=True))
