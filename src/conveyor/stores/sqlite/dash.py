"""The SQLite store's search filters and the dashboard overview's numbers.

A mixin of :class:`~conveyor.stores.sqlite.store.SQLiteStore`; its SQL is in ``dash.sql``.
Every query here is answered from an index (see migration 0004), so the overview costs the
same with a million finished jobs as with a hundred, except the counts, which read one index
entry per job.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from conveyor.ids import ID_LENGTH
from conveyor.lifecycle import JobState
from conveyor.stores.base import JobQuery
from conveyor.stores.sqlfiles import load_queries
from conveyor.stores.sqlite.rows import epoch, ts

_Q = load_queries("conveyor.stores.sqlite", "dash.sql")
#: How long queue depth samples are kept.
DEPTH_KEPT = 86400.0


class _Store(Protocol):
    _last_depth: float
    path: str

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...
    def _clock(self) -> float: ...
    def watch_job(self, job_id: str, wake: Callable[[], None]) -> Callable[[], None]: ...


def _id_clause(fragment: str, args: list[Any]) -> str:
    """Ids that start or end with ``fragment`` (a listing shows an id's end, see
    :func:`conveyor.ids.short_id`). The start is a range on the unique index of ids (binary
    collation); the end is read from that same index, every entry of it, so a whole id skips
    that part."""
    args.extend([fragment, fragment + "\x7f"])
    if len(fragment) == ID_LENGTH:
        return "id >= ? AND id < ?"
    args.extend([-len(fragment), fragment])
    return ("id IN (SELECT id FROM jobs WHERE id >= ? AND id < ? "
            "UNION ALL SELECT id FROM jobs WHERE substr(id, ?) = ?)")


def filter_clause(query: JobQuery, *, listing: bool = False) -> tuple[list[str], list[Any]]:
    """The WHERE terms and their arguments for ``query``'s filters (not its cursor).

    ``listing``: for a list, newest first. No index is keyed by the queue and then the seq
    (migration 0011), so a list of queues without states walks the table newest first,
    stopping at its page: its queue term is written ``+queue`` so that SQLite, knowing no
    better without statistics, does not read every job of the queue from ``jobs_queue_state``
    and sort them all. With states, that index gives each (queue, state) in seq order.

    States other than pending are in ``jobs_state_seq`` (partial, migration 0011): SQLite
    uses a partial index only when the query's WHERE implies the index's, so one state is
    written ``state = ?`` (an ``IN`` list is not matched against it) and ``state <>
    'pending'`` is added when pending is not asked for.
    """
    where: list[str] = []
    args: list[Any] = []
    queue = "+queue" if listing and not query.states else "queue"
    for column, values in (("state", [s.value for s in query.states]),
                           ("job_type", list(query.job_types)),
                           (queue, list(query.queues))):
        if len(values) == 1:  # `=`: SQLite matches a partial index's WHERE with it, not IN
            where.append(f"{column} = ?")
            args.extend(values)
        elif values:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            args.extend(sorted(values))
    if query.states and JobState.PENDING not in query.states:
        where.append("state <> 'pending'")  # what jobs_state_seq holds (migration 0011)
    if query.id_prefix is not None:
        where.append(_id_clause(query.id_prefix, args))
    for column, operator, moment in (
            ("created_at", ">=", query.created_after), ("created_at", "<", query.created_before),
            ("finished_at", ">=", query.finished_after),
            ("finished_at", "<", query.finished_before)):
        if moment is not None:
            where.append(f"{column} {operator} ?")
            args.append(epoch(moment))
    if query.text is not None:
        where.append("(instr(lower(params), ?) > 0 OR instr(lower(coalesce(error, '')), ?) > 0)")
        args.extend([query.text, query.text])
    return where, args


class SQLiteDash:
    """Counting a filter, throughput per minute, queue depth samples, and the commit watch
    for the dashboard's live stream."""

    def count_jobs(self: _Store, query: JobQuery) -> int:
        where, args = filter_clause(query)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return int(self._read(_Q["count_jobs"].format(where=clause), args)[0]["n"])

    def finished_per_minute(self: _Store, since: datetime
                            ) -> list[tuple[datetime, JobState, int]]:
        low = epoch(since)
        found = []
        while low <= self._clock():
            minute = low // 60 * 60
            for row in self._read(_Q["finished_in_minute"], (low, minute + 60)):
                found.append((_at(minute), JobState(row["state"]), int(row["n"])))
            low = minute + 60
        return found

    def record_depth(self: _Store) -> None:
        minute = float(int(self._clock() // 60) * 60)
        if getattr(self, "_last_depth", None) == minute:
            return  # this store object sampled this minute already
        if not self._read(_Q["depth_recorded"], (minute,)):
            with self._write() as conn:
                if conn.execute(_Q["record_depth"], (minute,)).rowcount == 0:
                    conn.execute(_Q["record_depth_empty"], (minute,))
                conn.execute(_Q["forget_depth"], (minute - DEPTH_KEPT,))
        self._last_depth = minute

    def depth_samples(self: _Store, since: datetime) -> list[tuple[datetime, str, int, int]]:
        return [(_at(row["at"]), row["queue"], int(row["pending"]), int(row["running"]))
                for row in self._read(_Q["depth_samples"], (epoch(since),))]

    def watch_changes(self: _Store, wake: Callable[[], None]) -> Callable[[], None] | None:
        """The commit watch workers wait on (inotify on the WAL, or ``PRAGMA data_version``
        read every few milliseconds): it does not tell which job changed. None in memory,
        where no other connection can commit."""
        if self.path == ":memory:":
            return None
        return self.watch_job("", wake)


def _at(value: float) -> datetime:
    moment = ts(float(value))
    if moment is None:  # pragma: no cover - the columns are NOT NULL
        raise ValueError("a sample without a time")
    return moment
