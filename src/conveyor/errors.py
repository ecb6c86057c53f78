"""Every error a user of conveyor can cause or meet, one class each.

Callers catch :class:`ConveyorError` to handle anything conveyor raises on purpose; the
subclasses exist so that the CLI and the HTTP API can map each failure to an exit code or a
status without parsing messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.model import Job

#: The ``error.type`` a store gives a job, read by id, whose row it could not fully decode.
UNDECODABLE_ROW = "UndecodableRow"


class ConveyorError(Exception):
    """Base class of every error conveyor raises deliberately."""


class InvalidStateError(ConveyorError):
    """A lifecycle move that the transition table does not allow (or whose guard failed).

    The message always names both states, e.g. ``Cannot transition from completed to running``.
    """

    def __init__(self, message: str, *, from_state: str | None = None, to_state: str | None = None):
        super().__init__(message)
        self.from_state = from_state
        self.to_state = to_state


class JobNotFound(ConveyorError):
    """No job has the given id."""

    def __init__(self, job_id: str, message: str | None = None):
        super().__init__(message or f"No job with id {job_id!r}")
        self.job_id = job_id


class WaitTimeout(ConveyorError, TimeoutError):
    """:meth:`Conveyor.wait` ran out of time; the job is left as it is."""


class JobNotCompleted(InvalidStateError):
    """A job's result was asked for, but the job has not completed (its state is named)."""

    def __init__(self, job: Job) -> None:
        why = f": {job.error.type}: {job.error.message}" if job.error is not None else ""
        super().__init__(f"Job {job.id} has no result: it is {job.state.value}, not "
                         f"completed{why}", from_state=job.state.value)
        self.job = job


class UnknownJobType(ConveyorError):
    """The job type is not registered with the app."""

    def __init__(self, job_type: str, known: list[str] | None = None):
        hint = f" (registered: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"Unknown job type {job_type!r}{hint}")
        self.job_type = job_type


class InvalidParams(ConveyorError):
    """Params that are not JSON, do not fit the job function's signature, or are too large."""


class PayloadTooLarge(InvalidParams):
    """A params or result payload over the documented size limit."""


class ConfigurationError(ConveyorError):
    """A malformed store URL or an option out of range."""


class StoreError(ConveyorError):
    """The store cannot be used: unreachable, corrupt, foreign, or of a newer schema."""


class DuplicateJob(ConveyorError):
    """An enqueue with ``unique_key`` and ``on_conflict="raise"`` met an unfinished job holding
    that key. ``job`` is that existing job; nothing was written."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} ({job.state.value}) already holds unique key "
                         f"{job.unique_key!r}")
        self.job = job


class LeaseLost(ConveyorError):
    """A worker wrote to a job whose lease it no longer holds (fencing refused the write).

    Internal to workers: it never reaches a caller of the control API.
    """


class FailJob(Exception):
    """Raise in a job function to fail the job for good: no automatic retry, whatever its
    ``retry_on`` says and however many attempts are left (``retry=True``: an ordinary failure,
    retried as any other). Its message is the job's error message."""

    def __init__(self, message: str = "", *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class WorkerNotFound(ConveyorError):
    """No live worker has the given id (it never registered, stopped, or is gone)."""

    def __init__(self, worker_id: str, why: str = "") -> None:
        super().__init__(f"No running worker with id {worker_id!r}{why}")
        self.worker_id = worker_id
