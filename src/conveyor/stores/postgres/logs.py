"""The PostgreSQL store's job logs: the lines a job logged while it ran, per attempt.

A mixin of :class:`~conveyor.stores.postgres.store.PostgresStore`; its SQL is in ``logs.sql``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg.rows import TupleRow

from conveyor.model import Job, LogLine
from conveyor.stores.base import NewLogLine
from conveyor.stores.postgres.common import fetch_rows as fetch
from conveyor.stores.postgres.rows import utc
from conveyor.stores.sqlfiles import load_queries

_Q = load_queries("conveyor.stores.postgres", "logs.sql")
Conn = psycopg.Connection[TupleRow]
T = TypeVar("T")


class _Store(Protocol):
    def _run(self, what: str, work: Callable[[Conn], T], *, transaction: bool = False,
             retry: bool = False) -> T: ...
    def get_job(self, job_id: str) -> Job: ...


class PostgresLogs:
    """Job log lines: written in batches by workers, read by the CLI, API and dashboard."""

    def write_job_logs(self: _Store, lines: Sequence[NewLogLine],
                       trims: Sequence[tuple[str, int, int]] = ()) -> None:
        if not lines and not trims:
            return
        rows = {"job_ids": [x.job_id for x in lines], "attempts": [x.attempt for x in lines],
                "seqs": [x.seq for x in lines], "ats": [x.at for x in lines],
                "levels": [x.level for x in lines], "messages": [x.message for x in lines]}
        cut = {"job_ids": [t[0] for t in trims], "attempts": [t[1] for t in trims],
               "seqs": [t[2] for t in trims]}

        def work(conn: Conn) -> None:
            if trims:
                fetch(conn, _Q["trim_logs"], cut)
            if lines:
                fetch(conn, _Q["insert_logs"], rows)

        self._run("write job logs", work, transaction=True)

    def job_log_sizes(self: _Store, job_id: str, attempt: int) -> list[tuple[int, int]]:
        rows = self._run("read job log sizes", lambda c: fetch(
            c, _Q["log_sizes"], {"job_id": job_id, "attempt": attempt}), retry=True)
        return [(r["seq"], r["size"]) for r in rows]

    def job_logs(self: _Store, job_id: str, *, attempt: int | None = None, after: int = 0,
                 limit: int = 1000) -> list[LogLine]:
        params: dict[str, Any] = {"job_id": job_id, "after": after, "attempt": attempt,
                                  "limit": limit}
        rows = self._run("read job logs", lambda c: fetch(c, _Q["select_logs"], params),
                         retry=True)
        if not rows:
            self.get_job(job_id)  # raises JobNotFound for an unknown id
        return [LogLine(r["id"], r["job_id"], r["attempt"], r["seq"], utc(r["at"]) or r["at"],
                        r["level"], r["message"]) for r in rows]
