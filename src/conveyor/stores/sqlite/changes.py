"""Compile a :class:`~conveyor.changes.Change` into the SET and WHERE of one SQLite UPDATE.

Column names come only from :data:`~conveyor.changes.SETTABLE_COLUMNS` and flag names only
from :data:`~conveyor.changes.REQUEST_FLAGS` (checked again here, since this is where they
become SQL); every value travels as a bound parameter. The database's clock is this machine's
(every process sharing the file shares it), read once per transaction and passed in as ``now``,
so every timestamp one transaction writes is the same instant.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

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
    marker_kind,
)
from conveyor.stores.sqlite.rows import epoch


def marks(count: int) -> str:
    """``?, ?, ?``: the placeholders of an IN-list of ``count`` values."""
    return ",".join("?" * count)


#: What a JSON column stores for None: NULL, except the NOT NULL checkpoint (``{}``).
_JSON_NONE: dict[str, str] = {"checkpoint": "{}"}


def encode_json(column: str, value: Any) -> str | None:
    """How a JSON column is stored: :data:`_JSON_NONE` for None, else the value encoded."""
    if value is None:
        return _JSON_NONE.get(column)
    return payload.dumps(value)


def null_literal(column: str) -> str:
    """What a None in ``column`` is written as, in the statement's text: ``NULL``, or the
    JSON column's stored None (:data:`_JSON_NONE`, a fixed literal without quotes of its own).

    Not bound: Python's sqlite3 binds a None only after asking its adapter registry and both
    ``__adapt__`` and ``__conform__`` for one, the failed attribute lookups raising and
    clearing an AttributeError each (~3,000 instructions per None; callgrind). A worker's
    completion clears four columns, so it bound four Nones per job. Whether a value is None
    is part of a change's shape (:func:`lookup_key` holds each value's type), so the literal
    is part of the statement that shape keeps.
    """
    stored = _JSON_NONE.get(column) if column in JSON_COLUMNS else None
    if stored is None:
        return "NULL"
    assert "'" not in stored
    assert "?" not in stored
    return f"'{stored}'"


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
    convert = _AS_STORED[type(value)]
    return f"{column} = ?", value if convert is None else convert(value)


def _assignments(change: Change, now: float,
                 json_values: Mapping[str, str | None]) -> tuple[list[str], list[Any]]:
    """The SET part; JSON already encoded (outside the write lock) is taken from ``json_values``."""
    sets: list[str] = ["updated_at = ?"]
    args: list[Any] = [now]
    if change.to_state is not None:
        sets.append("state = ?")
        args.append(change.to_state.value)
    for column, value in change.values.items():
        if value is None:  # written in the text, not bound (null_literal)
            if column not in SETTABLE_COLUMNS:
                raise ValueError(f"column {column!r} may not be set")
            sets.append(f"{column} = {null_literal(column)}")
            continue
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
    shape, args = change_shape(change, now, json_values or {})
    return single_statement(template, shape), args


@functools.lru_cache(maxsize=256)
def single_statement(template: str, shape: tuple[str, str]) -> str:
    """The ``apply_change`` statement of one change of ``shape`` (the clauses
    :func:`change_shape` gave it), kept per shape."""
    return template.format(sets=shape[0], where=shape[1])


class _Json:
    """How a plain value of a JSON column is given: encoded (:func:`_arguments`)."""


class _Plain:
    """How any other plain value is given: as the database takes it (:data:`_AS_STORED`)."""


class _Null:
    """A None: not given at all, its literal is in the statement (:func:`null_literal`)."""


class _AsStored(dict[type, Callable[[Any], Any] | None]):
    """How a plain value of each type is bound (by :func:`set_clause` and
    :func:`_arguments`): a bool as 0 or 1, an aware datetime as its epoch, anything else as
    it is (None here). Found once per type, as :data:`conveyor.changes._MARKER_OF_TYPE` finds
    markers: a worker binds a handful of plain values per job, and one lookup each beats two
    ``isinstance`` tests."""

    def __missing__(self, kind: type) -> Callable[[Any], Any] | None:
        found: Callable[[Any], Any] | None = (int if issubclass(kind, bool)
                                              else epoch if issubclass(kind, datetime)
                                              else None)
        self[kind] = found
        return found


_AS_STORED = _AsStored()


class Shape(NamedTuple):
    """What every change of one structure shares: its SET and WHERE text, and where each of
    its arguments comes from (:func:`_arguments`)."""

    sql: tuple[str, str]
    head: tuple[str, ...]  # the target state, if the change moves the job
    #: each value's column and how it is given: its marker class, _Json, _Plain or _Null (decided
    #: once per shape, so :func:`_arguments` tests each value once, not down a chain)
    columns: tuple[tuple[str, type], ...]
    states: tuple[str, ...]
    lease: bool
    now_guards: int  # guards comparing with now (lease_expired, due, pause_expired)
    #: the positions of the arguments that are now plus an offset (updated_at, DbNow,
    #: FirstTime, the now guards): :func:`prepare` leaves them at their offsets, for
    #: :func:`place_now` to add the clock read inside the transaction
    now_at: tuple[int, ...]
    #: :func:`prepare`'s arguments of a change of this shape (:func:`_builder`)
    build: Callable[[Change], list[Any]]


#: Shapes by their lookup key (:func:`lookup_key`). Changes come from a handful of
#: transitions, so this stays small; the bound only guards against a caller making endless
#: new structures.
_SHAPES: dict[Hashable, Shape] = {}
_MAX_SHAPES = 512


def lookup_key(change: Change) -> Hashable:
    """The key :data:`_SHAPES` finds ``change``'s shape by: :func:`conveyor.changes.shape_key`
    made finer and cheaper to build and hash, as every change a worker writes is looked up.

    Each value's own type stands where ``shape_key`` has its marker kind (the marker kind
    follows from the type: one dict lookup fewer per value), and the target state's text
    where it has the state (an enum member hashes through a Python-level ``__hash__``; its
    ``_value_``, unlike ``value``, is a plain attribute).
    Changes with equal lookup keys have equal shape keys, so share one shape; a completion's
    results of several JSON types make a few keys for one shape (the tests check both).
    """
    values = change.values
    to_state = change.to_state
    return (tuple(values), tuple(map(type, values.values())),
            None if to_state is None else to_state._value_, change.when,
            change.lease is not None, change.retryable, change.lease_expired,
            change.pause_expired, change.due, change.flag, change.unless_flag)


def _shape(change: Change, now: float, json_values: Mapping[str, str | None]) -> Shape:
    key = lookup_key(change)
    found = _SHAPES.get(key)
    if found is not None:
        return found
    sets, _ = _assignments(change, now, json_values)  # validates every column and flag
    where, _ = _guards(change, now)
    head = 1 + (change.to_state is not None)
    kinds = [_Null if value is None else marker_kind(value)
             for value in change.values.values()]
    bound = [kind for kind in kinds if kind is not _Null]  # the values given, in order
    width = head + len(bound) + 1 + len(change.when) + 2 * (change.lease is not None)
    guards = sum((change.lease_expired, change.due, change.pause_expired))
    now_at = (0, *(head + n for n, kind in enumerate(bound) if kind in (DbNow, FirstTime)),
              *range(width, width + guards))
    head_values = () if change.to_state is None else (change.to_state.value,)
    columns = tuple([(column, kind or (_Json if column in JSON_COLUMNS else _Plain))
                     for column, kind in zip(change.values, kinds, strict=True)])
    states = tuple(sorted(s.value for s in change.when))
    found = Shape(
        (", ".join(sets), " AND ".join(where)), head_values, columns, states,
        change.lease is not None, guards, now_at,
        _builder(head_values, columns, states, change.lease is not None, guards))
    if len(_SHAPES) >= _MAX_SHAPES:
        _SHAPES.clear()
    _SHAPES[key] = found
    return found


def _arguments(shape: Shape, change: Change, now: float,
               json_values: Mapping[str, str | None]) -> list[Any]:
    """``change``'s arguments in the placeholder order of its shape: the ones
    :func:`_assignments` and :func:`_guards` give (the tests hold them equal), made without
    their SQL text, for every change a worker writes."""
    args: list[Any] = [now, *shape.head]
    values = change.values
    for column, kind in shape.columns:
        if kind is _Null:  # in the statement's text
            continue
        value = values[column]
        if kind is _Plain:
            convert = _AS_STORED[type(value)]
            if convert is not None:
                value = convert(value)
        elif kind is _Json:
            value = (json_values[column] if column in json_values
                     else encode_json(column, value))
        elif kind is DbNow:
            value = now + value.offset
        elif kind is FirstTime:
            value = now
        elif kind is FreshToken:
            value = 16
        else:
            value = value.by
        args.append(value)
    args.append(change.job_id)
    args.extend(shape.states)
    if shape.lease:
        assert change.lease is not None
        args.append(change.lease.token)
        args.append(change.lease.attempt)
    if shape.now_guards:
        args.extend([now] * shape.now_guards)
    return args


def _builder(head: tuple[str, ...], columns: tuple[tuple[str, type], ...],
             states: tuple[str, ...], lease: bool, now_guards: int
             ) -> Callable[[Change], list[Any]]:
    """A function giving :func:`_arguments`' list at a clock of 0.0 with no JSON encoded
    beforehand (what :func:`prepare` binds), made once per shape: one list display of the
    shape's arguments in placeholder order, each value's way of being given decided here
    rather than tested in a loop for every change (a worker prepares every change it writes;
    the tests hold both equal, bit for bit and type for type).

    The generated text holds no value of a change: only column names, which
    :func:`_assignments` has already checked against ``SETTABLE_COLUMNS`` (and are written
    as ``repr`` literals), states (literals too) and the helpers' names.
    """
    parts = ["0.0", *(repr(state) for state in head)]
    for column, kind in columns:
        value = f"values[{column!r}]"
        if kind is _Null:  # in the statement's text
            continue
        if kind is _Plain:
            parts.append(f"(_v if (_c := _as_stored[type(_v := {value})]) is None else _c(_v))")
        elif kind is _Json:  # encode_json, inline
            empty = repr(_JSON_NONE.get(column))
            parts.append(f"({empty} if (_v := {value}) is None else _dumps(_v))")
        elif kind is DbNow:
            parts.append(f"0.0 + {value}.offset")
        elif kind is FirstTime:
            parts.append("0.0")
        elif kind is FreshToken:
            parts.append("16")
        else:  # Increment (marker_kind knows no other marker)
            parts.append(f"{value}.by")
    parts.append("change.job_id")
    parts.extend(repr(state) for state in states)
    if lease:
        parts.extend(("change.lease.token", "change.lease.attempt"))
    parts.extend(["0.0"] * now_guards)
    source = ("def build(change):\n"
              "    values = change.values\n"
              f"    return [{', '.join(parts)}]\n")
    scope: dict[str, Any] = {"_as_stored": _AS_STORED, "_dumps": payload.dumps}
    exec(compile(source, "<conveyor.stores.sqlite.changes shape>", "exec"), scope)  # noqa: S102
    build: Callable[[Change], list[Any]] = scope["build"]
    return build


def change_shape(change: Change, now: float, json_values: Mapping[str, str | None]
                 ) -> tuple[tuple[str, str], list[Any]]:
    """``change``'s SET and WHERE clauses (its shape: the statement without its values) and
    its arguments in placeholder order. Changes of one shape differ in their values only, so
    a batch of them is one statement (:func:`compile_batch`). The clauses are compiled once
    per structure of change and kept (a worker writes the same few structures all day)."""
    shape = _shape(change, now, json_values)
    return shape.sql, _arguments(shape, change, now, json_values)


def prepare(change: Change) -> tuple[Shape, list[Any]]:
    """``change``'s shape and its arguments but for the clock: every argument that is now
    plus an offset holds only its offset, until :func:`place_now` adds the clock.

    So a caller compiles a change (and encodes its JSON, up to 1 MiB a value) before it takes
    the write lock, where the clock is read: inside, a change costs an addition per
    timestamp. The arguments are those of :func:`change_shape` at the same clock (IEEE
    addition is commutative, and ``0.0 + now`` is ``now``), as the tests check.
    """
    shape = _SHAPES.get(lookup_key(change)) or _shape(change, 0.0, _NO_JSON)
    return shape, shape.build(change)


_NO_JSON: Mapping[str, str | None] = {}  # prepare encodes every JSON value itself


def place_now(args: list[Any], now_at: tuple[int, ...], now: float) -> list[Any]:
    """Add the transaction's clock to the arguments :func:`prepare` left at their offsets."""
    for n in now_at:
        args[n] += now
    return args


