"""The Store protocol: the narrow seam between conveyor's core and a database.

Internal API. A store holds no policy: it never decides to retry, back off, rescue or time out.
It offers verb-named operations, and one generic compare-and-set, :meth:`Store.apply`, that the
core's named transitions (:mod:`conveyor.transitions`) are built on. The changes themselves
(:class:`~conveyor.changes.Change` and its markers) are the core's vocabulary, in
:mod:`conveyor.changes`; a store only compiles them. Every change of state is a conditional
update on the job's current state (and, for a worker's write, on its lease token and attempt),
and is written in the same transaction as its history row.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from conveyor import payload
from conveyor.changes import Change, Lease
from conveyor.lifecycle import JobState
from conveyor.limits import LimitRule, Rate, Usage
from conveyor.model import HistoryEntry, Job, JobProgress, LogLine, QueueInfo, ScheduleInfo
from conveyor.presence import WorkerInfo, WorkerRegistration

__all__ = ["JobQuery", "NewJob", "NewLogLine", "Signals", "Store", "inserted_job"]


class Landed(enum.Enum):
    """What :meth:`Store.finish_and_claim` gives for a change that landed when its caller
    asked for no rows (``landed_rows=False``) and the job has no dependents."""

    LANDED = "landed"


def landed(row: Any, decode: Callable[[Any], Job], rows: bool) -> Job | Landed | None:
    """What :meth:`Store.finish_and_claim` gives for one change, from the row its write
    returned (None: refused): the decoded row when the caller reads rows (``landed_rows``) or
    the job has dependents, else :data:`Landed.LANDED`."""
    if row is None:
        return None
    return decode(row) if rows or row["has_dependents"] else Landed.LANDED


@dataclass(slots=True)
class NewJob:
    """A job to insert. ``run_at`` None means "now by the database's clock", plus ``delay``
    seconds when given (so a delayed enqueue needs no round trip to read the clock first).

    Never changed once built (``dataclasses.replace`` makes a changed copy), but not declared
    frozen: a frozen dataclass sets each of these 22 fields through ``object.__setattr__``,
    which tripled the cost of building one, paid for every job of a bulk enqueue.

    ``params_json``: the params as the core already encoded them while validating, so the
    store does not encode them a second time.
    """

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
    delay: float | None = None
    params_json: str | None = None
    #: Among unfinished jobs (pending, running, paused, failed with a retry left) at most one
    #: holds a key: the database's partial unique index enforces it. An insert that meets the
    #: key returns the existing job (``Job.existing``), or, with ``on_conflict="raise"``,
    #: raises :class:`~conveyor.errors.DuplicateJob` and writes nothing.
    unique_key: str | None = None
    on_conflict: str = "return_existing"
    #: The W3C ``traceparent`` of the enqueuing span (see :mod:`conveyor.tracing`), or None.
    trace: str | None = None
    #: Filled from the params by the job type's ``limit_key`` template (see conveyor.limits).
    limit_key: str | None = None
    #: Jobs that must complete before this one is claimable (stored jobs, or ones earlier in
    #: the same batch); checked and linked in the insert's transaction
    #: (:mod:`conveyor.dependencies`).
    depends_on: tuple[str, ...] = ()
    on_dependency_failure: str = "cancel"
    #: ``backoff`` as the stores encode it, when the core has it already (one encoding per
    #: retry policy, not one per enqueued job).
    backoff_json: str | None = None

    def params_text(self) -> str:
        """The params as the stores store them: the core's encoding when it made one."""
        text = self.params_json
        return text if text is not None else payload.dumps(self.params)


@dataclass(frozen=True)
class NewLogLine:
    """A line a running job logged, to store (the worker numbers each attempt's lines)."""

    job_id: str
    attempt: int
    seq: int
    at: datetime
    level: str
    message: str




def job_template(job_class: type[Job], filled: Iterable[str], filler: str) -> dict[str, Any]:
    """A job's ``__dict__`` before ``filler`` sets the fields it ``filled`` for each job: every
    field in Job's order (as ``Job(...)`` fills ``__dict__``), those places at None, the rest
    at their defaults. Both ways of making a Job without its ``__init__`` (a new job,
    :func:`inserted_job`; a row read back, the SQLite store's decode) start from it.

    Called at import, so every test sees a refusal: a Job with slots or a ``__post_init__``
    (filling ``__dict__`` would skip them), a field ``filler`` does not set whose default is
    a factory (one value would be shared by every job), or a name that is not a field.
    """
    if hasattr(job_class, "__post_init__") or hasattr(job_class, "__slots__"):
        raise TypeError(f"{filler} fills Job.__dict__: Job must stay a plain dataclass")
    filled = frozenset(filled)
    fields = dataclasses.fields(job_class)
    unknown = sorted(filled - {spec.name for spec in fields})
    if unknown:
        raise TypeError(f"{filler} sets what is not a Job field: {unknown}")
    template: dict[str, Any] = {}
    for spec in fields:
        if spec.name in filled:
            template[spec.name] = None  # a place, set per job
        elif spec.default is dataclasses.MISSING:
            raise TypeError(f"{filler} does not set Job.{spec.name}, which has no plain "
                            "default: set it per job")
        else:
            template[spec.name] = spec.default
    return template


