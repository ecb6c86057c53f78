"""The per-job executor, as a pipeline of small steps (after Oban's executor).

build the context -> perform (sync in this thread, async on the worker's loop) -> normalise the
outcome -> record it with a compare-and-set fenced by the lease. A write refused by the store
means the worker lost the job (the reaper or an operator moved it); the outcome is then dropped,
never forced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor import payload, transitions
from conveyor.changes import Change, ChangeRefused, Lease
from conveyor.context import (
    AsyncJobContext,
    CancelInterrupt,
    Execution,
    ForcedCancelInterrupt,
    JobContext,
    LeaseLostInterrupt,
    PauseInterrupt,
    TimeoutInterrupt,
)
from conveyor.errors import ConveyorError, LeaseLost
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError, JobProgress
from conveyor.retry import Backoff

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.registry import JobType

log = logging.getLogger("conveyor.worker")


@dataclass(frozen=True)
class Outcome:
    """What a run came to, before it is recorded."""

    kind: str  # completed | failed | paused | cancelled | lost
    result: Any = None
    error: JobError | None = None
    reason: str = ""


def error_of(exc: BaseException, *, with_traceback: bool = True) -> JobError:
    text = "".join(traceback.format_exception(exc)) if with_traceback else ""
    return JobError(type(exc).__name__, str(exc), text)


def perform(spec: JobType, execution: Execution, loop: asyncio.AbstractEventLoop | None,
            on_future: Callable[[concurrent.futures.Future[Any]], None]) -> Outcome:
    """Run the job function and turn whatever happens into an :class:`Outcome`."""
    job = execution.job
    execution.in_user_code = True
    try:
        if spec.is_async:
            if loop is None:  # pragma: no cover - the worker always passes its loop
                raise RuntimeError("async job without an event loop")
            coro = spec.func(AsyncJobContext(execution), **job.params)
            future = asyncio.run_coroutine_threadsafe(coro, loop)
            on_future(future)
            try:
                value = future.result()
            except concurrent.futures.CancelledError:
                raise execution_cancel_reason(execution) from None
        else:
            value = spec.func(JobContext(execution), **job.params)
        execution.in_user_code = False
    except PauseInterrupt:
        return Outcome("paused", reason="worker shutdown" if execution.shutdown
                       and not execution.db_pause else "paused at checkpoint")
    except ForcedCancelInterrupt:
        return Outcome("cancelled", reason="stopped after the cancel grace period")
    except CancelInterrupt:
        return Outcome("cancelled", reason="cancelled at checkpoint")
    except LeaseLostInterrupt:
        return Outcome("lost")
    except TimeoutInterrupt:
        timeout = job.timeout
        return Outcome("failed", error=JobError("TimeoutError", f"job ran past its {timeout}s "
                                                "timeout"), reason="timed out")
    except _ForcedCancel:
        return Outcome("cancelled", reason="stopped after the cancel grace period")
    except BaseException as exc:  # noqa: BLE001 - job code may raise anything; we record it
        error = error_of(exc)
        return Outcome("failed", error=error, reason=f"raised {error}")
    finally:
        execution.in_user_code = False
    try:
        payload.validate(value, "result")
    except ConveyorError as exc:
        return Outcome("failed", error=error_of(exc, with_traceback=False),
                       reason="result is not JSON")
    return Outcome("completed", result=value)


class _ForcedCancel(BaseException):
    """An async job's task was cancelled by the worker (cancel grace or timeout)."""


class _ForcedTimeout(TimeoutInterrupt):
    pass


def execution_cancel_reason(execution: Execution) -> BaseException:
    """Which interrupt a cancelled asyncio task stands for."""
    if execution.timed_out:
        return _ForcedTimeout()
    return _ForcedCancel()


