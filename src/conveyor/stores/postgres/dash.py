"""The PostgreSQL store's search counts and the dashboard overview's numbers.

A mixin of :class:`~conveyor.stores.postgres.store.PostgresStore`; its SQL is in ``dash.sql``
(indexes in migration 0004). The live stream has no commit watch here: NOTIFY is sent for
work and for stopped jobs, not for every change, so the stream polls.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from conveyor.lifecycle import JobState
from conveyor.stores.base import JobQuery
from conveyor.stores.postgres.common import fetch_rows as _fetch
from conveyor.stores.postgres.statements import filter_terms, where_clause
from conveyor.stores.sqlfiles import load_queries

_Q = load_queries("conveyor.stores.postgres", "dash.sql")
Conn = psycopg.Connection[TupleRow]
T = TypeVar("T")


class _Store(Protocol):
    _last_depth: datetime | None

    def _run(self, what: str, work: Callable[[Conn], T], *, transaction: bool = False,
             retry: bool = False) -> T: ...


class PostgresDash:
    """Counting a filter, throughput per minute, and queue depth samples."""

    def count_jobs(self: _Store, query: JobQuery) -> int:
        where, params = filter_terms(query)
        statement = sql.SQL(_Q["count_jobs"]).format(where=where_clause(where))
        rows = self._run("count jobs", lambda c: _fetch(c, statement, params), retry=True)
        return int(rows[0]["n"])

    def finished_per_minute(self: _Store, since: datetime
                            ) -> list[tuple[datetime, JobState, int]]:
        rows = self._run("read throughput", lambda c: _fetch(
            c, sql.SQL(_Q["finished_per_minute"]), {"since": since}), retry=True)
        return [(_at(row["minute"]), JobState(row["state"]), int(row["n"])) for row in rows]

    def record_depth(self: _Store) -> None:
        def work(conn: Conn) -> None:
            (row,) = _fetch(conn, sql.SQL(_Q["depth_minute"]), {})
            if getattr(self, "_last_depth", None) == row["at"]:
                return
            if not row["recorded"]:
                _fetch(conn, sql.SQL(_Q["record_depth"]), {})
            self._last_depth = row["at"]

        self._run("record queue depth", work, transaction=True)

    def depth_samples(self: _Store, since: datetime) -> list[tuple[datetime, str, int, int]]:
        rows = self._run("read queue depth", lambda c: _fetch(
            c, sql.SQL(_Q["depth_samples"]), {"since": since}), retry=True)
        return [(_at(row["at"]), row["queue"], int(row["pending"]), int(row["running"]))
                for row in rows]

    def watch_changes(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """None: NOTIFY tells of new work and stopped jobs, not of every change."""
        return None


def _at(value: datetime) -> datetime:
    return value.astimezone(UTC)
