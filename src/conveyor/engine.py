"""The engine: the store, the registry of job types and the event bus, behind one door.

Every change to a job goes through here, whoever makes it (the app's control verbs, a worker's
claim, progress and outcome, the reaper), and this is the only place events are emitted from.
That keeps the rule "an event shows the job as its change left it, after commit" in one place:
the store returns the row each change produced, and the event carries that row.

The app and the worker both hold an engine; neither knows the other, so the worker needs no app.
"""

from __future__ import annotations

import builtins
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from conveyor.changes import Change, ChangeRefused, Lease
from conveyor.errors import ConfigurationError, ConveyorError, UnknownJobType
from conveyor.events import (
    EVENT_TYPES,
    EventBus,
    JobCancelled,
    JobCreated,
    JobEvent,
    JobProgressed,
    JobRequested,
    JobResumed,
    JobStarted,
)
from conveyor.lifecycle import FINAL_STATES, TRANSITION_TABLE, JobState
from conveyor.model import Job, JobProgress
from conveyor.registry import JobType
from conveyor.stores import open_store
from conveyor.stores.base import Landed, NewJob, Signals, Store

if TYPE_CHECKING:
    from conveyor.schedules import Schedule

#: How often a control verb decides again when the job keeps moving under it.
RACE_RETRIES = 8

#: The event each move of the lifecycle table announces, by the move's name.
_EVENT_OF_ACTION: dict[str, type[JobEvent]] = {
    row.name: EVENT_TYPES[row.event] for row in TRANSITION_TABLE
}

#: How long a claim's announcement waits for another thread's earlier change to the same job
#: to be announced first (a bound, never reached in practice: that thread is between its
#: commit and its emit).
ORDER_WAIT = 5.0

#: The states a change may leave a job in without marking it unannounced (see
#: Engine._announcing): a tuple, as ``in`` then finds a member by identity, in C, where a
#: frozenset would hash it through the enum's Python-level ``__hash__``.
_UNMARKED_STATES: tuple[JobState, ...] = tuple(FINAL_STATES)
#: What _announcing gives for changes that mark nothing (a worker's completions): shared.
_NOTHING_TO_MARK: AbstractContextManager[None] = nullcontext()

#: A control decision: the changes to make to the job as it is now ([] when nothing is to do).
Decide = Callable[[Job], builtins.list[Change]]


class HasEngine(Protocol):
    """Anything that carries an engine (the app), accepted where an engine is expected."""

    @property
    def engine(self) -> Engine: ...


