"""The Store protocol: the narrow seam between conveyor's core and a database.

Internal API. A store holds no policy: it never decides to retry, back off, rescue or time out.
It offers verb-named operations, and one generic compare-and-set, :meth:`Store.apply`, that the
core's named transitions (:mod:`conveyor.transitions`) are built on. Every change of state is a
conditional update on the job's current state (and, for a worker's write, on its lease token and
attempt), and is written in the same transaction as its history row.

Times that must be judged by the database's clock (leases, run_at, pause timeouts) are passed
as :class:`DbNow` markers and resolved by the store, so workers on machines with skewed clocks
still agree on when a lease has expired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job, JobProgress


@dataclass(frozen=True)
class DbNow:
    """The database's current time plus ``offset`` seconds, resolved inside the store."""

    offset: float = 0.0


@dataclass(frozen=True)
class Increment:
    """Add ``by`` to the column's current value."""

    by: int = 1


@dataclass(frozen=True)
class FirstTime:
    """Set the column to the database's now only if it is still NULL (``started_at``)."""


#: Columns a :class:`Change` may set, and how the store must encode them.
JSON_COLUMNS = frozenset({"result", "error", "checkpoint"})
SETTABLE_COLUMNS = frozenset({
    "started_at", "finished_at", "paused_at", "run_at", "line_at",
    "result", "error", "checkpoint", "current_step", "total_steps",
    "pause_requested", "cancel_requested", "resume_requested",
    "worker_id", "lease_token", "lease_expires_at", "attempt",
})

#: The boolean request columns a ``flag`` / ``unless_flag`` guard may name.
REQUEST_FLAGS = frozenset({"pause_requested", "cancel_requested", "resume_requested"})


@dataclass(frozen=True)
class Lease:
    """A worker's claim on a running job; every write from the worker is fenced by it."""

    job_id: str
    token: str
    attempt: int


@dataclass(frozen=True)
class Change:
    """One compare-and-set on one job, with the history row it leaves behind.

    The update happens only if the job's state is in ``when`` and every guard holds; otherwise
    the store raises :class:`ChangeRefused` carrying the job as it is, and nothing is written.

    - ``to_state`` None means the state stays (a request such as ``pause_requested``).
    - ``lease``: the job must be running under exactly this lease token and attempt.
    - ``retryable``: ``attempt < max_attempts`` (the retry guard).
    - ``lease_expired``: the lease has expired by the database's clock (the reaper).
    - ``pause_expired``: paused for longer than the job's ``pause_timeout``.
    - ``pause_expired``: also requires no pending resume (a resumed job waiting for a slot is
      no longer paused in the user's sense, so the pause timer does not apply to it).
    - ``flag``: the named boolean column must currently be true (e.g. ``cancel_requested``).
    - ``unless_flag``: the named boolean column must currently be false; a failure is guarded
      by ``cancel_requested`` this way, so a cancel requested a moment before wins over it.
    """

    job_id: str
    action: str
    when: frozenset[JobState]
    to_state: JobState | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    lease: Lease | None = None
    retryable: bool = False
    lease_expired: bool = False
    pause_expired: bool = False
    flag: str | None = None
    unless_flag: str | None = None
    actor: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.values) - SETTABLE_COLUMNS
        if unknown:
            raise ValueError(f"Change may not set {sorted(unknown)}")
        for name in (self.flag, self.unless_flag):
            if name is not None and name not in REQUEST_FLAGS:
                raise ValueError(f"unknown flag {name!r}")


class ChangeRefused(Exception):
    """A compare-and-set matched no row. ``job`` is the job as it is now (unchanged)."""

    def __init__(self, change: Change, job: Job):
        super().__init__(f"{change.action} refused for job {job.id} in state {job.state.value}")
        self.change = change
        self.job = job


def single_job(changes: Sequence[Change]) -> str:
    """The one job ``changes`` are about; ``apply()`` refuses empty or mixed batches."""
    if not changes:
        raise ValueError("apply() needs at least one change")
    job_id = changes[0].job_id
    if any(c.job_id != job_id for c in changes):
        raise ValueError("apply() takes changes to one job only")
    return job_id


@dataclass(frozen=True)
class NewJob:
    """A job to insert. ``run_at`` None means "now by the database's clock"."""

    id: str
    job_type: str
    params: dict[str, Any]
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 3
    run_at: datetime | None = None
    timeout: float | None = None
    pause_timeout: float = 24 * 3600.0
    backoff: dict[str, Any] = field(default_factory=dict)
    requeued_from: str | None = None
    progress: JobProgress | None = None