#: A new job's ``__dict__`` before :func:`inserted_job` sets its own values: those it does not
#: set at their defaults (no lease, no outcome, attempt 0 ...).
#: ``state`` (pending), and the fields most new jobs leave at their defaults (requeued_from,
#: unique_key, trace, limit_key, on_dependency_failure), keep the template's values unless
#: the job has its own: a test is cheaper than a dict store, paid for each job of a batch.
_TEMPLATE = job_template(Job, (
    "id", "created_at", "job_type", "params", "max_attempts", "progress", "queue",
    "priority", "run_at", "timeout", "pause_timeout", "backoff", "updated_at"),
    "inserted_job")


def inserted_job(new: NewJob, created_at: datetime, run_at: datetime) -> Job:
    """The row a plain insert of ``new`` left, built here rather than read back.

    A new job's row is fully known once the database has given its two clocks (``created_at``,
    also ``updated_at``; and ``run_at``, also its place in line): everything else is what was
    inserted or a column default. Reading 30 columns back and decoding three JSON values per
    job cost more than the insert itself; the stores use this for every insert that cannot
    meet a unique key (a keyed one may return another job, so it reads the row). The JSON
    values are fresh copies, as a decoded row's would be, so the caller's params dict and the
    job type's shared backoff dict are never aliased by the returned job.

    The Job is made by filling its ``__dict__`` (the defaults from :data:`_TEMPLATE`, then
    this job's values) rather than through ``Job(...)``: the generated ``__init__`` sets all
    39 fields one keyword at a time, about 40 % of this function's cost, paid for each job
    of a bulk enqueue. Job is a plain dataclass (no slots, no ``__post_init__``), so the
    result is the same object ``Job(...)`` would make (tests/unit compare them).
    """
    params = {} if new.params_json == "{}" else payload.loads(new.params_text())
    progress = new.progress
    # a copy of the template, set key by key: a literal merged into it built a second dict
    # of these 19 keys first, and cost twice as much
    values = _TEMPLATE.copy()
    values["id"] = new.id
    values["created_at"] = values["updated_at"] = created_at
    values["job_type"] = new.job_type
    values["params"] = params
    values["max_attempts"] = new.max_attempts
    if progress is None:  # most jobs: JobProgress() as its __init__ makes it, without the call
        fresh = _new_job_object(JobProgress)
        fresh.current_step = 0
        fresh.total_steps = 0
        fresh.last_checkpoint = {}
        values["progress"] = fresh
    else:
        values["progress"] = JobProgress(progress.current_step, progress.total_steps,
                                         progress.last_checkpoint or {})
    values["queue"] = new.queue
    values["priority"] = new.priority
    values["run_at"] = run_at
    values["timeout"] = new.timeout
    values["pause_timeout"] = new.pause_timeout
    values["backoff"] = new.backoff.copy()
    if new.requeued_from is not None:
        values["requeued_from"] = new.requeued_from
    if new.unique_key is not None:
        values["unique_key"] = new.unique_key
    if new.trace is not None:
        values["trace"] = new.trace
    if new.limit_key is not None:
        values["limit_key"] = new.limit_key
    # the stores write a job's policy only when they link its dependencies: a job without
    # any keeps the column's default, and the returned job must say so too
    if new.depends_on:
        values["on_dependency_failure"] = new.on_dependency_failure
    job = _new_job_object(Job)
    job.__dict__ = values
    return job


_new_job_object = object.__new__


def _check_fresh_progress() -> None:
    """:func:`inserted_job` makes a new job's ``JobProgress()`` by setting its three fields on
    a bare object (the dataclass's ``__init__`` call cost more than the rest of the progress):
    refused at import if that would not be the object ``JobProgress()`` makes."""
    names = tuple(spec.name for spec in dataclasses.fields(JobProgress))
    if (names != ("current_step", "total_steps", "last_checkpoint")
            or hasattr(JobProgress, "__post_init__") or hasattr(JobProgress, "__slots__")
            or JobProgress.__setattr__ is not object.__setattr__):
        raise TypeError("inserted_job sets JobProgress's fields one by one: update it")


