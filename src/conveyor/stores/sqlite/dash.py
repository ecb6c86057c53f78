"""The SQLite store's search filters and the dashboard overview's numbers.

A mixin of :class:`~conveyor.stores.sqlite.store.SQLiteStore`; its SQL is in ``dash.sql``.
Every query here is answered from an index (see migration 0004), so the overview costs the
same with a million finished jobs as with a hundred, except the counts, which read one index
entry per job.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
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


#: What ``jobs_state_seq`` and ``jobs_queue_state`` hold (partial, migration 0012): the jobs in
#: neither of the states a claim and a completion move a job through. SQLite uses a partial
#: index only when the query's WHERE says as much, term for term, so every statement that
#: reads them says it in these words.
SETTLED = "state <> 'pending' AND state <> 'running'"
#: The jobs in each of the other states, by the index that holds them: pending jobs ready to
#: run (``jobs_pending_any``, ``jobs_pending_queue``), pending jobs waiting on a dependency
#: (``jobs_waiting``), running jobs (``jobs_lease``, one per busy worker slot).
PENDING_READY = "state = 'pending' AND waiting_on = 0"
PENDING_WAITING = "state = 'pending' AND waiting_on > 0"
RUNNING = "state = 'running'"
_UNSETTLED = frozenset({JobState.PENDING, JobState.RUNNING})


def _in(column: str, values: Sequence[str], args: list[Any]) -> str:
    """``column = ?`` for one value (SQLite matches a partial index's WHERE with it, not with
    IN), else an IN list."""
    args.extend(values)
    return f"{column} = ?" if len(values) == 1 else f"{column} IN ({', '.join('?' * len(values))})"


def _settled(states: Iterable[JobState], args: list[Any]) -> str:
    """The terms of the states other than pending and running, in the words of their indexes'
    WHERE (all of them: those words alone)."""
    values = sorted(s.value for s in states)
    if len(values) == len(JobState) - len(_UNSETTLED):
        return SETTLED
    return f"{_in('state', values, args)} AND {SETTLED}"


def state_parts(states: frozenset[JobState]) -> list[tuple[str, list[Any]]]:
    """``states`` (every state when empty) as parts that each read one index, with their
    arguments: a count sums them (no index holds every state since migration 0012)."""
    parts: list[tuple[str, list[Any]]] = []
    every = not states
    if every or JobState.PENDING in states:
        parts += [(PENDING_READY, []), (PENDING_WAITING, [])]
    if every or JobState.RUNNING in states:
        parts.append((RUNNING, []))
    settled = set(JobState) - _UNSETTLED if every else states - _UNSETTLED
    if settled:
        args: list[Any] = []
        parts.append((_settled(settled, args), args))
    return parts


#: A list of a queue's pending (and running) jobs reads their seqs from the claim's index,
#: ``jobs_waiting`` and ``jobs_lease`` when the queue holds fewer pending jobs than this (a
#: probe counts them, at most this many index entries): a walk of the table newest first
#: would pass every other job (about 0.2 s per million for a queue with none), and the seqs
#: of a short backlog cost little at each page. A longer backlog is listed by the walk,
#: which fills its page from the newest jobs at once, where reading the seqs would cost the
#: whole backlog at every page of a bulk action.
SMALL_BACKLOG = 1000


def backlog_probe(query: JobQuery) -> tuple[str, list[Any]] | None:
    """The statement whose ``small`` says whether ``query``'s queues hold fewer pending jobs
    than :data:`SMALL_BACKLOG` (it counts each index's entries up to that many), for a list
    that may read their seqs from the indexes (pending jobs of given queues, with running
    ones or not); None for any other list."""
    if not query.queues or JobState.PENDING not in query.states \
            or not query.states <= _UNSETTLED:
        return None
    args: list[Any] = []
    counts = []
    for part, _ in state_parts(frozenset({JobState.PENDING})):
        in_queues = _in("queue", sorted(query.queues), args)
        args.append(SMALL_BACKLOG)
        counts.append(f"(SELECT count(*) FROM (SELECT 1 FROM jobs WHERE {part} AND {in_queues}"
                      " LIMIT ?))")
    args.append(SMALL_BACKLOG)
    return f"SELECT {' + '.join(counts)} < ? AS small", args


def filter_clause(query: JobQuery, *, listing: bool = False, small_backlog: bool = False,
                  ) -> tuple[list[str], list[Any]]:
    """The WHERE terms and their arguments for ``query``'s filters (not its cursor).

    ``listing``: for a list, newest first. No index is keyed by the queue and then the seq
    (migration 0011), so a list of queues without states walks the table newest first,
    stopping at its page: its queue term is written ``+queue`` so that SQLite, knowing no
    better without statistics, does not read every job of the queue from an index and sort
    them all. With states, the indexes below are read (by queue where they are keyed by it).

    States: the jobs in states other than pending and running are in ``jobs_state_seq`` and
    ``jobs_queue_state`` (partial, migration 0012), whose WHERE the terms repeat
    (:data:`SETTLED`), read in seq order. Pending jobs are in no index by seq (migration
    0011; nor, since 0012, by queue and state): a list of them walks the table newest first,
    where the newest jobs are, and stops at its page. Reading the seqs of a queue's pending
    jobs from the claim's index instead would cost the queue's whole backlog at every page, and
    a bulk action pages through it. Running jobs, perhaps with others of settled states, are
    read by their seqs from the indexes that hold them (:func:`state_parts`: ``jobs_lease``,
    ``jobs_state_seq``) and then the rows in seq order (``seq IN (...)``): running jobs are few
    (one per busy worker slot); a mix costs every seq of its settled states, as the sort of
    their rows did before migration 0012. ``small_backlog`` (:func:`backlog_probe` found
    fewer than :data:`SMALL_BACKLOG`): a queue's pending jobs are read that way too.
    """
    where: list[str] = []
    args: list[Any] = []
    states = query.states
    if states and not states & _UNSETTLED:
        where.append(_settled(states, args))
    elif states and (JobState.PENDING not in states or small_backlog):
        seqs = []
        for part, part_args in state_parts(states):
            args += part_args
            in_queues = f" AND {_in('queue', sorted(query.queues), args)}" if query.queues else ""
            seqs.append(f"SELECT seq FROM jobs WHERE {part}{in_queues}")  # the index by queue
        where.append(f"seq IN ({' UNION ALL '.join(seqs)})")
    elif states:
        where.append(_in("state", sorted(s.value for s in states), args))
    where += _other_terms(query, args, listing=listing)
    return where, args


def _other_terms(query: JobQuery, args: list[Any], *, listing: bool) -> list[str]:
    """The terms of ``query``'s filters other than its states, their arguments added to
    ``args``."""
    where: list[str] = []
    queue = "+queue" if listing and not query.states else "queue"
    for column, values in (("job_type", query.job_types), (queue, query.queues)):
        if values:
            where.append(_in(column, sorted(values), args))
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
    return where


def count_clauses(query: JobQuery) -> list[tuple[list[str], list[Any]]]:
    """The WHERE terms and arguments of the statements whose counts sum to ``query``'s count.

    With states, or with no filter but queues (the counts the dashboard and ``conveyor``
    show), one statement per index of :func:`state_parts`, each counting that index's
    entries (with a queue, ``jobs_pending_queue``, ``jobs_waiting`` and ``jobs_queue_state``
    are keyed by it). With no filter, or other filters and no states, one statement: the
    first counts an index's entries, the others read the rows.
    """
    if not query.states and (not query.queues or query.job_types or query.id_prefix is not None
                             or query.text is not None or query.created_after
                             or query.created_before or query.finished_after
                             or query.finished_before):
        # one statement; with no filter at all, count(*), which SQLite answers by counting the
        # entries of the smallest index that holds every job
        args: list[Any] = []
        return [(_other_terms(query, args, listing=False), args)]
    clauses = []
    for part, part_args in state_parts(query.states):
        args = list(part_args)
        clauses.append(([part, *_other_terms(query, args, listing=False)], args))
    return clauses


class SQLiteDash:
    """Counting a filter, throughput per minute, queue depth samples, and the commit watch
    for the dashboard's live stream."""

    def count_jobs(self: _Store, query: JobQuery) -> int:
        # one statement, so that its parts read one snapshot (a job that moves from one index
        # to another between two reads is counted once)
        counts, args = [], []
        for where, part_args in count_clauses(query):
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            counts.append(_Q["count_part"].format(where=clause))
            args += part_args
        return int(self._read(_Q["count_jobs"].format(counts=" + ".join(counts)), args)[0]["n"])

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
