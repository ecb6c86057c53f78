"""The SQLite store's job logs: the lines a job logged while it ran, per attempt.

A mixin of :class:`~conveyor.stores.sqlite.store.SQLiteStore`; its SQL is in ``logs.sql``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

from conveyor.model import Job, LogLine
from conveyor.stores.base import NewLogLine
from conveyor.stores.sqlfiles import load_queries
from conveyor.stores.sqlite.rows import epoch, ts

_Q = load_queries("conveyor.stores.sqlite", "logs.sql")


class _Store(Protocol):
    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...
    def get_job(self, job_id: str) -> Job: ...


class SQLiteLogs:
    """Job log lines: written in batches by workers, read by the CLI, API and dashboard."""

    def write_job_logs(self: _Store, lines: Sequence[NewLogLine],
                       trims: Sequence[tuple[str, int, int]] = ()) -> None:
        if not lines and not trims:
            return
        rows = [(x.job_id, x.attempt, x.seq, epoch(x.at), x.level, x.message) for x in lines]
        with self._write() as conn:
            conn.executemany(_Q["trim_logs"], trims)
            conn.executemany(_Q["insert_log"], rows)

    def job_log_sizes(self: _Store, job_id: str, attempt: int) -> list[tuple[int, int]]:
        return [(r["seq"], r["size"]) for r in self._read(_Q["log_sizes"], (job_id, attempt))]

    def job_logs(self: _Store, job_id: str, *, attempt: int | None = None, after: int = 0,
                 limit: int = 1000) -> list[LogLine]:
        rows = self._read(_Q["select_logs"], (job_id, after, attempt, attempt, limit))
        if not rows:
            self.get_job(job_id)  # raises JobNotFound for an unknown id
        return [LogLine(r["id"], r["job_id"], r["attempt"], r["seq"], ts(r["at"]) or _never(),
                        r["level"], r["message"]) for r in rows]


def _never() -> Any:  # pragma: no cover - at is NOT NULL
    raise AssertionError("a log line without a time")
