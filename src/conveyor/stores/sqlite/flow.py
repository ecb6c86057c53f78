"""The SQLite store's flow control: paused queues (and periodic schedules).

A mixin of :class:`~conveyor.stores.sqlite.store.SQLiteStore`, kept apart so the store's
job operations stay one readable module; its SQL is in ``flow.sql``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from conveyor.model import Job, QueueInfo, ScheduleInfo
from conveyor.stores.base import NewJob
from conveyor.stores.sqlfiles import load_queries
from conveyor.stores.sqlite.rows import epoch, new_history_rows, new_job_rows, row_to_job, ts

_Q = load_queries("conveyor.stores.sqlite", "flow.sql")


class _Store(Protocol):
    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...
    def _clock(self) -> float: ...
    def notify_work(self) -> None: ...
    def _insert_one(self, conn: sqlite3.Connection, new: NewJob, row: tuple[Any, ...],
                    history: tuple[Any, ...]) -> tuple[sqlite3.Row, bool]: ...


#: How long a tick's row is kept after a newer one (see prune_ticks).
TICKS_KEPT = 7 * 86400.0


def _queue(row: sqlite3.Row, counts: dict[str, int] | None = None) -> QueueInfo:
    return QueueInfo(row["queue"], bool(row["paused"]), ts(row["changed_at"]), row["actor"],
                     row["reason"], counts or {})


def _schedule(row: sqlite3.Row) -> ScheduleInfo:
    keys = row.keys()
    return ScheduleInfo(row["name"], row["cron"], row["timezone"], row["job_type"],
                        row["queue"], ts(row["first_seen"]), ts(row["seen_at"]),
                        ts(row["last_tick"]) if "last_tick" in keys else None,
                        row["last_job_id"] if "last_job_id" in keys else None)


class SQLiteFlow:
    """Paused queues (one row per queue ever paused, read by the claim queries) and the
    periodic schedules' ticks."""

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
        for row in self._read(_Q["queue_counts"]):  # pending in two rows (queue_counts)
            in_queue = counts.setdefault(row["queue"], {})
            in_queue[row["state"]] = in_queue.get(row["state"], 0) + row["n"]
        states = {row["queue"]: row for row in self._read(_Q["queue_states"])}
        return [_queue(states[name], counts.get(name)) if name in states
                else QueueInfo(name, counts=counts[name])
                for name in sorted(set(counts) | set(states))]



    def save_schedules(self: _Store, schedules: Sequence[ScheduleInfo]) -> list[ScheduleInfo]:
        with self._write() as conn:
            now = self._clock()
            rows = [conn.execute(_Q["save_schedule"], (
                s.name, s.cron, s.timezone, s.job_type, s.queue, now, now)).fetchone()
                for s in schedules]
        return [_schedule(row) for row in rows]

    def schedules(self: _Store) -> list[ScheduleInfo]:
        return [_schedule(row) for row in self._read(_Q["list_schedules"])]

    def enqueue_tick(self: _Store, schedule: str, tick: datetime, job: NewJob, *,
                     actor: str) -> Job | None:
        now = self._clock()
        at = epoch(tick)
        (row,) = new_job_rows([job], now)
        (history,) = new_history_rows([job], now, actor)
        with self._write() as conn:
            if conn.execute(_Q["newer_tick"], (schedule, at)).fetchone() is not None:
                return None
            if conn.execute(_Q["take_tick"], (schedule, at, job.id, now)).fetchone() is None:
                return None
            conn.execute(_Q["prune_ticks"], (schedule, at - TICKS_KEPT))
            inserted, _ = self._insert_one(conn, job, row, history)
        self.notify_work()
        return row_to_job(inserted)
