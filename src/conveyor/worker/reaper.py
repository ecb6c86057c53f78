"""The reaper: fails jobs whose worker stopped heartbeating and cancels over-long pauses.

It runs in every worker at once. That is safe without any leader election because every move it
makes is the same compare-and-set a worker uses, guarded by "the lease has expired by the
database's clock" (or "paused for longer than pause_timeout"): a job that completed, or whose
worker heartbeated, in the meantime no longer matches, and two reapers racing for one job see
exactly one of them succeed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from conveyor import transitions
from conveyor.changes import ChangeRefused, Lease
from conveyor.engine import Engine, HasEngine, engine_of
from conveyor.lifecycle import JobState
from conveyor.model import JobError
from conveyor.worker.executor import OutcomeKind, record_failure

log = logging.getLogger("conveyor.reaper")


@dataclass(frozen=True)
class ReapResult:
    lost: int = 0
    pause_timeouts: int = 0


def reap(source: Engine | HasEngine, actor: str = "reaper", limit: int = 100) -> ReapResult:
    """One pass of the reaper (on an engine, or an app's); returns how many jobs it moved."""
    engine = engine_of(source)
    lost = 0
    for job in engine.store.expired_leases(limit):
        if job.lease_token is None:
            continue
        lease = Lease(job.id, job.lease_token, job.attempt)
        why = "worker lost while cancelling"
        try:
            if job.cancel_requested:
                engine.apply([transitions.cancel_running(lease, job.id, None, actor, why,
                                                         lease_expired=True)])
                outcome = OutcomeKind.CANCELLED
            else:
                # interrupted, not at fault: the retry keeps the job's place in line and an
                # operator's pending pause request
                error = JobError("WorkerLost", f"worker {job.worker_id} stopped heartbeating "
                                 "and its lease expired")
                outcome = record_failure(engine, job, lease, error, "worker lost", actor,
                                         lease_expired=True, interrupted=True,
                                         cancel_reason=why)
            lost += 1
            log.warning("job %s: worker %s lost; %s", job.id, job.worker_id, outcome.value)
        except ChangeRefused:
            pass  # it completed, heartbeated, or another reaper got there first
    timeouts = 0
    for job in engine.store.expired_pauses(limit):
        change = transitions.cancel_idle(job.id, JobState.PAUSED, actor,
                                         f"pause timeout ({job.pause_timeout:g}s)",
                                         pause_expired=True)
        try:
            engine.apply([change])
            timeouts += 1
        except ChangeRefused:
            pass
    return ReapResult(lost, timeouts)
