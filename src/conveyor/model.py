"""The seed's data model: :class:`Job` and :class:`JobProgress`, plus the records around them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conveyor import lifecycle
from conveyor.lifecycle import JobState

JSONDict = dict[str, Any]


#: What every job id looks like: conveyor makes them (canonical UUID text; new ids are time-ordered
#: v7, see :mod:`conveyor.ids`), so any other string names no job. The core's checks and the
#: API's schema both use this one pattern.
JOB_ID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def utcnow() -> datetime:
    """The one clock default: aware UTC, so times compare across processes and stores."""
    return datetime.now(UTC)


@dataclass
class JobProgress:
    """How far a job got, and the checkpoint it can resume from (the seed's Memento).

    ``total_steps`` may be 0 when the job does not know its total; ``percent`` is then 0.
    """

    current_step: int = 0
    total_steps: int = 0
    last_checkpoint: JSONDict = field(default_factory=dict)

    @property
    def percent(self) -> float:
        if not self.total_steps:
            return 0.0
        return min(100.0, (self.current_step / self.total_steps) * 100)

    def to_dict(self) -> JSONDict:
        return {
            "current_step": self.current_step,
            "total_steps": self.total_steps,
            "percent": round(self.percent, 2),
            "last_checkpoint": self.last_checkpoint,
        }


@dataclass(frozen=True)
class JobError:
    """What a failed attempt left behind: exception type, message and formatted traceback."""

    type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type

    def to_dict(self) -> JSONDict:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


@dataclass
class Job:
    """A job as stored: configuration (immutable after creation), state, progress and outcome.

    The seed's fields come first; the rest are what a durable, leased, scheduled job needs.
    """

    id: str
    state: JobState = JobState.PENDING
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    job_type: str = ""
    params: JSONDict = field(default_factory=dict)
    max_attempts: int = 3

    attempt: int = 0
    progress: JobProgress = field(default_factory=JobProgress)
    result: Any = None
    error: JobError | None = None

    queue: str = "default"
    priority: int = 0
    run_at: datetime = field(default_factory=utcnow)
    timeout: float | None = None
    pause_timeout: float = 24 * 3600.0
    backoff: JSONDict = field(default_factory=dict)
    updated_at: datetime = field(default_factory=utcnow)
    paused_at: datetime | None = None
    pause_requested: bool = False
    cancel_requested: bool = False
    resume_requested: bool = False
    worker_id: str | None = None
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    requeued_from: str | None = None
    unique_key: str | None = None
    #: The W3C ``traceparent`` of the span the job was enqueued under (OpenTelemetry), if any.
    trace: str | None = field(default=None, repr=False)
    #: The job type's ``limit_key`` template filled from the params at enqueue ("tenant:7"):
    #: a per-key limit of the type applies to each value.
    limit_key: str | None = None
    #: How many of the jobs this one depends on have not completed yet: a pending job with
    #: any is not claimable (it waits for them; see docs/workflows.md).
    waiting_on: int = 0
    #: Some other job depends on this one (its end releases or cancels them).
    has_dependents: bool = False
    #: What happens to this job when a dependency fails for good or is cancelled:
    #: ``"cancel"`` (the default) or ``"run"`` (count it as done and run anyway).
    on_dependency_failure: str = "cancel"
    #: Not stored: True when an enqueue with ``unique_key`` returned this job, which already
    #: held the key, instead of creating one.
    existing: bool = field(default=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        """Completed, cancelled, or failed with no retry left: nothing will move it again."""
        return lifecycle.is_terminal(
            self.state, attempt=self.attempt, max_attempts=self.max_attempts
        )

    @property
    def pending_requests(self) -> list[str]:
        """The operator requests still waiting to take effect, as shown ("cancel requested").

        A job that has stopped for good has none, whatever flags its last run left behind:
        a cancelled job was not still "cancel requested".
        """
        if self.is_terminal:
            return []
        return [name.replace("_", " ") for name in
                ("pause_requested", "cancel_requested", "resume_requested") if getattr(self, name)]

    @property
    def can_retry(self) -> bool:
        return self.state is JobState.FAILED and self.attempt < self.max_attempts

    @property
    def legal_actions(self) -> list[str]:
        """The control verbs that would change this job now, from the lifecycle's verbs table.

        This is what the CLI and the dashboard offer. A request already made (a second pause
        of a job asked to pause) is not offered: it succeeds but changes nothing.
        """
        return [verb.value for verb in lifecycle.legal_verbs(self)]

    def to_dict(self) -> JSONDict:
        """A JSON-ready view, shared by the CLI's ``--json`` and the HTTP API."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "job_type": self.job_type,
            "state": self.state.value,
            "queue": self.queue,
            "priority": self.priority,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "params": self.params,
            "progress": self.progress.to_dict(),
            "result": self.result,
            "error": self.error.to_dict() if self.error else None,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "run_at": iso(self.run_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "paused_at": iso(self.paused_at),
            "timeout": self.timeout,
            "pause_timeout": self.pause_timeout,
            "pause_requested": self.pause_requested,
            "cancel_requested": self.cancel_requested,
            "resume_requested": self.resume_requested,
            "worker_id": self.worker_id,
            "lease_expires_at": iso(self.lease_expires_at),
            "requeued_from": self.requeued_from,
            "unique_key": self.unique_key,
            "limit_key": self.limit_key,
            "waiting_on": self.waiting_on,
            "on_dependency_failure": self.on_dependency_failure,
            "is_terminal": self.is_terminal,
            "legal_actions": self.legal_actions,
        }


@dataclass(frozen=True)
class HistoryEntry:
    """One row of a job's audit trail: a transition, or a request recorded against the job.

    For a request (``pause_requested``, ...) ``from_state`` equals ``to_state``.
    """

    id: int
    job_id: str
    at: datetime
    action: str
    from_state: JobState | None
    to_state: JobState
    attempt: int
    actor: str
    reason: str

    def to_dict(self) -> JSONDict:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "at": self.at.isoformat(),
            "action": self.action,
            "from_state": self.from_state.value if self.from_state else None,
            "to_state": self.to_state.value,
            "attempt": self.attempt,
            "actor": self.actor,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class LogLine:
    """One line a job logged while it ran (``logging`` or ``ctx.log``), kept per attempt.

    ``id`` orders every line of a job and is the cursor to read after; ``seq`` numbers the lines
    of one attempt (the first lines of a long attempt are dropped, so it may not start at 1).
    """

    id: int
    job_id: str
    attempt: int
    seq: int
    at: datetime
    level: str
    message: str

    def to_dict(self) -> JSONDict:
        return {"id": self.id, "attempt": self.attempt, "seq": self.seq,
                "at": self.at.isoformat(), "level": self.level, "message": self.message}


@dataclass(frozen=True)
class QueueInfo:
    """A queue as operators see it: whether claims skip it, who changed that last, when and
    why, and how many of its jobs are in each state (states with none are left out)."""

    name: str
    paused: bool = False
    changed_at: datetime | None = None
    actor: str = ""
    reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    #: The queue's claim-time limits (None: unlimited) and who set them last, when and why.
    max_running: int | None = None
    rate_limit: str | None = None
    limit_changed_at: datetime | None = None
    limit_actor: str = ""
    limit_reason: str = ""

    def to_dict(self) -> JSONDict:
        return {
            "name": self.name, "paused": self.paused,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
            "actor": self.actor, "reason": self.reason, "counts": dict(self.counts),
            "max_running": self.max_running, "rate_limit": self.rate_limit,
            "limit_changed_at": (self.limit_changed_at.isoformat()
                                 if self.limit_changed_at else None),
            "limit_actor": self.limit_actor, "limit_reason": self.limit_reason,
        }


@dataclass(frozen=True)
class ScheduleInfo:
    """A periodic schedule as the store keeps it (so it can be listed without the app): when a
    worker first and last registered it, and its latest tick and that tick's job."""

    name: str
    cron: str
    timezone: str
    job_type: str
    queue: str | None = None
    first_seen: datetime | None = None
    seen_at: datetime | None = None
    last_tick: datetime | None = None
    last_job_id: str | None = None
    next_run: datetime | None = None

    def to_dict(self) -> JSONDict:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {"name": self.name, "cron": self.cron, "timezone": self.timezone,
                "job_type": self.job_type, "queue": self.queue,
                "first_seen": iso(self.first_seen), "seen_at": iso(self.seen_at),
                "last_tick": iso(self.last_tick), "last_job_id": self.last_job_id,
                "next_run": iso(self.next_run)}
