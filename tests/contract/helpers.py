"""Small builders shared by the contract tests."""

from __future__ import annotations

import sqlite3
import uuid
import weakref
from typing import Any

from conveyor import transitions
from conveyor.changes import Change, Lease
from conveyor.ids import new_job_id
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError, JobProgress
from conveyor.stores.base import NewJob, Store
from conveyor.stores.sqlite import SQLiteStore
from tests.conftest import FakeClock

WORKER = "worker-a"


def new(job_type: str = "t", **fields: Any) -> NewJob:
    return NewJob(id=new_job_id(), job_type=job_type, params=fields.pop("params", {}),
                  **fields)


def insert(store: Store, job_type: str = "t", **fields: Any) -> Job:
    (job,) = store.insert_jobs([new(job_type, **fields)], actor="test")
    return job


def lease_of(job: Job) -> Lease:
    assert job.lease_token is not None, f"job {job.id} is not leased"
    return Lease(job.id, job.lease_token, job.attempt)


def claim_one(store: Store, job_types: list[str] | None = None, lease: float = 30.0,
              worker: str = WORKER) -> Job:
    jobs = store.claim(worker, queues=[], job_types=job_types or ["t"], limit=1,
                       lease_seconds=lease)
    assert len(jobs) == 1, f"expected one claimed job, got {len(jobs)}"
    return jobs[0]


def running(store: Store, **fields: Any) -> Job:
    return in_state(store, JobState.RUNNING, **fields)


def in_state(store: Store, state: JobState, *, lease: float = 30.0, **fields: Any) -> Job:
    """A job brought to ``state`` through real transitions (of a type of its own)."""
    job_type = fields.pop("job_type", f"t-{uuid.uuid4().hex[:8]}")
    job = insert(store, job_type, **fields)
    if state is JobState.PENDING:
        return job
    if state is JobState.CANCELLED:
        return apply_one(store, transitions.cancel_idle(job.id, JobState.PENDING, "t", ""))
    job = claim_one(store, [job_type], lease=lease)
    held = lease_of(job)
    if state is JobState.RUNNING:
        return job
    if state is JobState.PAUSED:
        return apply_one(store, transitions.pause_at_checkpoint(held, JobProgress(1, 2), "t"))
    if state is JobState.COMPLETED:
        return apply_one(store, transitions.complete(held, {"ok": True}, "t"))
    return apply_one(store, transitions.fail(held, job.id, JobError("E", "boom"), "raised", "t"))


def apply_one(store: Store, change: Change) -> Job:
    """Apply one change; the store returns exactly one row, the job as the change left it."""
    (job,) = store.apply([change])
    return job


# -- time ------------------------------------------------------------------------------------
# Lease and pause-timeout guards compare stored times with the database's clock. Tests never
# sleep for them: SQLite runs on a fake clock that is moved forward; PostgreSQL's clock is the
# server's, so its stored times are moved back instead, which the guards cannot tell apart.

_CLOCKS: weakref.WeakKeyDictionary[Store, FakeClock] = weakref.WeakKeyDictionary()
_PG_TIMES = ("run_at", "created_at", "updated_at", "started_at", "finished_at", "paused_at",
             "lease_expires_at")


def use_clock(store: Store, clock: FakeClock) -> None:
    """Record that ``store`` (a SQLite store) reads ``clock``, for :func:`pass_time`."""
    _CLOCKS[store] = clock


def pass_time(store: Store, seconds: float) -> None:
    """Make ``seconds`` pass for every job of the store's database, on either store."""
    clock = _CLOCKS.get(store)
    if clock is not None:
        clock.advance(seconds)
        return
    if isinstance(store, SQLiteStore):
        raise AssertionError("this SQLite store has no fake clock: open it with use_clock()")
    shifted = ", ".join(f"{c} = {c} - %(s)s * interval '1 second'" for c in _PG_TIMES)
    _pg_execute(store, f"UPDATE jobs SET {shifted}", {"s": seconds})


def expire_lease(store: Store, job_id: str) -> None:
    """Make one running job's lease expired now (what a dead worker leaves behind)."""
    if isinstance(store, SQLiteStore):
        _sqlite_execute(store, "UPDATE jobs SET lease_expires_at = ? WHERE id = ? "
                        "AND state = 'running'", (store.now().timestamp() - 1.0, job_id))
    else:
        _pg_execute(store, "UPDATE jobs SET lease_expires_at = now() - interval '1 second' "
                    "WHERE id = %(id)s AND state = 'running'", {"id": job_id}, expect=1)


def expire_pause(store: Store, job_id: str) -> None:
    """Make one paused job paused for longer than its ``pause_timeout``."""
    if isinstance(store, SQLiteStore):
        _sqlite_execute(store, "UPDATE jobs SET paused_at = ? - pause_timeout - 1.0 "
                        "WHERE id = ? AND state = 'paused'", (store.now().timestamp(), job_id))
    else:
        _pg_execute(store, "UPDATE jobs SET paused_at = now() - (pause_timeout + 1) "
                    "* interval '1 second' WHERE id = %(id)s AND state = 'paused'",
                    {"id": job_id}, expect=1)


def _sqlite_execute(store: SQLiteStore, statement: str, args: tuple[object, ...]) -> None:
    conn = sqlite3.connect(store.path, isolation_level=None, timeout=30)
    try:
        changed = conn.execute(statement, args).rowcount
    finally:
        conn.close()
    assert changed == 1, f"no job matched: {statement}"


def _pg_execute(store: Store, statement: str, args: dict[str, object],
                expect: int | None = None) -> None:
    """Run ``statement`` in the store's schema on a connection of its own."""
    import psycopg

    from conveyor.stores.postgres.config import parse_url

    schema: str = getattr(store, "schema")  # noqa: B009 - PostgresStore only
    with psycopg.connect(parse_url(store.url, schema).conninfo, autocommit=True) as conn:
        changed = conn.execute(statement.encode(), args).rowcount
    assert expect is None or changed == expect, f"no job matched: {statement}"
