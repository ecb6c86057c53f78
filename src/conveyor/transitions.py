"""Named transitions: one constructor per state change, each a compare-and-set with a reason.

Each function builds the :class:`~conveyor.changes.Change` for one row of the lifecycle
table (or one request), taking its allowed source states from :mod:`conveyor.lifecycle`, so no
store ever re-types the table. The history can then tell "failed: timed out" from
"failed: worker lost".
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from conveyor.changes import Change, ClaimStart, DbNow, Increment, Lease
from conveyor.lifecycle import JobState, find_transition, sources_of
from conveyor.model import JobError, JobProgress

S = JobState


@functools.cache
def _when(source: JobState, target: JobState) -> frozenset[JobState]:
    """The one state ``source`` as a compare-and-set's guard, once the table allows the move;
    kept (a worker builds a completion per job, and the table is fixed)."""
    row = find_transition(source, target)
    if row is None:  # pragma: no cover - a programming error, caught by the unit tests
        raise AssertionError(f"{source} -> {target} is not in the lifecycle table")
    return frozenset({source})


#: The database's now (markers are immutable: one serves every change).
_DB_NOW = DbNow()
_COMPLETE_WHEN = _when(S.RUNNING, S.COMPLETED)


def _release() -> dict[str, Any]:
    """Columns cleared whenever a job stops running: the worker lets go of it."""
    return {"worker_id": None, "lease_token": None, "lease_expires_at": None}


def _progress(progress: JobProgress | None) -> dict[str, Any]:
    if progress is None:
        return {}
    return {
        "current_step": progress.current_step,
        "total_steps": progress.total_steps,
        "checkpoint": progress.last_checkpoint,
    }


# -- worker writes (fenced by the lease) ----------------------------------------------------

def complete(lease: Lease, result: Any, actor: str, *,
             progress: JobProgress | None = None) -> Change:
    """running -> completed; ``progress``: the run's last steps, when they were not written
    yet (a batched completion carries them, instead of a write of their own before it)."""
    # one literal dict and a shared marker: a worker builds this for every job it completes
    values: dict[str, Any] = {"result": result, "finished_at": _DB_NOW,
                              "cancel_requested": False, "pause_requested": False}
    if progress is not None:
        values["current_step"] = progress.current_step
        values["total_steps"] = progress.total_steps
    values["worker_id"] = values["lease_token"] = values["lease_expires_at"] = None
    return Change(lease.job_id, "complete", _COMPLETE_WHEN, S.COMPLETED, values, lease=lease,
                  actor=actor)


def fail(lease: Lease | None, job_id: str, error: JobError, reason: str, actor: str,
         *, lease_expired: bool = False, keep_pause: bool = False,
         close_budget: int | None = None) -> Change:
    """running -> failed. From the worker (``lease``) or the reaper (``lease_expired``).

    Refused while a cancel is requested: that cancel wins (the caller records it instead), so a
    cancel requested just before the job raised is never lost to the failure and its retry.
    ``keep_pause`` keeps an operator's pause request for the retry that follows in the same
    transaction (a lost worker's job pauses at its first checkpoint when it runs again).
    ``close_budget``: the job failed for good (its retry policy, or ``FailJob``): its
    ``max_attempts`` is lowered to this, the attempts used, so it is terminal everywhere (no
    retry, a requeue offered) as a job that used up its retries.
    """
    values: dict[str, Any] = {"error": error.to_dict(), "finished_at": DbNow(), **_release()}
    if close_budget is not None:
        values["max_attempts"] = close_budget
    if not keep_pause:
        values["pause_requested"] = False
    return Change(
        job_id, "fail", _when(S.RUNNING, S.FAILED), S.FAILED, values,
        lease=lease, lease_expired=lease_expired, unless_flag="cancel_requested", actor=actor,
        reason=reason,
    )


def snooze(lease: Lease, seconds: float, progress: JobProgress | None, actor: str) -> Change:
    """running -> pending, runnable again after ``seconds``, ``attempt`` unchanged: the job
    asked for it (``ctx.snooze``), it did not fail. Its progress and checkpoint are kept for
    the next run; it joins the line when it is due, as a job enqueued with that delay."""
    return Change(
        lease.job_id, "snooze", _when(S.RUNNING, S.PENDING), S.PENDING,
        {"run_at": DbNow(seconds), "line_at": DbNow(seconds), "pause_requested": False,
         **_progress(progress), **_release()},
        lease=lease, unless_flag="cancel_requested", actor=actor,
        reason=f"snoozed for {seconds:g}s",
    )


def pause_at_checkpoint(lease: Lease, progress: JobProgress | None, actor: str, *,
                        resume: bool = False, reason: str = "") -> Change:
    """running -> paused. ``resume`` True when a shutting-down worker hands the job back."""
    return Change(
        lease.job_id, "pause", _when(S.RUNNING, S.PAUSED), S.PAUSED,
        {"paused_at": DbNow(), "pause_requested": False, "resume_requested": resume,
         **_progress(progress), **_release()},
        lease=lease, actor=actor, reason=reason,
    )


def cancel_running(lease: Lease | None, job_id: str, progress: JobProgress | None, actor: str,
                   reason: str, *, lease_expired: bool = False) -> Change:
    """running -> cancelled, at a checkpoint, after the grace period, or by the reaper."""
    return Change(
        job_id, "cancel", _when(S.RUNNING, S.CANCELLED), S.CANCELLED,
        {"finished_at": DbNow(), "pause_requested": False, **_progress(progress), **_release()},
        lease=lease, lease_expired=lease_expired, flag="cancel_requested",
        actor=actor, reason=reason,
    )


# -- control API -----------------------------------------------------------------------------

def cancel_idle(job_id: str, source: JobState, actor: str, reason: str,
                *, pause_expired: bool = False) -> Change:
    """pending -> cancelled or paused -> cancelled: nothing runs, so it takes effect at once."""
    return Change(
        job_id, "cancel", _when(source, S.CANCELLED), S.CANCELLED,
        {"finished_at": DbNow(), "resume_requested": False, "pause_requested": False},
        pause_expired=pause_expired, actor=actor, reason=reason,
    )


def request(job_id: str, what: str, value: bool, when: frozenset[JobState], actor: str,
            reason: str) -> Change:
    """Record a request flag (``pause_requested``, ``cancel_requested``, ``resume_requested``)."""
    action = f"{'request' if value else 'withdraw'}_{what.removesuffix('_requested')}"
    return Change(job_id, action, when, None, {what: value}, actor=actor, reason=reason)


def retry(job_id: str, actor: str, reason: str, *, delay: float = 0.0,
          keep_place: bool = False) -> Change:
    """failed -> pending, guarded by ``attempt < max_attempts``; runnable after ``delay``.

    ``keep_place``: the run was interrupted (its worker was lost or shut down), not at fault,
    so the job keeps its place in line (``line_at``) and its pending pause request; only the
    not-before time moves. Otherwise the retry goes to the back of the line, as new work.
    """
    values: dict[str, Any] = {
        "attempt": Increment(), "error": None, "result": None, "finished_at": None,
        "cancel_requested": False, "run_at": DbNow(delay), "paused_at": None,
    }
    if not keep_place:
        values.update(pause_requested=False, line_at=DbNow(delay))
    return Change(job_id, "retry", _when(S.FAILED, S.PENDING), S.PENDING, values,
                  retryable=True, actor=actor, reason=reason)


def start(job_id: str, source: JobState, worker_id: str, token: str,
          lease_seconds: float) -> Change:
    """pending -> running (``start``) or paused -> running (``resume``): a worker's claim.

    What a claim writes is :class:`~conveyor.changes.ClaimStart`, which the stores' claim
    queries read too, so a store that claims many jobs in one statement writes the same.
    """
    return ClaimStart(worker_id, lease_seconds).change(job_id, source, token)


def run_now(job_id: str, actor: str, reason: str) -> Change:
    """A pending job waiting out a delay or a backoff becomes runnable now; it joins the line
    now too (``line_at``), behind the jobs already waiting, as a job enqueued now would."""
    return Change(job_id, "run_now", frozenset({S.PENDING}), None,
                  {"run_at": DbNow(), "line_at": DbNow()}, actor=actor, reason=reason)


def reschedule(job_id: str, actor: str, reason: str, *, run_at: datetime | float | None,
               priority: int | None) -> Change:
    """A pending job's new not-before time (a datetime, or seconds from the database's now)
    and/or priority. A new time is a new place in line, as if enqueued with it."""
    values: dict[str, Any] = {}
    if run_at is not None:
        when = DbNow(run_at) if isinstance(run_at, float | int) else run_at
        values.update(run_at=when, line_at=when)
    if priority is not None:
        values["priority"] = priority
    return Change(job_id, "reschedule", frozenset({S.PENDING}), None, values, actor=actor,
                  reason=reason)


#: For each control verb, the states it accepts (derived from the table where it is a move).
CANCELLABLE = sources_of(S.CANCELLED)
PAUSABLE = sources_of(S.PAUSED)
RETRYABLE = _when(S.FAILED, S.PENDING)
