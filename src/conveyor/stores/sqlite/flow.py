"""The SQLite store's flow control: paused queues (and periodic schedules).

A mixin of :class:`~conveyor.stores.sqlite.store.SQLiteStore`, kept apart so the store's
job operations stay one readable module; its SQL is in ``flow.sql``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

from conveyor.model import QueueInfo
from conveyor.stores.sqlfiles import load_queries
from conveyor.stores.sqlite.rows import ts

_Q = load_queries("conveyor.stores.sqlite", "flow.sql")


class _Store(Protocol):
    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...
    def _clock(self) -> float: ...
    def notify_work(self) -> None: ...


def _queue(row: sqlite3.Row, counts: dict[str, int] | None = None) -> QueueInfo:
    return QueueInfo(row["queue"], bool(row["paused"]), ts(row["changed_at"]), row["actor"],
                     row["reason"], counts or {})


class SQLiteFlow:
    """Paused queues: one row per queue ever paused, read by the claim queries."""

    def set_queue_paused(self: _Store, queue: str, paused: bool, *, actor: str,
                         reason: str) -> QueueInfo:
        with self._write() as conn:
            row = conn.execute(_Q["set_queue_state"],
                               (queue, int(paused), self._clock(), actor, reason)).fetchone()
        if not paused:
            self.notify_work()  # its jobs are claimable again
        return _queue(row)

    def queues(self: _Store) -> list[QueueInfo]:
        counts: dict[str, dict[str, int]] = {}
        for row in self._read(_Q["queue_counts"]):
            counts.setdefault(row["queue"], {})[row["state"]] = row["n"]
        states = {row["queue"]: row for row in self._read(_Q["queue_states"])}
        return [_queue(states[name], counts.get(name)) if name in states
                else QueueInfo(name, counts=counts[name])
                for name in sorted(set(counts) | set(states))]


