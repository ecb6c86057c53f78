"""The SQLite store's operations: retention batches and the workers registry.

A mixin of :class:`~conveyor.stores.sqlite.store.SQLiteStore`, like its flow control; its SQL
is in ``ops.sql``. Each prune batch is one ``BEGIN IMMEDIATE`` transaction of a few hundred
deletes: the write lock is held for milliseconds, and claims waiting on it get it in between.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from conveyor.lifecycle import JobState
from conveyor.presence import WorkerInfo, WorkerRegistration, join_queues, split_queues
from conveyor.stores.sqlfiles import load_migrations, load_queries
from conveyor.stores.sqlite.rows import ts

_Q = load_queries("conveyor.stores.sqlite", "ops.sql")
_LATEST = load_migrations("conveyor.stores.sqlite")[-1][0]


class _Store(Protocol):
    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...
    def _clock(self) -> float: ...


def _required(value: datetime | None) -> datetime:
    if value is None:
        raise ValueError("a workers row lacks a time it must have")
    return value


def _worker(row: sqlite3.Row) -> WorkerInfo:
    return WorkerInfo(row["id"], row["host"], row["pid"], split_queues(row["queues"]),
                      row["concurrency"], row["version"], _required(ts(row["started_at"])),
                      _required(ts(row["seen_at"])), _required(ts(row["expires_at"])),
                      row["running"], bool(row["stop_requested"]), ts(row["stopped_at"]),
                      bool(row["alive"]))


class SQLiteOps:
    """Retention and the workers registry on one SQLite file."""

    def latest_version(self) -> int:
        return _LATEST

    def prune_jobs(self: _Store, state: JobState, older_than: float, *, limit: int) -> int:
        with self._write() as conn:
            cursor = conn.execute(_Q["prune_jobs"],
                                  (state.value, self._clock() - older_than, limit))
            return max(0, cursor.rowcount)

    def count_prunable(self: _Store, state: JobState, older_than: float) -> int:
        rows = self._read(_Q["count_prunable"], (state.value, self._clock() - older_than))
        return int(rows[0][0])

    def beat_worker(self: _Store, worker: WorkerRegistration, *, running: int,
                    ttl: float) -> bool:
        now = self._clock()
        with self._write() as conn:
            row = conn.execute(_Q["beat_worker"], {
                "id": worker.id, "host": worker.host, "pid": worker.pid,
                "queues": join_queues(worker.queues), "concurrency": worker.concurrency,
                "version": worker.version, "now": now, "expires": now + ttl,
                "running": running}).fetchone()
        return bool(row[0])

    def end_worker(self: _Store, worker_id: str) -> None:
        with self._write() as conn:
            conn.execute(_Q["end_worker"], (self._clock(), worker_id))

    def workers(self: _Store) -> list[WorkerInfo]:
        now = self._clock()
        return [_worker(row) for row in self._read(_Q["list_workers"], (now, now))]

    def request_worker_stop(self: _Store, worker_id: str) -> WorkerInfo | None:
        with self._write() as conn:
            row = conn.execute(_Q["request_worker_stop"],
                               (worker_id, self._clock())).fetchone()
        return None if row is None else _worker(row)

    def prune_workers(self: _Store, older_than: float) -> int:
        with self._write() as conn:
            return max(0, conn.execute(_Q["prune_workers"],
                                       (self._clock() - older_than,)).rowcount)
