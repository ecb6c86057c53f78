"""The PostgreSQL store's flow control: paused queues (and periodic schedules).

A mixin of :class:`~conveyor.stores.postgres.store.PostgresStore`, kept apart so the store's
job operations stay one readable module; its SQL is in ``flow.sql``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, dict_row

from conveyor.model import QueueInfo
from conveyor.stores.postgres.rows import utc
from conveyor.stores.sqlfiles import load_queries

_Q = load_queries("conveyor.stores.postgres", "flow.sql")
Conn = psycopg.Connection[TupleRow]
T = TypeVar("T")


class _Store(Protocol):
    def _run(self, what: str, work: Callable[[Conn], T], *, transaction: bool = False,
             retry: bool = False) -> T: ...
    def notify_work(self) -> None: ...


def fetch(conn: Conn, query: str, params: Mapping[str, Any] | None = None
          ) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL(query), params)
        return cur.fetchall() if cur.description is not None else []


def _queue(row: Mapping[str, Any], counts: dict[str, int] | None = None) -> QueueInfo:
    return QueueInfo(row["queue"], bool(row["paused"]), utc(row["changed_at"]), row["actor"],
                     row["reason"], counts or {})


class PostgresFlow:
    """Paused queues: one row per queue ever paused, read by the claim query."""

    def set_queue_paused(self: _Store, queue: str, paused: bool, *, actor: str,
                         reason: str) -> QueueInfo:
        params = {"queue": queue, "paused": paused, "actor": actor, "reason": reason}
        rows = self._run("set a queue's state",
                         lambda c: fetch(c, _Q["set_queue_state"], params))
        if not paused:
            self.notify_work()  # its jobs are claimable again
        return _queue(rows[0])

    def queues(self: _Store) -> list[QueueInfo]:
        def work(conn: Conn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            return fetch(conn, _Q["queue_counts"]), fetch(conn, _Q["queue_states"])

        count_rows, state_rows = self._run("list queues", work, retry=True)
        counts: dict[str, dict[str, int]] = {}
        for row in count_rows:
            counts.setdefault(row["queue"], {})[row["state"]] = int(row["n"])
        states = {row["queue"]: row for row in state_rows}
        return [_queue(states[name], counts.get(name)) if name in states
                else QueueInfo(name, counts=counts[name])
                for name in sorted(set(counts) | set(states))]