def outcome_changes(job: Job, lease: Lease, outcome: Outcome, actor: str,
                    rand: Callable[[], float], progress_of: Execution) -> list[Change]:
    """The fenced changes that record ``outcome`` (empty when the lease was lost)."""
    progress = progress_of.snapshot()
    if outcome.kind == "completed":
        return [transitions.complete(lease, outcome.result, actor)]
    if outcome.kind == "paused":
        return [transitions.pause_at_checkpoint(lease, progress, actor,
                                                resume=progress_of.shutdown
                                                and not progress_of.db_pause,
                                                reason=outcome.reason)]
    if outcome.kind == "cancelled":
        return [transitions.cancel_running(lease, job.id, progress, actor, outcome.reason)]
    if outcome.kind == "failed":
        if progress_of.db_cancel:
            reason = f"cancelled; the job {outcome.reason}"
            return [transitions.cancel_running(lease, job.id, progress, actor, reason)]
        assert outcome.error is not None
        return failure_changes(job, lease, outcome.error, outcome.reason, actor, rand)
    return []


def failure_changes(job: Job, lease: Lease | None, error: JobError, reason: str, actor: str,
                    rand: Callable[[], float], *, lease_expired: bool = False,
                    interrupted: bool = False) -> list[Change]:
    """running -> failed, then failed -> pending after the backoff if a retry is left.

    Both in one transaction: a crash can never leave a retryable job failed and forgotten.
    ``interrupted``: the run was cut short by its worker (lost, or shut down), not by the job,
    so the retry keeps the job's place in line and an operator's pending pause request.
    """
    retry_left = job.attempt < job.max_attempts
    changes = [transitions.fail(lease, job.id, error, reason, actor, lease_expired=lease_expired,
                                keep_pause=interrupted and retry_left)]
    if retry_left:
        delay = Backoff.from_dict(job.backoff).delay(job.attempt + 1, rand)
        changes.append(transitions.retry(job.id, actor, f"automatic retry in {delay:.1f}s",
                                         delay=delay, keep_place=interrupted))
    return changes


def record_failure(app: Conveyor, job: Job, lease: Lease, error: JobError, reason: str,
                   actor: str, *, progress: JobProgress | None = None,
                   lease_expired: bool = False, interrupted: bool = False,
                   cancel_reason: str | None = None) -> str:
    """Fail the run (and retry it), or record the cancel that was requested before the failure.

    The failure is refused by the store while ``cancel_requested`` is set, so a cancel that
    arrives between the worker's last look at the flags and this write still wins. Returns
    ``failed``, ``retried`` or ``cancelled``; raises :class:`ChangeRefused` when the lease is
    gone (the job is not ours to write any more).
    """
    changes = failure_changes(job, lease, error, reason, actor, app.rand,
                              lease_expired=lease_expired, interrupted=interrupted)
    try:
        app.apply(changes)
        return "retried" if len(changes) > 1 else "failed"
    except ChangeRefused as refused:
        now = refused.job
        if not (now.state is JobState.RUNNING and now.cancel_requested
                and now.lease_token == lease.token and now.attempt == lease.attempt):
            raise
    app.apply([transitions.cancel_running(
        lease, job.id, progress, actor, cancel_reason or f"cancelled; the job {reason}",
        lease_expired=lease_expired)])
    return "cancelled"


def record(app: Conveyor, execution: Execution, outcome: Outcome, actor: str) -> str:
    """Write the outcome; returns what was recorded (or ``lost``)."""
    if outcome.kind == "lost" or execution.lost:
        log.warning("job %s: lease lost, outcome %s dropped", execution.job.id, outcome.kind)
        return "lost"
    try:
        if outcome.kind == "failed" and not execution.db_cancel:
            assert outcome.error is not None
            return record_failure(app, execution.job, execution.lease, outcome.error,
                                  outcome.reason, actor, progress=execution.snapshot())
        app.apply(outcome_changes(execution.job, execution.lease, outcome, actor, app.rand,
                                  execution))
    except (ChangeRefused, LeaseLost):
        log.warning("job %s: lease lost before recording %s", execution.job.id, outcome.kind)
        return "lost"
    return "cancelled" if outcome.kind == "failed" else outcome.kind