_check_fresh_progress()


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

    ``before`` is a cursor: a job id; only jobs created before it are returned. The search
    filters (checked by :mod:`conveyor.filters`): ``id_prefix`` (lowercase hex and dashes: an
    id's start or its end),
    time windows (``*_after`` inclusive, ``*_before`` exclusive; a ``finished_*`` bound leaves
    unfinished jobs out), and ``text``, already lowercased, a substring of the params' or the
    error's JSON text.
    """

    states: frozenset[JobState] = frozenset()
    job_types: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    limit: int = 50
    before: str | None = None
    id_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    finished_after: datetime | None = None
    finished_before: datetime | None = None
    text: str | None = None


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

    def insert_jobs_on(self, connection: object, jobs: Sequence[NewJob], *,
                       actor: str = "") -> list[Job]:
        """Insert jobs through the caller's own connection to this database, inside the
        caller's transaction (the transactional outbox): they exist exactly when it commits.

        :class:`~conveyor.errors.ConfigurationError` for a connection of the wrong kind or to
        another database. Workers are woken when the caller commits, not before.
        """

    def get_job(self, job_id: str) -> Job:
        """The job, or :class:`~conveyor.errors.JobNotFound`."""

    def get_jobs(self, job_ids: Iterable[str]) -> list[Job]:
        """The jobs that exist among ``job_ids`` (missing ones are skipped)."""

    def list_jobs(self, query: JobQuery) -> list[Job]:
        """Jobs matching ``query``, newest first."""

    def count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included)."""

    def count_jobs(self, query: JobQuery) -> int:
        """How many jobs match ``query``'s filters (its limit and cursor are ignored)."""

    def finished_per_minute(self, since: datetime) -> list[tuple[datetime, JobState, int]]:
        """How many jobs finished in each state, per minute since ``since`` (minutes with
        none are left out), from the index on ``finished_at``."""

    def record_depth(self) -> None:
        """Keep this minute's sample of pending and running jobs per queue (the first caller
        in a minute writes it; later ones change nothing), and forget samples older than a
        day."""

    def depth_samples(self, since: datetime) -> list[tuple[datetime, str, int, int]]:
        """The recorded samples since ``since``: (minute, queue, pending, running)."""

    def history(self, job_id: str) -> list[HistoryEntry]:
        """The job's history rows, oldest first (JobNotFound for an unknown id)."""

    def dependencies(self, job_id: str) -> tuple[list[Job], list[Job]]:
        """The jobs ``job_id`` depends on (upstream) and the jobs depending on it
        (downstream), each oldest first; empty lists for a job with neither."""

    # -- transitions ------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> list[Job]:
        """Apply ``changes`` (all to one job) atomically, in order, with their history rows.

        Returns one job per change, in order: the row exactly as that change left it, read in
        the same transaction (``UPDATE ... RETURNING``), so that each change's event can carry
        the real row (a fail followed by a retry: the failed row, then the pending one).

        Raises :class:`ChangeRefused` (nothing written) when any of them matches no row, and
        :class:`~conveyor.errors.JobNotFound` when the job does not exist.
        """

    def apply_many(self, changes: Sequence[Change]) -> list[Job | None]:
        """Apply ``changes``, each to a different job and each a compare-and-set of its own,
        in one transaction (a worker's batch of completed jobs: one commit for many).

        Returns, in order, the row each change left, or None where the change was refused
        (its job moved, or its lease was lost): that job is left untouched, and the others
        still land. Raises :class:`ValueError` when two changes name the same job.
        """

    def finish_and_claim(self, finish: Sequence[Change], worker_id: str, *,
                         queues: Sequence[str], job_types: Sequence[str], limit: int,
                         lease_seconds: float, landed_rows: bool = True
                         ) -> tuple[list[Job | Landed | None], list[Job]]:
        """:meth:`apply_many` of ``finish`` and :meth:`claim`, in one transaction: a worker
        writes the completions it gathered and takes its next jobs with one commit.

        Returns what each does; a refused change is None and does not stop the claim.
        ``landed_rows`` False: the caller reads a landed change's row only for a job with dependents
        (whose end may have moved them), so for any other :data:`Landed.LANDED` stands in its
        place and the row is not decoded (a worker's batch when nobody subscribes to events:
        decoding it was a third of the store's Python time per job).
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

    # -- flow control -----------------------------------------------------------------------
    def set_queue_paused(self, queue: str, paused: bool, *, actor: str,
                         reason: str) -> QueueInfo:
        """Pause (claims skip the queue's jobs) or resume a queue, recording who, when, why.

        Running jobs are not touched. Resuming wakes waiting workers.
        """

    def watch_changes(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake()`` (from any thread) soon after any change by another connection
        (SQLite: the commit watch workers wake on); returns a function that stops watching,
        or None when the store cannot tell (PostgreSQL, an in-memory SQLite): poll instead."""

    def queues(self) -> list[QueueInfo]:
        """Every queue that has jobs or was ever paused, by name, with counts by state."""

    def save_type_limits(self, job_types: Sequence[str], rules: Sequence[LimitRule]) -> None:
        """Record the limits of a worker's job types (``rules``, scope "type"), and drop the
        recorded limit of each of ``job_types`` that has none now. An unchanged limit keeps
        who set it and when."""

    def set_queue_limit(self, queue: str, max_running: int | None, rate: Rate | None, *,
                        actor: str, reason: str) -> LimitRule | None:
        """Set (or, with neither, remove) a queue's limits; its rate window starts afresh.
        Wakes waiting workers."""

    def limits(self) -> list[LimitRule]:
        """Every recorded limit, by scope and name."""

    def limit_usage(self, rules: Sequence[LimitRule]) -> Usage:
        """How full the buckets of ``rules`` are now (for showing why a job is held)."""

    def save_schedules(self, schedules: Sequence[ScheduleInfo]) -> list[ScheduleInfo]:
        """Record the periodic schedules a worker runs (first_seen kept from the first time)."""

    def schedules(self) -> list[ScheduleInfo]:
        """The recorded schedules, by name, each with its latest tick and that tick's job."""

    def enqueue_tick(self, schedule: str, tick: datetime, job: NewJob, *,
                     actor: str) -> Job | None:
        """Insert ``job`` for this tick of ``schedule``, in one transaction with the tick's row,
        or nothing (None) when the tick, or a later one, was enqueued already."""

    # -- job logs ---------------------------------------------------------------------------
    def write_job_logs(self, lines: Sequence[NewLogLine],
                       trims: Sequence[tuple[str, int, int]] = ()) -> None:
        """Store ``lines`` and, for each ``(job_id, attempt, seq)`` in ``trims``, delete that
        attempt's lines numbered below ``seq``: one transaction for a worker's whole batch."""

    def job_log_sizes(self, job_id: str, attempt: int) -> list[tuple[int, int]]:
        """``(seq, bytes of the message)`` of each stored line of one attempt, by seq (what a
        resumed run must count towards the attempt's bounds)."""

    def job_logs(self, job_id: str, *, attempt: int | None = None, after: int = 0,
                 limit: int = 1000) -> list[LogLine]:
        """The job's lines with ``id > after`` (of one attempt, if given), oldest first;
        :class:`~conveyor.errors.JobNotFound` for an unknown id."""

    # -- operations: retention and the workers registry (see retention.py, presence.py) ------
    def latest_version(self) -> int:
        """The schema version this conveyor's migrations bring the database to."""

    def prune_jobs(self, state: JobState, older_than: float, *, limit: int) -> int:
        """Delete up to ``limit`` jobs (and their history) of ``state`` that finished more
        than ``older_than`` seconds ago by the database's clock, oldest first, in one short
        transaction; returns how many. A failed job with a retry left is never deleted, nor
        a job a requeued copy still links back to."""

    def count_prunable(self, state: JobState, older_than: float) -> int:
        """How many jobs :meth:`prune_jobs` would delete, given no limit."""

    def beat_worker(self, worker: WorkerRegistration, *, running: int,
                    ttl: float) -> bool:
        """Write the worker's row (created on first call): seen now, expiring in ``ttl``
        seconds, ``running`` jobs. Returns whether an operator asked it to stop."""

    def end_worker(self, worker_id: str) -> None:
        """Mark the worker stopped (a graceful stop)."""

    def workers(self) -> list[WorkerInfo]:
        """Every worker row, alive ones first, then by id."""

    def request_worker_stop(self, worker_id: str) -> WorkerInfo | None:
        """Flag a live worker to stop; None when no live (unstopped, unexpired) worker has
        the id."""

    def prune_workers(self, older_than: float) -> int:
        """Delete the rows of workers stopped or gone more than ``older_than`` seconds ago."""

    def wait_for_work(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when the store hears of new work."""

    def watch_job(self, job_id: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` (from any thread) soon after a change by another connection, in any
        process, may have stopped the job (finished or paused it); returns a function that stops
        watching. Spurious calls are allowed: the caller reads the job again. Changes made
        through this store object are announced by the engine's events instead.
        """

    def notify_work(self) -> None:
        """Tell waiting workers (this process and, where the store can, others) to look."""
