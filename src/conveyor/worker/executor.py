"""The per-job executor, as a pipeline of small typed steps (after Oban's executor).

record started (the claim, done by the worker's loop) -> resolve the job type -> perform (sync
in the slot's thread, async on the worker's loop) -> normalise what happened into an
:class:`Outcome` -> record finished, a compare-and-set fenced by the lease. A write refused by
the store means the worker lost the job (the reaper or an operator moved it); the outcome is
then dropped, never forced. Each step takes the previous one's value; the last one hands a
completion to the worker's batch (:mod:`conveyor.worker.completer`), which writes many in one
transaction, and records the rarer outcomes (failed, paused, cancelled) itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor import joblogs, payload, transitions
from conveyor.changes import Change, ChangeRefused, Lease
from conveyor.context import (
    AsyncJobContext,
    CancelInterrupt,
    Execution,
    ForcedCancelInterrupt,
    JobContext,
    LeaseLostInterrupt,
    PauseInterrupt,
    SnoozeInterrupt,
    TimeoutInterrupt,
)
from conveyor.errors import ConveyorError, LeaseLost
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError, JobProgress
from conveyor.retry import Backoff
from conveyor.worker.slots import enter_user_code, leave_user_code

if TYPE_CHECKING:
    from conveyor.engine import Engine
    from conveyor.registry import JobType

log = logging.getLogger("conveyor.worker")


class OutcomeKind(enum.Enum):
    """What a run came to. A run ends completed, failed, paused, cancelled or lost; recording
    a failure may retry it; a shutdown releases a run that would not stop."""

    COMPLETED = "completed"
    FAILED = "failed"
    RETRIED = "retried"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    LOST = "lost"
    RELEASED = "released"
    SNOOZED = "snoozed"


@dataclass(slots=True)
class Outcome:
    """What a run came to, before it is recorded (never changed once built, so one may be
    shared, as :data:`_COMPLETED_NOTHING` is; not frozen, as a frozen dataclass sets each
    field through ``object.__setattr__``)."""

    kind: OutcomeKind
    result: Any = None
    error: JobError | None = None
    reason: str = ""
    #: What the failed run raised (a TimeoutError for a timeout), for the retry policy.
    raised: BaseException | None = None
    #: How long a snoozed job waits before it runs again (seconds).
    delay: float = 0.0


#: The outcome of every run that completed and returned None (an outcome is never changed).
_COMPLETED_NOTHING = Outcome(OutcomeKind.COMPLETED)


@dataclass(slots=True)
class Ran:
    """What the job function did: returned ``value``, or raised ``raised`` (not frozen, as
    :class:`Outcome`)."""

    value: Any = None
    raised: BaseException | None = None


def error_of(exc: BaseException, *, with_traceback: bool = True) -> JobError:
    text = "".join(traceback.format_exception(exc)) if with_traceback else ""
    return JobError(type(exc).__name__, str(exc), text)


# -- the pipeline -------------------------------------------------------------------------------

#: Where a completion goes to be written in a batch (:class:`~conveyor.worker.completer.Completer`).
Batch = Callable[[Execution, Change], None]
#: Runs the job somewhere else (the process pool's child) and says what came of it.
Run = Callable[["JobType", Execution], "Outcome"]


def execute(engine: Engine, execution: Execution, actor: str, *,
            loop_of: Callable[[JobType], asyncio.AbstractEventLoop | None],
            on_future: Callable[[concurrent.futures.Future[Any]], None],
            batch: Batch | None = None, run: Run | None = None) -> OutcomeKind | None:
    """Run one claimed job to its recorded end; returns what was recorded (None: a completion
    handed to ``batch``, which records it and says what came of it). ``run``: perform and
    normalise elsewhere (in a child process) instead of in this thread."""
    watch = execution.watch
    if watch is not None:  # metrics or tracing: with both off, this check is all they cost
        return watch.run(execution, lambda: _pipeline(engine, execution, actor, loop_of,
                                                      on_future, batch, run))
    return _pipeline(engine, execution, actor, loop_of, on_future, batch, run)


def _pipeline(engine: Engine, execution: Execution, actor: str,
              loop_of: Callable[[JobType], asyncio.AbstractEventLoop | None],
              on_future: Callable[[concurrent.futures.Future[Any]], None],
              batch: Batch | None, run: Run | None) -> OutcomeKind | None:
    spec = resolve(engine, execution.job)
    logs = execution.logs
    routed = joblogs.CURRENT.set(logs) if logs is not None else None
    try:
        if run is not None:  # a child process's log records come back through this thread
            outcome = run(spec, execution)
        else:
            outcome = normalise(perform(spec, execution, loop_of(spec), on_future), execution)
    finally:
        if routed is not None:
            joblogs.CURRENT.reset(routed)
    if logs is not None and logs.has_pending:  # the run's last lines land before its outcome
        joblogs.write(engine.store, [logs], wait=True)
    return record_finished(engine, execution, outcome, actor, batch)


def resolve(engine: Engine, job: Job) -> JobType:
    return engine.job_type(job.job_type)


def perform(spec: JobType, execution: Execution, loop: asyncio.AbstractEventLoop | None,
            on_future: Callable[[concurrent.futures.Future[Any]], None]) -> Ran:
    """Call the job function; whatever it returns or raises is kept for :func:`normalise`.

    A forced interrupt is only ever raised in this thread between entering and leaving the
    job's code; leaving clears one that was sent but had not fired, and if it fires while
    leaving it is caught here like any other.
    """
    try:
        enter_user_code(execution)
        try:
            value = _call(spec, execution, loop, on_future)
        finally:
            leave_user_code(execution)
    except BaseException as exc:  # noqa: BLE001 - job code may raise anything; we record it
        leave_user_code(execution)
        return Ran(raised=exc)
    return Ran(value)


def _call(spec: JobType, execution: Execution, loop: asyncio.AbstractEventLoop | None,
          on_future: Callable[[concurrent.futures.Future[Any]], None]) -> Any:
    job = execution.job
    if not spec.is_async:
        return spec.func(JobContext(execution), **job.params)
    if loop is None:  # pragma: no cover - the worker always passes its loop
        raise RuntimeError("async job without an event loop")
    coro = spec.func(AsyncJobContext(execution), **job.params)
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    on_future(future)
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        raise execution_cancel_reason(execution) from None


def normalise(ran: Ran, execution: Execution) -> Outcome:
    """Turn what the job did into an :class:`Outcome`."""
    exc = ran.raised
    if exc is None:
        if ran.value is None:  # most jobs' result: valid JSON, one shared outcome
            return _COMPLETED_NOTHING
        try:
            payload.validate(ran.value, "result")
        except ConveyorError as bad:
            return Outcome(OutcomeKind.FAILED, error=error_of(bad, with_traceback=False),
                           reason="result is not JSON", raised=bad)
        return Outcome(OutcomeKind.COMPLETED, result=ran.value)
    if isinstance(exc, PauseInterrupt):
        return Outcome(OutcomeKind.PAUSED, reason="worker shutdown" if execution.shutdown
                       and not execution.db_pause else "paused at checkpoint")
    if isinstance(exc, ForcedCancelInterrupt | _ForcedCancel):
        return Outcome(OutcomeKind.CANCELLED, reason="stopped after the cancel grace period")
    if isinstance(exc, CancelInterrupt):
        return Outcome(OutcomeKind.CANCELLED, reason="cancelled at checkpoint")
    if isinstance(exc, LeaseLostInterrupt):
        return Outcome(OutcomeKind.LOST)
    if isinstance(exc, SnoozeInterrupt):
        return Outcome(OutcomeKind.SNOOZED, delay=exc.seconds)
    if isinstance(exc, TimeoutInterrupt):
        error = JobError("TimeoutError", f"job ran past its {execution.job.timeout}s timeout")
        return Outcome(OutcomeKind.FAILED, error=error, reason="timed out",
                       raised=TimeoutError(error.message))
    error = error_of(exc)
    return Outcome(OutcomeKind.FAILED, error=error, reason=f"raised {error}", raised=exc)


def record_finished(engine: Engine, execution: Execution, outcome: Outcome,
                    actor: str, batch: Batch | None = None) -> OutcomeKind | None:
    """Write the final progress, then the outcome; or hand a completion, its last steps in
    it, to ``batch``.

    A store outage shorter than the lease must not cost the job its outcome: both writes are
    retried like a checkpoint (each is fenced by the lease, so repeating it is safe).
    """
    execution.finished = True
    if batch is not None and outcome.kind is OutcomeKind.COMPLETED and not execution.lost:
        steps = execution.snapshot() if execution.dirty else None
        batch(execution, transitions.complete(execution.lease, outcome.result, actor,
                                              progress=steps))
        return None
    execution.patiently(execution.flush, "progress")
    return execution.patiently(lambda: record(engine, execution, outcome, actor), "outcome")


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
    if outcome.kind is OutcomeKind.COMPLETED:
        return [transitions.complete(lease, outcome.result, actor)]
    if outcome.kind is OutcomeKind.PAUSED:
        return [transitions.pause_at_checkpoint(lease, progress, actor,
                                                resume=progress_of.shutdown
                                                and not progress_of.db_pause,
                                                reason=outcome.reason)]
    if outcome.kind is OutcomeKind.CANCELLED:
        return [transitions.cancel_running(lease, job.id, progress, actor, outcome.reason)]
    if outcome.kind is OutcomeKind.SNOOZED:
        return [transitions.snooze(lease, outcome.delay, progress, actor)]
    if outcome.kind is OutcomeKind.FAILED:
        if progress_of.db_cancel:
            reason = f"cancelled; the job {outcome.reason}"
            return [transitions.cancel_running(lease, job.id, progress, actor, reason)]
        assert outcome.error is not None
        return failure_changes(job, lease, outcome.error, outcome.reason, actor, rand)
    return []


def failure_changes(job: Job, lease: Lease | None, error: JobError, reason: str, actor: str,
                    rand: Callable[[], float], *, lease_expired: bool = False,
                    interrupted: bool = False, for_good: str | None = None,
                    auto_retry: bool = True) -> list[Change]:
    """running -> failed, then failed -> pending after the backoff if a retry is left.

    Both in one transaction: a crash can never leave a retryable job failed and forgotten.
    ``interrupted``: the run was cut short by its worker (lost, or shut down), not by the job,
    so the retry keeps the job's place in line and an operator's pending pause request; it is
    retried even when its type has ``auto_retry=False`` (the job did not fail).
    ``for_good``: why the job's retry policy gives up on this failure (its retries are then
    closed); ``auto_retry`` False: the job stays failed with its retries left, for retry().
    """
    closing = for_good is not None and job.attempt < job.max_attempts
    retry_left = job.attempt < job.max_attempts and for_good is None
    changes = [transitions.fail(lease, job.id, error, f"{reason}; {for_good}" if closing
                                else reason, actor, lease_expired=lease_expired,
                                keep_pause=interrupted and retry_left,
                                close_budget=job.attempt if closing else None)]
    if retry_left and (auto_retry or interrupted):
        delay = Backoff.from_dict(job.backoff).delay(job.attempt + 1, rand)
        changes.append(transitions.retry(job.id, actor, f"automatic retry in {delay:.1f}s",
                                         delay=delay, keep_place=interrupted))
    return changes


def record_failure(engine: Engine, job: Job, lease: Lease, error: JobError, reason: str,
                   actor: str, *, progress: JobProgress | None = None,
                   lease_expired: bool = False, interrupted: bool = False,
                   cancel_reason: str | None = None,
                   raised: BaseException | None = None) -> OutcomeKind:
    """Fail the run (and retry it), or record the cancel that was requested before the failure.

    The failure is refused by the store while ``cancel_requested`` is set, so a cancel that
    arrives between the worker's last look at the flags and this write still wins. Returns
    FAILED, RETRIED or CANCELLED; raises :class:`ChangeRefused` when the lease is gone (the
    job is not ours to write any more). ``raised``: what the run raised, for the retry policy
    of the job's type (when this process knows the type).
    """
    spec = engine.types.get(job.job_type)
    policy = spec.options if spec is not None and not interrupted else None
    changes = failure_changes(job, lease, error, reason, actor, engine.rand,
                              lease_expired=lease_expired, interrupted=interrupted,
                              for_good=policy.gives_up_on(raised) if policy else None,
                              auto_retry=policy.auto_retry if policy else True)
    try:
        engine.apply(changes)
        return OutcomeKind.RETRIED if len(changes) > 1 else OutcomeKind.FAILED
    except ChangeRefused as refused:
        now = refused.job
        if not (now.state is JobState.RUNNING and now.cancel_requested
                and now.lease_token == lease.token and now.attempt == lease.attempt):
            raise
    engine.apply([transitions.cancel_running(
        lease, job.id, progress, actor, cancel_reason or f"cancelled; the job {reason}",
        lease_expired=lease_expired)])
    return OutcomeKind.CANCELLED


def record_snooze(engine: Engine, execution: Execution, outcome: Outcome,
                  actor: str) -> OutcomeKind:
    """Put the job back to pending for its snooze; a cancel requested meanwhile wins (the
    snooze is refused while one is set), as it does over a failure."""
    x = execution
    try:
        engine.apply(outcome_changes(x.job, x.lease, outcome, actor, engine.rand, x))
        return OutcomeKind.SNOOZED
    except ChangeRefused as refused:
        now = refused.job
        if not (now.state is JobState.RUNNING and now.cancel_requested
                and now.lease_token == x.lease.token):
            raise
    engine.apply([transitions.cancel_running(x.lease, x.job.id, x.snapshot(), actor,
                                             "cancelled; the job asked to snooze")])
    return OutcomeKind.CANCELLED


def record(engine: Engine, execution: Execution, outcome: Outcome, actor: str) -> OutcomeKind:
    """Write the outcome; returns what was recorded (LOST when the lease was gone)."""
    if outcome.kind is OutcomeKind.LOST or execution.lost:
        log.warning("job %s: lease lost, outcome %s dropped", execution.job.id,
                    outcome.kind.value)
        return OutcomeKind.LOST
    try:
        if outcome.kind is OutcomeKind.FAILED and not execution.db_cancel:
            assert outcome.error is not None
            return record_failure(engine, execution.job, execution.lease, outcome.error,
                                  outcome.reason, actor, progress=execution.snapshot(),
                                  raised=outcome.raised)
        if outcome.kind is OutcomeKind.SNOOZED:
            return record_snooze(engine, execution, outcome, actor)
        engine.apply(outcome_changes(execution.job, execution.lease, outcome, actor,
                                     engine.rand, execution))
    except (ChangeRefused, LeaseLost):
        log.warning("job %s: lease lost before recording %s", execution.job.id,
                    outcome.kind.value)
        return OutcomeKind.LOST
    # a failure recorded while a cancel was requested is the cancel
    return OutcomeKind.CANCELLED if outcome.kind is OutcomeKind.FAILED else outcome.kind