@dataclass(frozen=True)
class Signals:
    """What a running job's worker must learn from the store: the pending requests."""

    pause_requested: bool = False
    cancel_requested: bool = False
    #: False when a heartbeat found the lease still held but could not extend it this time
    #: (PostgreSQL: the row was locked by another transaction, and heartbeats never wait).
    renewed: bool = True


@dataclass(frozen=True)
class JobQuery:
    """Filters for :meth:`Store.list_jobs`; results are newest first.

    ``before`` is a cursor: a job id; only jobs created before it are returned.
    """

    states: frozenset[JobState] = frozenset()
    job_types: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    limit: int = 50
    before: str | None = None


@runtime_checkable
class Store(Protocol):
    """What a database must do for conveyor. Implemented by the SQLite and PostgreSQL stores."""

    url: str

    def migrate(self) -> None:
        """Create or upgrade the schema; safe to call from several processes at once."""

    def schema_version(self) -> int:
        """The schema version the database is at (0 for an empty database)."""

    def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""

    def now(self) -> datetime:
        """The database's clock, as an aware UTC datetime."""

    # -- jobs -------------------------------------------------------------------------------
    def insert_jobs(self, jobs: Sequence[NewJob], *, actor: str = "") -> list[Job]:
        """Insert jobs (one transaction) with a ``create`` history row each."""

    def get_job(self, job_id: str) -> Job:
        """The job, or :class:`~conveyor.errors.JobNotFound`."""

    def get_jobs(self, job_ids: Iterable[str]) -> list[Job]:
        """The jobs that exist among ``job_ids`` (missing ones are skipped)."""

    def list_jobs(self, query: JobQuery) -> list[Job]:
        """Jobs matching ``query``, newest first."""

    def count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included)."""

    def history(self, job_id: str) -> list[HistoryEntry]:
        """The job's history rows, oldest first (JobNotFound for an unknown id)."""

    # -- transitions ------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> list[Job]:
        """Apply ``changes`` (all to one job) atomically, in order, with their history rows.

        Returns one job per change, in order: the row exactly as that change left it, read in
        the same transaction (``UPDATE ... RETURNING``), so that each change's event can carry
        the real row (a fail followed by a retry: the failed row, then the pending one).

        Raises :class:`ChangeRefused` (nothing written) when any of them matches no row, and
        :class:`~conveyor.errors.JobNotFound` when the job does not exist.
        """

    # -- workers ----------------------------------------------------------------------------
    def claim(
        self,
        worker_id: str,
        *,
        queues: Sequence[str],
        job_types: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> list[Job]:
        """Take up to ``limit`` runnable jobs and move them to running under a new lease.

        Only jobs whose type is in ``job_types`` are taken (none when it is empty); an empty
        ``queues`` means every queue.

        Runnable: paused with ``resume_requested`` (they resume first), or pending with
        ``run_at`` passed; highest ``priority`` first, then the earliest place in line
        (``line_at``: the run_at it was enqueued with, kept by a retry after a lost worker),
        then insertion order. Each claimed job gets a fresh ``lease_token``,
        ``lease_expires_at = now + lease_seconds``, its ``start``/``resume`` history row, and
        ``resume_requested`` cleared; a ``pause_requested`` carried over from a run whose worker
        was lost is kept, so the job pauses at its first checkpoint. No job is ever handed to
        two callers.
        """

    def heartbeat(self, leases: Sequence[Lease], lease_seconds: float) -> dict[str, Signals]:
        """Extend the leases still held; returns their pending requests, by lease token.

        Keyed by token, not job id: a stale run and a new run of the same job may share one
        worker, and only the current run may see the job's requests. A lease whose token is
        absent from the answer is lost: the worker must stop writing to that job.
        """

    def save_progress(
        self,
        lease: Lease,
        progress: JobProgress,
        *,
        checkpoint: bool = False,
    ) -> Signals:
        """Record progress (and the checkpoint when ``checkpoint``), fenced by ``lease``.

        Raises :class:`~conveyor.errors.LeaseLost` when the lease is no longer held.
        """

    def expired_leases(self, limit: int) -> list[Job]:
        """Running jobs whose lease has expired by the database's clock (for the reaper)."""

    def expired_pauses(self, limit: int) -> list[Job]:
        """Paused jobs paused for longer than their ``pause_timeout`` (for the reaper).

        A paused job with ``resume_requested`` (waiting for a free slot) is not listed.
        """

    def wait_for_work(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when the store hears of new work."""

    def notify_work(self) -> None:
        """Tell waiting workers (this process and, where the store can, others) to look."""
