"""The PostgreSQL store's operations: retention batches and the workers registry.

A mixin of :class:`~conveyor.stores.postgres.store.PostgresStore`, like its flow control; its
SQL is in ``ops.sql``. Each prune batch is one autocommit statement: its row locks last as long
as the statement, and rows others hold are skipped, never waited for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from conveyor.lifecycle import JobState
from conveyor.presence import WorkerInfo, WorkerRegistration, join_queues, split_queues
from conveyor.stores.postgres.common import fetch_rows as fetch
from conveyor.stores.postgres.rows import utc
from conveyor.stores.sqlfiles import load_migrations, load_queries

_Q = load_queries("conveyor.stores.postgres", "ops.sql")
_LATEST = load_migrations("conveyor.stores.postgres")[-1][0]
Conn = psycopg.Connection[TupleRow]
T = TypeVar("T")


class _Store(Protocol):
    def _run(self, what: str, work: Callable[[Conn], T], *, transaction: bool = False,
             retry: bool = False) -> T: ...


def _required(value: datetime | None) -> datetime:
    if value is None:
        raise ValueError("a workers row lacks a time it must have")
    return value


def _worker(row: Mapping[str, Any]) -> WorkerInfo:
    return WorkerInfo(row["id"], row["host"], row["pid"], split_queues(row["queues"]),
                      row["concurrency"], row["version"], _required(utc(row["started_at"])),
                      _required(utc(row["seen_at"])), _required(utc(row["expires_at"])),
                      row["running"], bool(row["stop_requested"]), utc(row["stopped_at"]),
                      bool(row["alive"]))


def _count(conn: Conn, query: str, params: Mapping[str, Any]) -> int:
    with conn.cursor() as cur:
        cur.execute(sql.SQL(query), params)
        return max(0, cur.rowcount)


class PostgresOps:
    """Retention and the workers registry on PostgreSQL."""

    def latest_version(self) -> int:
        return _LATEST

    def prune_jobs(self: _Store, state: JobState, older_than: float, *, limit: int) -> int:
        params = {"state": state.value, "age": older_than, "limit": limit}
        rows = self._run("prune jobs", lambda c: fetch(c, _Q["prune_jobs"], params))
        return int(rows[0]["n"])

    def count_prunable(self: _Store, state: JobState, older_than: float) -> int:
        params = {"state": state.value, "age": older_than}
        rows = self._run("count prunable jobs",
                         lambda c: fetch(c, _Q["count_prunable"], params), retry=True)
        return int(rows[0]["n"])

    def beat_worker(self: _Store, worker: WorkerRegistration, *, running: int,
                    ttl: float) -> bool:
        params = {"id": worker.id, "host": worker.host, "pid": worker.pid,
                  "queues": join_queues(worker.queues), "concurrency": worker.concurrency,
                  "version": worker.version, "ttl": ttl, "running": running}
        rows = self._run("record a worker's heartbeat",
                         lambda c: fetch(c, _Q["beat_worker"], params))
        return bool(rows[0]["stop_requested"])

    def end_worker(self: _Store, worker_id: str) -> None:
        self._run("record a worker's stop",
                  lambda c: fetch(c, _Q["end_worker"], {"id": worker_id}))

    def workers(self: _Store) -> list[WorkerInfo]:
        rows = self._run("list workers", lambda c: fetch(c, _Q["list_workers"]), retry=True)
        return [_worker(row) for row in rows]

    def request_worker_stop(self: _Store, worker_id: str) -> WorkerInfo | None:
        rows = self._run("ask a worker to stop",
                         lambda c: fetch(c, _Q["request_worker_stop"], {"id": worker_id}))
        return _worker(rows[0]) if rows else None

    def prune_workers(self: _Store, older_than: float) -> int:
        return self._run("prune workers",
                         lambda c: _count(c, _Q["prune_workers"], {"age": older_than}))
