"""The PostgreSQL store's flow control: paused queues (and periodic schedules).

A mixin of :class:`~conveyor.stores.postgres.store.PostgresStore`, kept apart so the store's
job operations stay one readable module; its SQL is in ``flow.sql``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg.rows import TupleRow

from conveyor.errors import DuplicateJob, StoreError
from conveyor.model import Job, QueueInfo, ScheduleInfo
from conveyor.stores.base import NewJob
from conveyor.stores.postgres.common import QUERIES
from conveyor.stores.postgres.common import fetch_rows as fetch
from conveyor.stores.postgres.rows import row_to_job, utc
from conveyor.stores.sqlfiles import load_queries

_Q = load_queries("conveyor.stores.postgres", "flow.sql")
Conn = psycopg.Connection[TupleRow]
T = TypeVar("T")


class _Store(Protocol):
    def _run(self, what: str, work: Callable[[Conn], T], *, transaction: bool = False,
             retry: bool = False) -> T: ...
    def notify_work(self) -> None: ...
    def _insert_params(self, jobs: Sequence[NewJob], actor: str) -> dict[str, Any]: ...


def _queue(row: Mapping[str, Any], counts: dict[str, int] | None = None) -> QueueInfo:
    return QueueInfo(row["queue"], bool(row["paused"]), utc(row["changed_at"]), row["actor"],
                     row["reason"], counts or {})


def _schedule(row: Mapping[str, Any]) -> ScheduleInfo:
    return ScheduleInfo(row["name"], row["cron"], row["timezone"], row["job_type"],
                        row["queue"], utc(row["first_seen"]), utc(row["seen_at"]),
                        utc(row.get("last_tick")), row.get("last_job_id"))


class PostgresFlow:
    """Paused queues (one row per queue ever paused, read by the claim query) and the
    periodic schedules' ticks."""

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

    def save_schedules(self: _Store, schedules: Sequence[ScheduleInfo]) -> list[ScheduleInfo]:
        def work(conn: Conn) -> list[dict[str, Any]]:
            return [fetch(conn, _Q["save_schedule"], {
                "name": s.name, "cron": s.cron, "timezone": s.timezone,
                "job_type": s.job_type, "queue": s.queue})[0] for s in schedules]

        return [_schedule(row) for row in self._run("save schedules", work, transaction=True)]

    def schedules(self: _Store) -> list[ScheduleInfo]:
        rows = self._run("list schedules", lambda c: fetch(c, _Q["list_schedules"]),
                         retry=True)
        return [_schedule(row) for row in rows]

    def enqueue_tick(self: _Store, schedule: str, tick: datetime, job: NewJob, *,
                     actor: str) -> Job | None:
        params = self._insert_params([job], actor)
        tick_params = {"schedule": schedule, "tick": tick, "job_id": job.id}

        def work(conn: Conn) -> list[dict[str, Any]]:
            if not fetch(conn, _Q["take_tick"], tick_params):
                return []
            fetch(conn, _Q["prune_ticks"], tick_params)
            return fetch(conn, QUERIES["insert_jobs"], params)

        rows = self._run("enqueue a tick", work, transaction=True)
        if not rows:
            return None
        self.notify_work()
        return row_to_job(rows[0])

    def _insert_keyed(self: _Store, conn: Conn, jobs: Sequence[NewJob], params: dict[str, Any]
                      ) -> list[Job]:
        """Insert jobs with unique keys; a job whose key is held gets the holder in its place.

        ``ON CONFLICT DO NOTHING`` waits for a racing insert of the same key to commit and
        then skips; the holder is read by a later statement, whose snapshot sees it. A holder
        that finished in between frees the key: the insert is tried again.

        The rows go in in the order of their keys, whatever the caller's order: two batches
        sharing keys then wait for each other's keys in one order, where batches given the
        same keys in opposite orders each held a key the other waited for (a deadlock, one
        of them aborted and sent again, and again while the other was still writing).
        """
        order = sorted(range(len(jobs)), key=lambda n: (jobs[n].unique_key is None,
                                                        jobs[n].unique_key or ""))
        by_key = {name: [value[n] for n in order] if isinstance(value, list) else value
                  for name, value in params.items()}  # every list holds one value per job
        inserted = {r["id"]: row_to_job(r) for r in fetch(conn, QUERIES["insert_jobs"], by_key)}
        result: list[Job] = []
        for new in jobs:
            job = inserted.get(new.id)
            for _ in range(3):
                if job is not None:
                    break
                holder = fetch(conn, QUERIES["select_unfinished_by_key"], {"key": new.unique_key})
                if holder:
                    job = dataclasses.replace(row_to_job(holder[0]), existing=True)
                    if new.on_conflict == "raise":
                        raise DuplicateJob(job)  # the transaction rolls back
                    break
                again = fetch(conn, QUERIES["insert_jobs"], {
                    **params, **{k: [v[jobs.index(new)]] for k, v in params.items()
                                 if isinstance(v, list)}})
                job = row_to_job(again[0]) if again else None
            if job is None:
                raise StoreError(f"PostgreSQL store: the unique key of job "
                                 f"{new.id} kept changing hands; try again")
            result.append(job)
        return result
