"""Small builders shared by the contract tests."""

from __future__ import annotations

import uuid
from typing import Any

from conveyor import transitions
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError, JobProgress
from conveyor.stores.base import Change, Lease, NewJob, Store

WORKER = "worker-a"


def new(job_type: str = "t", **fields: Any) -> NewJob:
    return NewJob(id=str(uuid.uuid4()), job_type=job_type, params=fields.pop("params", {}),
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
    lease = lease_of(job)
    if state is JobState.RUNNING:
        return job
    if state is JobState.PAUSED:
        return apply_one(store, transitions.pause_at_checkpoint(lease, JobProgress(1, 2), "t"))
    if state is JobState.COMPLETED:
        return apply_one(store, transitions.complete(lease, {"ok": True}, "t"))
    return apply_one(store, transitions.fail(lease, job.id, JobError("E", "boom"), "raised", "t"))


def apply_one(store: Store, change: Change) -> Job:
    """Apply one change; the store returns exactly one row, the job as the change left it."""
    (job,) = store.apply([change])
    return job
