"""What a job function receives: progress, checkpoints, and the pause/cancel requests.

Progress calls only touch memory; the worker's monitor writes them out a few times a second,
so ``ctx.advance()`` in a tight loop costs a few hundred nanoseconds, not a database write.

Pause and cancel take effect at ``ctx.checkpoint()`` by raising a :class:`JobInterrupt`. It
derives from ``BaseException`` so that job code written as ``except Exception:`` cannot swallow
it by accident; the worker catches it and performs the transition.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar, runtime_checkable

from conveyor import payload
from conveyor.errors import LeaseLost, StoreError
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobProgress
from conveyor.registry import check_seconds

if TYPE_CHECKING:
    from conveyor.changes import Lease
    from conveyor.joblogs import JobLog
    from conveyor.observe import RunWatch
    from conveyor.stores.base import Signals


log = logging.getLogger("conveyor.worker")
#: First and longest pause between two tries of a checkpoint write during a store outage.
T = TypeVar("T")
RETRY_FIRST = 0.1
RETRY_MAX = 2.0


#: Where ctx.log() goes when the job has no log of its own in this process.
_job_log = logging.getLogger("conveyor.job")


class ProgressWriter(Protocol):
    """Where a running job's progress goes: the worker's engine (a bare store in tests)."""

    def save_progress(self, lease: Lease, progress: JobProgress, *,
                      checkpoint: bool = False) -> Signals: ...


@runtime_checkable
class DependencyReader(Protocol):
    """What ``ctx.dependency_results()`` reads from (the worker's engine, or a store)."""

    def dependencies(self, job_id: str) -> tuple[list[Job], list[Job]]: ...


class JobInterrupt(BaseException):
    """Unwinds a job function at a checkpoint; never catch it in job code."""


class PauseInterrupt(JobInterrupt):
    """The job was asked to pause (by an operator, or by its worker shutting down)."""


class CancelInterrupt(JobInterrupt):
    """The job was asked to cancel."""


class ForcedCancelInterrupt(CancelInterrupt):
    """Raised by the worker in a job that ignored a cancel request past the grace period."""


class LeaseLostInterrupt(JobInterrupt):
    """The worker no longer holds the job; it must stop without writing anything."""


class SnoozeInterrupt(JobInterrupt):
    """Raised by ``ctx.snooze()``: the worker puts the job back to pending for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"snoozed for {seconds:g}s")
        self.seconds = seconds


class TimeoutInterrupt(JobInterrupt):
    """The job ran past its timeout."""


@dataclass
class Execution:
    """The worker-side state of one running job, shared by the job and the worker's monitor.

    ``retry_for``: how long a checkpoint write keeps trying through a store outage (the
    worker's lease). A write is fenced by the lease and idempotent, so trying again is safe;
    an outage shorter than the lease must not fail the job. Past the lease the job may be
    another worker's, and the error reaches the job.
    """

    job: Job
    lease: Lease
    store: ProgressWriter
    retry_for: float = 30.0
    current: int = 0
    total: int = 0
    checkpoint: dict[str, Any] = field(default_factory=dict)
    dirty: bool = False
    db_pause: bool = False
    db_cancel: bool = False
    shutdown: bool = False
    lost: bool = False
    timed_out: bool = False
    #: The job's thread is inside the job's own code; changed and read under ``gate``, the
    #: only place a forced interrupt may be sent from (at most once: ``interrupted``).
    in_user_code: bool = False
    interrupted: bool = False
    gate: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    progressed: bool = False
    #: A checkpoint is being written (and maybe retried through an outage): progress writes
    #: from the monitor skip their turn rather than wait behind it.
    saving: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The run's log lines (None: job logs are off), and the worker's metrics and tracing
    #: hooks (None when neither is on: the executor then only checks this one attribute).
    logs: JobLog | None = None
    watch: RunWatch | None = None

    def __post_init__(self) -> None:
        self.current = self.job.progress.current_step
        self.total = self.job.progress.total_steps
        self.checkpoint = dict(self.job.progress.last_checkpoint)
        self.db_pause = self.job.pause_requested
        self.db_cancel = self.job.cancel_requested

    def snapshot(self) -> JobProgress:
        return JobProgress(self.current, self.total, self.checkpoint)

    def apply_signals(self, signals: Signals) -> None:
        self.db_pause = signals.pause_requested
        self.db_cancel = signals.cancel_requested

    def flush(self) -> bool:
        """Write progress if it changed; returns whether a write happened.

        Never waits behind a checkpoint that is being written (that write carries the progress
        too), and a failed write leaves the progress dirty, to be written on a later call.
        """
        if not self.dirty or self.lost or self.saving:
            return False
        with self.lock:
            try:
                self.dirty = False
                signals = self.store.save_progress(self.lease, self.snapshot())
            except LeaseLost:
                self.lost = True
                return False
            except BaseException:
                self.dirty = True
                raise
        self.apply_signals(signals)
        return True

    def patiently(self, write: Callable[[], T], what: str = "checkpoint") -> T:
        """``write()``, tried again through a store outage for up to ``retry_for`` seconds.

        Used for the job's checkpoints and, by the worker, for the final progress and the
        outcome: each is fenced by the lease, so repeating it can never write to a job that
        is no longer ours.
        """
        deadline = time.monotonic() + self.retry_for
        pause = RETRY_FIRST
        while True:
            try:
                return write()
            except StoreError as exc:
                if self.lost or time.monotonic() + pause >= deadline:
                    raise
                if pause == RETRY_FIRST:  # once per outage, not once per try
                    log.warning("job %s: %s not saved (%s); trying again for up to %.0fs",
                                self.job.id, what, exc, deadline - time.monotonic())
                time.sleep(pause)
                pause = min(RETRY_MAX, pause * 2)

    def save_checkpoint(self, data: dict[str, Any]) -> None:
        payload.validate_object(data, "checkpoint")
        if self.lost:
            raise LeaseLostInterrupt
        self.saving = True  # before taking the lock: the monitor stops queueing for it
        try:
            with self.lock:
                self.checkpoint = dict(data)
                self.dirty = False
                snapshot = self.snapshot()
                signals = self.patiently(
                    lambda: self.store.save_progress(self.lease, snapshot, checkpoint=True))
        except LeaseLost:
            self.lost = True
            raise LeaseLostInterrupt from None
        finally:
            self.saving = False
        self.progressed = True
        self.apply_signals(signals)

    def interrupt_if_requested(self) -> None:
        if self.lost:
            raise LeaseLostInterrupt
        if self.db_cancel:
            raise CancelInterrupt
        if self.db_pause or self.shutdown:
            raise PauseInterrupt


class _BaseContext:
    def __init__(self, execution: Execution) -> None:
        self._x = execution

    @property
    def job(self) -> Job:
        """The job as claimed: id, type, attempt, params."""
        return self._x.job

    @property
    def checkpoint_data(self) -> dict[str, Any]:
        """The last saved checkpoint (``{}`` on a first run): where to resume from."""
        return dict(self._x.checkpoint)

    @property
    def pause_requested(self) -> bool:
        return self._x.db_pause or self._x.shutdown

    @property
    def cancel_requested(self) -> bool:
        return self._x.db_cancel

    def progress(self, current: int, total: int | None = None) -> None:
        """Set progress to ``current`` (of ``total``); cheap, written out in the background."""
        self._x.current = int(current)
        if total is not None:
            self._x.total = int(total)
        self._x.dirty = True

    def advance(self, n: int = 1) -> None:
        """Add ``n`` steps; safe to call in a tight loop."""
        self._x.current += n
        self._x.dirty = True

    def log(self, message: str, level: str = "info") -> None:
        """Add a line to this attempt's log (``conveyor logs ID``), whatever the ``logging``
        setup; cheap: written out in the background with the run's other lines."""
        name = str(level).upper()[:20]
        if self._x.logs is not None:
            self._x.logs.add(name, str(message))
        else:  # in a process-pool child: the record travels to the worker, which keeps it
            number = logging.getLevelName(name)
            _job_log.log(number if isinstance(number, int) else logging.INFO, "%s", message)

    def _dependency_results(self) -> dict[str, Any]:
        reader = self._x.store
        if not isinstance(reader, DependencyReader):  # pragma: no cover - tests' stand-ins
            raise TypeError("this job's context cannot read its dependencies")
        upstream, _ = reader.dependencies(self._x.job.id)
        return {job.id: job.result for job in upstream if job.state is JobState.COMPLETED}

    def snooze(self, seconds: float) -> NoReturn:
        """Put this job back to pending, to run again in ``seconds``, without spending an
        attempt (a ``snooze`` row in its history). Raises: let it propagate."""
        check_seconds("seconds", seconds, zero_ok=True)
        raise SnoozeInterrupt(float(seconds))


class JobContext(_BaseContext):
    """The context of a sync job (run in a worker thread)."""

    def dependency_results(self) -> dict[str, Any]:
        """What the jobs this one depends on returned, by job id, in the order they were
        enqueued (a group's final job reads its members' results this way). A dependency
        that did not complete (``on_dependency_failure="run"``) is absent."""
        return self._dependency_results()

    def checkpoint(self, data: dict[str, Any] | None = None) -> None:
        """Save ``data`` and the progress durably; then honour a pause or cancel request.

        If a request is pending this raises a :class:`JobInterrupt`: let it propagate.
        """
        self._x.save_checkpoint(self._x.checkpoint if data is None else data)
        self._x.interrupt_if_requested()


class AsyncJobContext(_BaseContext):
    """The context of an ``async def`` job: the same API, with ``await ctx.checkpoint(...)``."""

    async def dependency_results(self) -> dict[str, Any]:
        """:meth:`JobContext.dependency_results`, read without blocking the event loop."""
        return await asyncio.to_thread(self._dependency_results)

    async def checkpoint(self, data: dict[str, Any] | None = None) -> None:
        """Save ``data`` without blocking the event loop; then honour a pending request."""
        snapshot = self._x.checkpoint if data is None else data
        await asyncio.to_thread(self._x.save_checkpoint, snapshot)
        self._x.interrupt_if_requested()