def compile_batch(template: str, shape: tuple[str, str],
                  rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """One UPDATE for several changes of one ``shape``: each row of arguments becomes a row of
    a VALUES table, and each placeholder of the shape reads its column of that row, so every
    job is still matched by its own id, lease token and attempt (a stale one matches nothing).

    The clauses come from :func:`_assignments` and :func:`_guards` only, whose text holds a
    ``?`` nowhere but as a placeholder.
    """
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError("a batch's rows must fill every placeholder of its shape")
    statement = _batch_statement(template, shape, width, len(rows))
    return statement, [arg for row in rows for arg in row]


@functools.lru_cache(maxsize=256)
def _batch_statement(template: str, shape: tuple[str, str], width: int, count: int) -> str:
    if sum(part.count("?") for part in shape) != width:
        raise ValueError("a batch's rows must fill every placeholder of its shape")
    columns = iter(range(1, width + 1))
    sets, where = [re.sub(r"\?", lambda _: f"batch.column{next(columns)}", part)
                   for part in shape]
    values = ", ".join([f"({marks(width)})"] * count)
    return template.format(sets=sets, values=values, where=where)


def compile_claim(template: str, change: Change, job_ids: Sequence[str],
                  now: float) -> tuple[str, list[Any]]:
    """``change`` (a claim's start or resume) made to every job of ``job_ids`` in one
    statement: the same SET and guards, with ``id IN (...)`` for the one id."""
    shape = _shape(change, now, {})
    args = _arguments(shape, change, now, {})
    first = len(args) - 1 - len(shape.states) - 2 * shape.lease - shape.now_guards  # the id's
    return (_claim_statement(template, shape.sql, len(job_ids)),
            [*args[:first], *job_ids, *args[first + 1:]])


class ClaimPlan(NamedTuple):
    """A claim's statement for ``count`` jobs and its arguments but for the ids and the clock
    (:func:`claim_plan`): a worker claims with the same change every time, so the statement
    and all of its arguments but those are made once."""

    statement: str
    head: tuple[Any, ...]  # the arguments before the ids, now-based ones at their offsets
    tail: tuple[Any, ...]  # those after them
    now_head: tuple[int, ...]  # where ``head`` holds now plus an offset
    now_tail: tuple[int, ...]  # and where ``tail`` does
    action: str  # the change's history row
    actor: str
    reason: str

    def arguments(self, job_ids: Sequence[Any], now: float) -> list[Any]:
        """The statement's arguments for ``job_ids`` (``count`` of them) at ``now``: those of
        :func:`compile_claim`. For :func:`subquery_claim_plan`'s, the subquery's arguments
        stand in for the ids."""
        args = place_now([*self.head, *job_ids, *self.tail], self.now_head, now)
        if self.now_tail:
            past = len(self.head) + len(job_ids)
            for n in self.now_tail:
                args[past + n] += now
        return args


def claim_plan(template: str, change: Change, count: int) -> ClaimPlan:
    """:func:`compile_claim`'s statement for ``count`` jobs and what its arguments are made
    of, for a caller that keeps it (the worker path, per worker and source state)."""
    shape, args = prepare(change)
    return _plan(_claim_statement(template, shape.sql, count), shape, args, change)


def subquery_claim_plan(template: str, change: Change, **parts: str) -> ClaimPlan:
    """A claim whose ids a subquery of ``template`` picks (``claim_pending``): its ``{sets}``
    and ``{guards}`` are ``change``'s (its guards but ``id = ?``), ``parts`` fill in the
    rest; :meth:`ClaimPlan.arguments` then takes the subquery's arguments for the ids."""
    shape, args = prepare(change)
    sets, where = shape.sql
    assert where.startswith(_BY_ID)
    return _plan(template.format(sets=sets, guards=where[len(_BY_ID):], **parts), shape, args,
                 change)


_BY_ID = "id = ? AND "  # how every change's guards start (_guards)


def _plan(statement: str, shape: Shape, args: list[Any], change: Change) -> ClaimPlan:
    first = len(args) - 1 - len(shape.states) - 2 * shape.lease - shape.now_guards  # the id's
    return ClaimPlan(statement, tuple(args[:first]), tuple(args[first + 1:]),
                     tuple(n for n in shape.now_at if n < first),
                     tuple(n - first - 1 for n in shape.now_at if n > first),
                     change.action, change.actor, change.reason)


@functools.lru_cache(maxsize=256)
def _claim_statement(template: str, shape: tuple[str, str], count: int) -> str:
    sets, where = shape
    assert where.startswith("id = ?")
    return template.format(sets=sets, where=f"id IN ({marks(count)})" + where[len("id = ?"):])
