"""The SQLite store's claim-time limits: concurrency and rate limits (see conveyor.limits).

A mixin of :class:`~conveyor.stores.sqlite.store.SQLiteStore`. SQLite has one writer at a
time and every claim is a ``BEGIN IMMEDIATE`` transaction, so counting the running jobs and
the window's claims inside the claim is exact: no other claim can commit in between.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from conveyor.lifecycle import JobState
from conveyor.limits import (
    Bucket,
    Candidate,
    LimitRule,
    Rate,
    Usage,
    admit,
    applying,
    full,
)
from conveyor.stores.sqlfiles import load_queries
from conveyor.stores.sqlite.changes import marks
from conveyor.stores.sqlite.rows import ts

_Q = load_queries("conveyor.stores.sqlite", "limits.sql")
T = TypeVar("T")
#: How many candidates past ``limit`` a limited claim looks at (full buckets are left out of
#: the scan, so each candidate fits on its own; these absorb the ones that fill a bucket).
SCAN_EXTRA = 32


class _Store(Protocol):
    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def _retry_busy(self, op: Callable[[], T]) -> T: ...
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...
    def _clock(self) -> float: ...
    def notify_work(self) -> None: ...


def _rule(row: sqlite3.Row) -> LimitRule:
    rate = (Rate(row["rate_count"], row["rate_seconds"])
            if row["rate_count"] is not None else None)
    return LimitRule(row["scope"], row["name"], row["max_running"], rate, row["key"],
                     ts(row["changed_at"]), row["actor"], row["reason"])


def _row(rule: LimitRule, now: float) -> tuple[Any, ...]:
    return (rule.scope, rule.name, rule.max_running, rule.rate.count if rule.rate else None,
            rule.rate.seconds if rule.rate else None, rule.key, now, rule.actor, rule.reason)


def _usage(conn: sqlite3.Connection, rules: Sequence[LimitRule], now: float) -> Usage:
    running = [(r["job_type"], r["queue"], r["limit_key"], r["n"])
               for r in conn.execute(_Q["running_counts"])]
    claimed = [(rule.scope, rule.name, r["limit_key"], r["n"])
               for rule in rules if rule.rate is not None
               for r in conn.execute(_Q["rate_counts"],
                                     (rule.scope, rule.name, now - rule.rate.seconds))]
    return Usage.of(rules, running, claimed)


class SQLiteLimits:
    """Limits as rows of ``flow_limits``; the claim reads them in its write transaction."""

    def save_type_limits(self: _Store, job_types: Sequence[str],
                         rules: Sequence[LimitRule]) -> None:
        with self._write() as conn:
            now = self._clock()
            limited = {rule.name for rule in rules}
            for rule in rules:
                conn.execute(_Q["upsert_limit"], _row(rule, now))
            for name in sorted(set(job_types) - limited):  # a limit taken out of the code
                if conn.execute(_Q["delete_limit"], ("type", name)).rowcount:
                    conn.execute(_Q["forget_rates"], ("type", name))
        self.notify_work()

    def set_queue_limit(self: _Store, queue: str, max_running: int | None, rate: Rate | None,
                        *, actor: str, reason: str) -> LimitRule | None:
        rule = LimitRule("queue", queue, max_running, rate, None, actor=actor, reason=reason)
        with self._write() as conn:
            conn.execute(_Q["forget_rates"], ("queue", queue))
            if max_running is None and rate is None:
                conn.execute(_Q["delete_limit"], ("queue", queue))
                row = None
            else:
                row = conn.execute(_Q["upsert_limit"], _row(rule, self._clock())).fetchone()
        self.notify_work()  # a limit raised or removed may free waiting jobs
        return None if row is None else _rule(row)

    def limits(self: _Store) -> list[LimitRule]:
        return [_rule(row) for row in self._read(_Q["all_limits"])]

    def limit_usage(self: _Store, rules: Sequence[LimitRule]) -> Usage:
        # for display only: a read per count, no write lock taken from a dashboard
        with self._lock:
            return self._retry_busy(lambda: _usage(self._conn, rules, self._clock()))

    def _claim_rules(self, conn: sqlite3.Connection, queues: Sequence[str],
                     job_types: Sequence[str]) -> list[LimitRule]:
        """The limits this claim obeys (usually none: one read of an empty table)."""
        rows = conn.execute(_Q["all_limits"]).fetchall()
        return applying([_rule(row) for row in rows], queues, job_types) if rows else []

    def _limited_candidates(self, conn: sqlite3.Connection, rules: Sequence[LimitRule],
                            queues: Sequence[str], job_types: Sequence[str], limit: int,
                            now: float) -> list[tuple[str, JobState]]:
        """What a claim under limits takes, in claim order; records each claim in its rate
        windows (the caller's transaction claims every one of them)."""
        for rule in rules:
            if rule.rate is not None:
                conn.execute(_Q["prune_rates"], (rule.scope, rule.name, now - rule.rate.seconds))
        usage = _usage(conn, rules, now)
        types = sorted(set(job_types))
        where, args = _leave_out(queues, *full(rules, usage))
        scan = limit + SCAN_EXTRA
        found: list[Candidate] = []
        for source, query, head in ((JobState.PAUSED, "limited_resumable", []),
                                    (JobState.PENDING, "limited_pending", [now])):
            statement = _Q[query].format(job_types=marks(len(types)), where=where)
            found += [Candidate(r["id"], r["job_type"], r["queue"], r["limit_key"], source)
                      for r in conn.execute(statement, [*head, *types, *args, scan])]
        taken, rated = admit(found, rules, usage, limit)
        _record(conn, rated, now)
        return [(cand.id, cand.source) for cand in taken]


def _leave_out(queues: Sequence[str], types: set[str], full_queues: set[str],
               pairs: set[tuple[str, str]]) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for clause, values in (("queue IN ({})", sorted(set(queues))),
                           ("job_type NOT IN ({})", sorted(types)),
                           ("queue NOT IN ({})", sorted(full_queues))):
        if values:
            where.append(clause.format(marks(len(values))))
            args += values
    if pairs:
        where.append("(job_type, coalesce(limit_key, '')) NOT IN (VALUES "
                     + ", ".join(["(?, ?)"] * len(pairs)) + ")")
        args += [part for pair in sorted(pairs) for part in pair]
    return "".join(f" AND {clause}" for clause in where), args


def _record(conn: sqlite3.Connection, rated: Sequence[Bucket], now: float) -> None:
    conn.executemany(_Q["record_rate"], [(*bucket, now) for bucket in rated])