class Engine:
    """The store (opened on first use), the job types, the event bus, and the jitter source.

    The store is opened, and its schema created or upgraded, on first use, so that defining an
    app and registering job types at import time never touches the database.
    """

    def __init__(self, url: str, *, store: Store | None = None,
                 rand: Callable[[], float] = random.random, **store_options: object) -> None:
        self.url = store.url if store is not None else url
        self._store = store
        self._store_options = store_options
        self._store_lock = threading.Lock()
        self.types: dict[str, JobType] = {}
        self.schedules: dict[str, Schedule] = {}
        self.events = EventBus()
        self.rand = rand
        #: Runs a just-enqueued job inline and returns it as it ended (the testing eager mode).
        self.eager: Callable[[Job], Job] | None = None
        #: Jobs a thread is changing and has not announced yet (job id -> writers): a claim
        #: can only see such a change after its commit, and must not announce the job's start
        #: before that change's own event (a retry, a resume) reaches subscribers.
        self._unannounced: dict[str, int] = {}
        self._unannounced_changed = threading.Condition()

    # -- store -----------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    store = open_store(self.url, **self._store_options)
                    try:
                        store.migrate()
                    except BaseException:
                        store.close()
                        raise
                    self._store = store
        return self._store

    def use_store(self, url: str) -> None:
        """Point the engine at another store before first use (closing the current one)."""
        self.close()
        self.url = url

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- registry --------------------------------------------------------------------------------
    def register(self, job_type: JobType) -> None:
        known = self.types.get(job_type.name)
        if known is not None and known.func is not job_type.func:
            raise ConfigurationError(f"job type {job_type.name!r} is already registered")
        self.types[job_type.name] = job_type

    def job_type(self, name: str) -> JobType:
        try:
            return self.types[name]
        except KeyError:
            raise UnknownJobType(name, list(self.types)) from None

    # -- changes ---------------------------------------------------------------------------------
    def insert(self, jobs: Sequence[NewJob], *, actor: str,
               reason: str = "") -> builtins.list[Job]:
        """Store new jobs (all or nothing), then announce each one created (an existing job
        returned for a unique key held already was not: it is not announced again)."""
        created = self.store.insert_jobs(jobs, actor=actor) if jobs else []
        return self.created(created, actor=actor, reason=reason)

    def created(self, jobs: builtins.list[Job], *, actor: str,
                reason: str = "") -> builtins.list[Job]:
        """Announce jobs just stored (by any client, sync or async); a unique key's holder
        returned in a new job's place (``existing``) is not new and is not announced. In
        eager mode (:func:`conveyor.testing.eager`) run each new one at once and return it
        as it ended."""
        if self.events.subscribed:  # an event nobody receives is not built (10,000 in bulk)
            for job in jobs:
                if not job.existing:
                    self.events.emit(JobCreated(job, None, actor, reason))
        if self.eager is None:
            return jobs
        return [job if job.existing else self.eager(job) for job in jobs]

    def enqueue_tick(self, schedule: str, tick: datetime, job: NewJob, *,
                     actor: str) -> Job | None:
        """Enqueue a schedule's tick once (None: another scheduler has), then announce it."""
        created = self.store.enqueue_tick(schedule, tick, job, actor=actor)
        if created is not None:
            self.events.emit(JobCreated(created, None, actor,
                                        f"schedule {schedule} tick {tick.isoformat()}"))
        return created

    def apply(self, changes: Sequence[Change], *, before: Job | None = None) -> Job:
        """Apply changes to one job atomically, then emit one event per change; returns the job
        as the last change left it. :class:`ChangeRefused` propagates (nothing was written).

        ``before``: the job the changes were decided on, when the caller read it (it tells the
        first event which state it came from when the change accepts several).
        """
        with self._announcing(changes):
            rows = self.store.apply(changes)
            job = self.announce(changes, rows, before=before)
        self.dependents_moved(rows)
        return job

    def _announcing(self, changes: Iterable[Change]) -> AbstractContextManager[None]:
        """Mark jobs as changed-but-not-announced from before their write until their events
        are out (see :meth:`_after_earlier_announcements`).

        A change to a final state (completed, cancelled) marks nothing: a claim takes only a
        pending or paused job, so none can take that job after the change lands (nothing
        leaves a final state), and one that took it first made the change refused (it was
        no longer in the change's source state), so no start can overtake its event. A
        worker's batch of completions, the common case, then takes no lock here, nor builds
        a context manager of its own (a generator's costs a few microseconds, every job).
        """
        ids = {c.job_id for c in changes if c.to_state not in _UNMARKED_STATES}
        return self._marked(ids) if ids else _NOTHING_TO_MARK

    @contextmanager
    def _marked(self, ids: set[str]) -> Iterator[None]:
        with self._unannounced_changed:
            for job_id in ids:
                self._unannounced[job_id] = self._unannounced.get(job_id, 0) + 1
        try:
            yield
        finally:
            with self._unannounced_changed:
                for job_id in ids:
                    left = self._unannounced[job_id] - 1
                    if left:
                        self._unannounced[job_id] = left
                    else:
                        del self._unannounced[job_id]
                self._unannounced_changed.notify_all()

    def _after_earlier_announcements(self, jobs: Sequence[Job]) -> None:
        """Wait until no other thread still has to announce an earlier change to these jobs.

        Its commit came first (the claim saw it), so its event must come first too: without
        this a subscriber could see a retried job start before it saw it fail and retry.
        """
        if not self._unannounced:  # the common case, without taking the lock
            return
        with self._unannounced_changed:
            self._unannounced_changed.wait_for(
                lambda: not any(job.id in self._unannounced for job in jobs), ORDER_WAIT)

    def announce(self, changes: Sequence[Change], rows: Sequence[Job], *,
                 before: Job | None = None) -> Job:
        """Emit one event per applied change (``rows``: the store's answer to them, in order);
        returns the job as the last change left it."""
        previous = before.state if before is not None else None
        for change, job in zip(changes, rows, strict=True):
            self._announce(change, job, previous)
            previous = job.state
        return rows[-1]

    def _announce(self, change: Change, job: Job, previous: JobState | None) -> None:
        """The event of one change that landed, carrying the row it left."""
        source = next(iter(change.when)) if len(change.when) == 1 else previous
        event_type = (JobRequested if change.to_state is None
                      else _EVENT_OF_ACTION.get(change.action, JobRequested))
        reason = change.reason or (change.action if change.to_state is None else "")
        self.events.emit(event_type(job, source, change.actor, reason))

    def apply_many(self, changes: Sequence[Change]) -> builtins.list[Job | None]:
        """Apply one change to each of several jobs in one transaction (each still its own
        compare-and-set), then announce the ones that landed; refused ones give None."""
        with self._announcing(changes):
            rows = self.store.apply_many(changes)
            self._announce_landed(changes, rows)
        self.dependents_moved(rows)
        return rows

    def _announce_landed(self, changes: Sequence[Change],
                         rows: Sequence[Job | Landed | None]) -> None:
        """The events of a batch's changes that landed (a refused one has no row); none are
        built when nobody subscribes (a worker's batches of completions, all day long)."""
        if not self.events.subscribed:
            return
        for change, job in zip(changes, rows, strict=True):
            if isinstance(job, Job):
                self._announce(change, job, None)

    def control(self, job_id: str, decide: Decide) -> Job:
        """Read the job, decide, apply as a compare-and-set; decide again if it moved meanwhile.

        Two racing callers can never both succeed at a move only one of them should make: the
        loser's change is refused and its decision is taken again on the winner's result.
        """
        for _ in range(RACE_RETRIES):
            job = self.store.get_job(job_id)
            changes = decide(job)
            if not changes:
                return job
            try:
                return self.apply(changes, before=job)
            except ChangeRefused:
                continue  # the job moved under us: decide again on its fresh state
        raise ConveyorError(f"job {job_id} kept changing under {RACE_RETRIES} attempts; "
                            "try again")

    def dependents_moved(self, rows: Sequence[Job | Landed | None]) -> None:
        """After a dependency ended (``rows``: what changes just left), announce what the
        schema's triggers did to its dependents in the same transaction: each one cancelled
        by it (and theirs, in turn) gets its JobCancelled; waiting workers are told to look
        when one became claimable. Costs nothing for jobs without dependents."""
        ended = ended_with_dependents(rows)
        released = False
        while ended:
            upstream = ended.pop()
            for job in self.store.dependencies(upstream.id)[1]:
                if job.state is JobState.PENDING and job.waiting_on == 0:
                    released = True
                elif (job.state is JobState.CANCELLED
                      and job.finished_at == upstream.updated_at):
                    ended_how = ("was cancelled" if upstream.state is JobState.CANCELLED
                                 else "failed")
                    self.events.emit(JobCancelled(job, JobState.PENDING, "conveyor",
                                                  f"dependency {upstream.id} {ended_how}"))
                    if job.has_dependents:
                        ended.append(job)
        if released:
            self.store.notify_work()

    def dependencies(self, job_id: str) -> tuple[builtins.list[Job], builtins.list[Job]]:
        """The jobs ``job_id`` depends on, and the jobs depending on it."""
        return self.store.dependencies(job_id)

    # -- workers ---------------------------------------------------------------------------------
    def claim(self, worker_id: str, *, queues: Sequence[str], job_types: Sequence[str],
              limit: int, lease_seconds: float) -> builtins.list[Job]:
        """Take runnable jobs under fresh leases; each is announced as started or resumed."""
        jobs = self.store.claim(worker_id, queues=queues, job_types=job_types, limit=limit,
                                lease_seconds=lease_seconds)
        self._announce_claimed(jobs, worker_id)
        return jobs

    def _announce_claimed(self, jobs: Sequence[Job], worker_id: str) -> None:
        self._after_earlier_announcements(jobs)
        if not self.events.subscribed:  # as for a batch: no events built for nobody
            return
        for job in jobs:
            # a claimed job that was paused keeps its paused_at: it is a resume
            if job.paused_at is not None:
                self.events.emit(JobResumed(job, JobState.PAUSED, worker_id))
            else:
                self.events.emit(JobStarted(job, JobState.PENDING, worker_id))

    def finish_and_claim(self, finish: Sequence[Change], worker_id: str, *,
                         queues: Sequence[str], job_types: Sequence[str], limit: int,
                         lease_seconds: float
                         ) -> tuple[builtins.list[Job | Landed | None], builtins.list[Job]]:
        """A worker's gathered completions and its next claim, in one transaction; each
        landed change and each claimed job is announced after the commit.

        When nobody subscribes, a landed change's row is only read for a job with dependents
        (:meth:`dependents_moved`): the others come back as :data:`Landed.LANDED`, not decoded.
        Whether anyone subscribes is asked before the transaction, so a subscriber added
        during it sees the events of the changes that follow, as for one added a moment later.
        """
        announce = self.events.subscribed
        with self._announcing(finish):
            done, jobs = self.store.finish_and_claim(finish, worker_id, queues=queues,
                                                     job_types=job_types, limit=limit,
                                                     lease_seconds=lease_seconds,
                                                     landed_rows=announce)
            if announce:
                self._announce_landed(finish, done)
        self._announce_claimed(jobs, worker_id)
        self.dependents_moved(done)
        return done, jobs

    def save_progress(self, lease: Lease, progress: JobProgress, *,
                      checkpoint: bool = False) -> Signals:
        """A running job's progress (and checkpoint), fenced by its lease; announced by the
        worker's monitor a few times a second (:meth:`progressed`), not on every write."""
        return self.store.save_progress(lease, progress, checkpoint=checkpoint)

    def progressed(self, job: Job, actor: str) -> None:
        """Announce a running job's coalesced progress (``job.progress`` is the new one)."""
        self.events.emit(JobProgressed(job, JobState.RUNNING, actor))

    def heartbeat(self, leases: Sequence[Lease], lease_seconds: float) -> dict[str, Signals]:
        return self.store.heartbeat(leases, lease_seconds)


def engine_of(source: Engine | HasEngine) -> Engine:
    """The engine itself, or the one an app carries (``Worker(app)``, ``reap(app)``)."""
    return source if isinstance(source, Engine) else source.engine


def ended_with_dependents(rows: Sequence[Job | Landed | None]) -> builtins.list[Job]:
    """The jobs among ``rows`` that just stopped and have dependents: only these can have
    moved other jobs (through the schema's triggers), so only these need a look (a store
    gives every job with dependents as a row, :data:`Landed.LANDED` never stands for one)."""
    return [job for job in rows
            if isinstance(job, Job) and job.has_dependents and job.is_terminal]
