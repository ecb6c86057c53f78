"""The app: the public face over one engine (store, job types, events), and the control API.

Every control operation reads the job, decides the change from the lifecycle table, and applies
it as a compare-and-set through the engine (:meth:`Engine.control`). If the job moved in
between (a worker finished it, another operator cancelled it), the store refuses the change and
the decision is taken again on the fresh state, so two racing callers can never both succeed at
a move only one of them should make.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload

from conveyor import lifecycle, payload, validate
from conveyor.bulk import BATCH_SIZE, BulkResult, check_bulk, run_bulk
from conveyor.changes import Change
from conveyor.decisions import (
    MAX_PAGE,
    check_wait_timeout,
    has_stopped,
    list_query,
    result_of,
    start_decision,
    verb_decision,
)
from conveyor.dependencies import check_depends_on, check_policy
from conveyor.engine import Engine
from conveyor.errors import (
    UNDECODABLE_ROW,
    ConfigurationError,
    InvalidStateError,
    JobNotFound,
    WaitTimeout,
)
from conveyor.events import (
    EventBus,
    Subscriber,
)
from conveyor.filters import Search
from conveyor.flow import FlowControl
from conveyor.ids import new_job_id, new_job_ids
from conveyor.lifecycle import JobState, Verb
from conveyor.model import HistoryEntry, Job, LogLine
from conveyor.observe import enqueue_trace
from conveyor.operations import Operations
from conveyor.registry import (
    DEFAULT_PAUSE_TIMEOUT,
    JobOptions,
    JobType,
    check_options,
    check_seconds,
    stored_backoff,
)
from conveyor.retry import Backoff
from conveyor.stores.base import NewJob, Store
from conveyor.workflows import chained, grouped

__all__ = ["MAX_PAGE", "BulkResult", "Conveyor", "EnqueueRequest", "WaitTimeout"]

if TYPE_CHECKING:
    from conveyor.worker import Worker, WorkerStats

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_URL = "sqlite:///conveyor.db"
#: How often a waiter reads its job again although nothing woke it: a safety net only.
WAIT_RECHECK = 5.0


@dataclass(frozen=True)
class EnqueueRequest:
    """One job for :meth:`Conveyor.enqueue_many`: every option :meth:`Conveyor.enqueue` takes."""

    job_type: str
    params: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    run_at: datetime | None = None
    delay: float | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    pause_timeout: float | None = None
    backoff: Backoff | None = None
    unique_key: str | None = None
    on_conflict: str = "return_existing"
    depends_on: Sequence[str] = ()
    on_dependency_failure: str = "cancel"


#: NewJob's fields in the order :meth:`Conveyor._new_job` passes them (positionally: cheaper
#: than by keyword, on every enqueued job) and :meth:`Conveyor._new_jobs` sets them; a field
#: added or moved fails here, at import, rather than filling the wrong field.
_NEW_JOB_FIELDS = (
    "id", "job_type", "params", "queue", "priority", "max_attempts", "run_at", "timeout",
    "pause_timeout", "backoff", "requeued_from", "progress", "delay", "params_json",
    "unique_key", "on_conflict", "trace", "limit_key", "depends_on", "on_dependency_failure",
    "backoff_json")
if tuple(f.name for f in dataclasses.fields(NewJob)) != _NEW_JOB_FIELDS:  # pragma: no cover
    raise TypeError("NewJob's fields moved: update _NEW_JOB_FIELDS and the NewJob(...) calls "
                    "in conveyor.app")
#: :meth:`Conveyor._new_jobs` sets a plain request's NewJob field by field on a bare object:
#: what NewJob(...) makes only while NewJob keeps its slots, one per field, and no
#: ``__post_init__`` or ``__setattr__`` of its own.
if (getattr(NewJob, "__slots__", None) != _NEW_JOB_FIELDS or hasattr(NewJob, "__post_init__")
        or NewJob.__setattr__ is not object.__setattr__):  # pragma: no cover
    raise TypeError("NewJob changed: update Conveyor._new_jobs, which sets its fields one by "
                    "one")
_bare = object.__new__


def _checked_params(spec: JobType, params: dict[str, Any] | None,
                    ) -> tuple[dict[str, Any], str, str | None]:
    """A job's params, as every enqueue checks them (strict JSON, fitting the function's
    signature), with their encoding and the job's limit key filled from them."""
    params = {} if params is None else params
    encoded = payload.encode_object(params, "params")
    spec.bind(params)
    return params, encoded, None if spec.limits is None else spec.limit_key(params)


class Conveyor(FlowControl, Operations):
    """Durable background jobs over a store chosen by URL (SQLite file by default).

    The store is opened, and its schema created or upgraded, on first use, so that defining an
    app and registering job types at import time never touches the database.
    """

    def __init__(self, url: str = DEFAULT_URL, *, store: Store | None = None,
                 rand: Callable[[], float] = random.random, **store_options: Any) -> None:
        self.engine = Engine(url, store=store, rand=rand, **store_options)

    # -- store -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.engine.url

    @property
    def store(self) -> Store:
        return self.engine.store

    @property
    def events(self) -> EventBus:
        return self.engine.events

    @property
    def rand(self) -> Callable[[], float]:
        return self.engine.rand

    def use_store(self, url: str) -> None:
        """Point the app at another store (the CLI's ``--store``) before first use."""
        self.engine.use_store(url)

    def close(self) -> None:
        self.engine.close()

    # -- registry --------------------------------------------------------------------------------
    @overload
    def job(self, name: F, /) -> F: ...
    @overload
    def job(self, name: str | None = None, /, *, max_attempts: int = 3,
            backoff: Backoff | None = None, timeout: float | None = None,
            pause_timeout: float = DEFAULT_PAUSE_TIMEOUT, priority: int = 0,
            queue: str = "default", max_running: int | None = None,
            rate_limit: str | None = None,
            limit_key: str | None = None,
            retry_on: tuple[type[BaseException], ...] = (),
            no_retry_on: tuple[type[BaseException], ...] = (),
            auto_retry: bool = True) -> Callable[[F], F]: ...

    def job(self, name: str | F | None = None, /, *, max_attempts: int = 3,
            backoff: Backoff | None = None, timeout: float | None = None,
            pause_timeout: float = DEFAULT_PAUSE_TIMEOUT, priority: int = 0,
            queue: str = "default", max_running: int | None = None,
            rate_limit: str | None = None,
            limit_key: str | None = None,
            retry_on: tuple[type[BaseException], ...] = (),
            no_retry_on: tuple[type[BaseException], ...] = (),
            auto_retry: bool = True) -> Callable[[F], F] | F:
        """Register a job function (sync or ``async def``) under a type name.

        The name defaults to ``module.function``. The function takes a :class:`JobContext`
        first, then the job's params as keyword arguments.

        ``max_running``: at most this many of the type run at once across every worker and
        host; ``rate_limit`` (``"100/m"``, ``/s``, ``/h``): claimed no faster than that.
        With ``limit_key`` (``"tenant:{tenant_id}"``, filled from each job's params) both
        apply to each key value instead of the whole type. Held jobs stay pending.

        The retry policy: a failure is retried automatically (after the backoff, while
        attempts are left) unless it raised one of ``no_retry_on``, or not one of
        ``retry_on`` when that is given, or :class:`FailJob`: then it fails for good. With
        ``auto_retry=False`` a failed job stays ``failed`` with its retries left, and
        :meth:`retry` is the operator's move. A run cut short by its worker (lost, shut down)
        is always retried. See docs/workflows.md.
        """
        options = JobOptions(max_attempts, backoff or Backoff(), timeout, pause_timeout,
                             priority, queue, tuple(retry_on), tuple(no_retry_on), auto_retry)

        def register(func: F) -> F:
            type_name = name if isinstance(name, str) else f"{func.__module__}.{func.__qualname__}"
            known = self.engine.types.get(type_name)
            if known is not None and known.func is not func:
                raise ConfigurationError(f"job type {type_name!r} is already registered")
            self.engine.register(JobType.from_function(
                type_name, func, options, max_running=max_running, rate_limit=rate_limit,
                limit_key=limit_key))
            return func

        if callable(name):
            return register(name)
        return register

    @property
    def job_types(self) -> dict[str, JobType]:
        return dict(self.engine.types)

    def job_type(self, name: str) -> JobType:
        return self.engine.job_type(name)

    # -- enqueue ---------------------------------------------------------------------------------
    def enqueue(self, job_type: str, params: dict[str, Any] | None = None, *,
                queue: str | None = None, priority: int | None = None,
                run_at: datetime | None = None, delay: float | None = None,
                max_attempts: int | None = None, timeout: float | None = None,
                pause_timeout: float | None = None, backoff: Backoff | None = None,
                unique_key: str | None = None, on_conflict: str = "return_existing",
                depends_on: Sequence[str] | None = None,
                on_dependency_failure: str = "cancel",
                actor: str = "api", connection: object = None) -> Job:
        """Validate and store one job; it runs when a worker claims it.

        Unknown types, params that are not JSON or do not fit the function's signature, and bad
        options raise before anything is written.

        ``unique_key``: while an unfinished job (pending, running, paused, or failed with a
        retry left) holds the key, no other is created: that job is returned instead, with
        ``existing`` True (``on_conflict="return_existing"``), or :class:`DuplicateJob` is
        raised carrying it (``"raise"``). The database enforces it, so racing enqueuers from
        any number of processes create one job.

        ``connection``: the caller's own database connection (psycopg on PostgreSQL,
        ``sqlite3`` on SQLite, to the store's database): the job is written in the caller's
        open transaction and exists exactly when it commits (the transactional outbox). No
        :class:`JobCreated` event is emitted for it, since the caller may still roll back.
        Not with ``unique_key`` (refused: a held key inside the caller's transaction cannot
        be answered without aborting it), nor with ``depends_on``.

        ``depends_on``: ids of stored jobs that must all complete first; until then the job is
        pending but not claimable (``waiting_on`` counts the ones left). When one is cancelled
        or fails for good, this job is cancelled naming it, or, with
        ``on_dependency_failure="run"``, runs anyway once the others are done. Its own id or
        an unknown id is refused (so no cycle can be made). See docs/workflows.md.
        """
        new = self._new_job(job_type, params, queue=queue, priority=priority, run_at=run_at,
                            delay=delay, max_attempts=max_attempts, timeout=timeout,
                            pause_timeout=pause_timeout, backoff=backoff,
                            unique_key=unique_key, on_conflict=on_conflict,
                            depends_on=depends_on,
                            on_dependency_failure=on_dependency_failure)
        if actor != "api":  # the default, which the check accepts (as _new_job's defaults)
            validate.actor(actor)
        if connection is not None:
            no_key_on([new])
            (job,) = self.store.insert_jobs_on(connection, [new], actor=actor)
            return job
        (job,) = self.engine.insert([new], actor=actor)
        return job

    def enqueue_many(self, requests: Iterable[EnqueueRequest], *, actor: str = "api",
                     connection: object = None) -> builtins.list[Job]:
        """Validate every job first, then insert them all in one transaction (all or nothing);
        with ``connection``, in the caller's transaction (see :meth:`enqueue`).

        A request whose unique key is held gets the holder in its place (``existing``), or,
        with ``on_conflict="raise"``, fails the whole batch with :class:`DuplicateJob`.
        """
        validate.actor(actor)
        news = self._new_jobs(requests)
        if connection is not None:
            no_key_on(news)
            return self.store.insert_jobs_on(connection, news, actor=actor) if news else []
        return self.engine.insert(news, actor=actor)

    def chain(self, *steps: EnqueueRequest, actor: str = "api") -> builtins.list[Job]:
        """Enqueue ``steps`` in one transaction, each depending on the one before it: they
        run one after another, and a step that fails for good or is cancelled cancels the
        rest. Returns the jobs in order."""
        validate.actor(actor)
        return self.engine.insert(chained(self._new_jobs(steps)), actor=actor)

    def group(self, jobs: Iterable[EnqueueRequest], *, then: EnqueueRequest | None = None,
              actor: str = "api") -> builtins.list[Job]:
        """Enqueue ``jobs`` to run side by side and ``then`` (last in the returned list) once
        all of them completed, in one transaction; ``then`` reads their results with
        ``ctx.dependency_results()``."""
        validate.actor(actor)
        final = None if then is None else self._new_jobs([then])[0]
        return self.engine.insert(grouped(self._new_jobs(jobs), final), actor=actor)

    def dependencies(self, job_id: str) -> tuple[builtins.list[Job], builtins.list[Job]]:
        """The jobs ``job_id`` depends on (upstream) and those depending on it (downstream)."""
        return self.store.dependencies(validate.job_id(job_id))

    def _new_jobs(self, requests: Iterable[EnqueueRequest]) -> builtins.list[NewJob]:
        """Each request checked exactly as :meth:`_new_job` checks one enqueue. The current
        span is read once: one call runs under one span, so every job of it carries the same
        ``traceparent``, and reading it per job cost more than the rest of the checks. The
        ids are made together (:func:`new_job_ids`: one clock read and one ``os.urandom``).

        A request that gives no option (most of a bulk enqueue) skips the call to
        :meth:`_new_job` and its checks of options left at their defaults, which accept them:
        what is checked of it (its type, its params) is checked by the same code,
        :meth:`_checked_params`, and its job is built from the same defaults.
        """
        requests = builtins.list(requests)
        trace = enqueue_trace()
        batch_trace = (trace,)
        news = []
        plain_type = None  # the type of the last request without options, and its spec
        for r, job_id in zip(requests, new_job_ids(len(requests)), strict=True):
            if (r.queue is not None or r.priority is not None or r.run_at is not None
                    or r.delay is not None or r.max_attempts is not None
                    or r.timeout is not None or r.pause_timeout is not None
                    or r.backoff is not None or r.unique_key is not None
                    or r.on_conflict != "return_existing" or r.depends_on != ()
                    or r.on_dependency_failure != "cancel"):
                news.append(self._new_job(
                    r.job_type, r.params, queue=r.queue, priority=r.priority,
                    run_at=r.run_at, delay=r.delay, max_attempts=r.max_attempts,
                    timeout=r.timeout, pause_timeout=r.pause_timeout, backoff=r.backoff,
                    unique_key=r.unique_key, on_conflict=r.on_conflict,
                    depends_on=r.depends_on, on_dependency_failure=r.on_dependency_failure,
                    batch_trace=batch_trace, job_id=job_id))
                continue
            job_type = r.job_type
            if job_type != plain_type or plain_type is None:
                spec = self.engine.job_type(job_type)  # UnknownJobType, as _new_job raises
                queue, priority, attempts, timeout, pause, backoff, backoff_json = (
                    spec.new_job_defaults)
                plain_type = job_type
                # no params (most bulk jobs): checked in full once per run of the type;
                # the same check of the same (empty) params gives the same answer
                empty_fits = False
            params = r.params
            if empty_fits and type(params) is dict and not params:
                encoded, limit_key = "{}", None
            else:
                params, encoded, limit_key = _checked_params(spec, params)
                empty_fits = not params and type(params) is dict and spec.limits is None
            # NewJob's fields set on a bare object, in its field order (checked at import,
            # _check_new_job): its generated __init__, a Python call taking 21 arguments,
            # cost 4,500 instructions a job, this 2,600 (callgrind)
            new = _bare(NewJob)
            new.id = job_id
            new.job_type = job_type
            new.params = params
            new.queue = queue
            new.priority = priority
            new.max_attempts = attempts
            new.run_at = None
            new.timeout = timeout
            new.pause_timeout = pause
            new.backoff = backoff
            new.requeued_from = None
            new.progress = None
            new.delay = None
            new.params_json = encoded
            new.unique_key = None
            new.on_conflict = "return_existing"
            new.trace = trace
            new.limit_key = limit_key
            new.depends_on = ()
            new.on_dependency_failure = "cancel"
            new.backoff_json = backoff_json
            news.append(new)
        return news

    def _new_job(self, job_type: str, params: dict[str, Any] | None, *, queue: str | None,
                 priority: int | None, run_at: datetime | None, delay: float | None,
                 max_attempts: int | None = None, timeout: float | None = None,
                 pause_timeout: float | None = None, backoff: Backoff | None = None,
                 unique_key: str | None = None, on_conflict: str = "return_existing",
                 depends_on: Iterable[str] | None = None,
                 on_dependency_failure: str = "cancel",
                 batch_trace: tuple[str | None] | None = None,
                 job_id: str | None = None) -> NewJob:
        """The job to store, or the error its enqueue raises (nothing written); with
        ``batch_trace`` and ``job_id``, the trace its batch read once and the id it made for
        this job (see :meth:`_new_jobs`)."""
        # Each check is skipped for its option's default, which it would accept: most jobs
        # give none of them, and the calls were a fifth of this method's cost.
        spec = self.engine.job_type(job_type)
        upstream = () if depends_on is None or depends_on == () else check_depends_on(
            depends_on)
        if on_dependency_failure != "cancel":
            check_policy(on_dependency_failure)
        if unique_key is not None:
            validate.unique_key(unique_key)
        if on_conflict != "return_existing":
            validate.on_conflict(on_conflict)
        params, encoded, limit_key = _checked_params(spec, params)
        if not (max_attempts is None and timeout is None and pause_timeout is None
                and queue is None and priority is None):
            check_options(max_attempts, timeout, pause_timeout, queue, priority)
        if run_at is not None and delay is not None:
            raise ConfigurationError("give run_at or delay, not both")
        if run_at is not None:
            # as UTC: PostgreSQL refuses offsets beyond 15:59 that Python allows
            run_at = validate.run_at(run_at).astimezone(UTC)
        if delay is not None:
            check_seconds("delay", delay, zero_ok=True)
        d = spec.new_job_defaults
        if backoff is None:
            backoff_dict, backoff_json = d.backoff, d.backoff_json
        else:
            backoff_dict, backoff_json = stored_backoff(backoff)
        trace = enqueue_trace() if batch_trace is None else batch_trace[0]
        # positional, in NewJob's field order (see _new_jobs)
        return NewJob(
            new_job_id() if job_id is None else job_id, job_type, params,
            queue or d.queue, d.priority if priority is None else priority,
            d.max_attempts if max_attempts is None else max_attempts, run_at,
            d.timeout if timeout is None else timeout,
            d.pause_timeout if pause_timeout is None else pause_timeout,
            backoff_dict, None, None, delay, encoded, unique_key, on_conflict, trace,
            limit_key, upstream, on_dependency_failure, backoff_json)

    # -- reading ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        return self.store.get_job(validate.job_id(job_id))

    def list(self, state: JobState | str | Iterable[JobState | str] | None = None, *,
             job_type: str | Iterable[str] | None = None, queue: str | Iterable[str] | None = None,
             limit: int = 50, before: str | None = None, id_prefix: str | None = None,
             created_after: datetime | None = None, created_before: datetime | None = None,
             finished_after: datetime | None = None, finished_before: datetime | None = None,
             text: str | None = None) -> builtins.list[Job]:
        """Jobs newest first, filtered; page with ``before=<last id of the previous page>``.

        Search: ``id_prefix`` (an id's start or its end), creation and finish time windows
        (``*_after`` inclusive, ``*_before`` exclusive; aware datetimes), and ``text`` found,
        case-insensitively, in the params' or the error's JSON text.
        """
        query = list_query(state, job_type=job_type, queue=queue, limit=limit, before=before,
                           search=Search(id_prefix, created_after, created_before,
                                         finished_after, finished_before, text))
        if query.before is not None and not self.store.get_jobs([query.before]):
            # a cursor must name a stored job: otherwise a typo reads as "no more jobs"
            raise JobNotFound(query.before)
        return self.store.list_jobs(query)

    def count_jobs(self, state: JobState | str | Iterable[JobState | str] | None = None, *,
                   job_type: str | Iterable[str] | None = None,
                   queue: str | Iterable[str] | None = None, id_prefix: str | None = None,
                   created_after: datetime | None = None,
                   created_before: datetime | None = None,
                   finished_after: datetime | None = None,
                   finished_before: datetime | None = None,
                   text: str | None = None) -> int:
        """How many jobs the filters of :meth:`list` match (what a bulk action would look at)."""
        return self.store.count_jobs(list_query(
            state, job_type=job_type, queue=queue,
            search=Search(id_prefix, created_after, created_before, finished_after,
                          finished_before, text)))

    def bulk(self, verb: Verb | str, state: JobState | str | Iterable[JobState | str] | None = None,
             *, job_type: str | Iterable[str] | None = None,
             queue: str | Iterable[str] | None = None, id_prefix: str | None = None,
             created_after: datetime | None = None, created_before: datetime | None = None,
             finished_after: datetime | None = None, finished_before: datetime | None = None,
             text: str | None = None, actor: str = "api", reason: str = "",
             dry_run: bool = False, batch_size: int = BATCH_SIZE,
             keep_checkpoint: bool = False) -> BulkResult:
        """Apply a control verb to every job the filters (as for :meth:`list`; at least one)
        match, ``batch_size`` jobs per transaction, each job's change its own compare-and-set
        recorded in its history; jobs that moved meanwhile are skipped and counted.

        ``dry_run``: change nothing; ``matched`` is how many jobs the filters match now.
        """
        query = list_query(state, job_type=job_type, queue=queue,
                           search=Search(id_prefix, created_after, created_before,
                                         finished_after, finished_before, text))
        checked = check_bulk(verb, query, actor, reason, batch_size)
        if dry_run:
            return BulkResult(checked.value, self.store.count_jobs(query), dry_run=True)
        return run_bulk(self.engine, checked, query, actor=actor, reason=reason,
                        batch_size=batch_size,
                        copy=lambda job: self._requeued_copy(job, keep_checkpoint))

    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        return self.store.count_by_state(None if queue is None else validate.name("queue", queue))

    def history(self, job_id: str) -> builtins.list[HistoryEntry]:
        return self.store.history(validate.job_id(job_id))

    def logs(self, job_id: str, *, attempt: int | None = None, after: int = 0,
             limit: int = 1000) -> builtins.list[LogLine]:
        """What the job logged while it ran (``logging`` and ``ctx.log``), oldest first: lines
        with ``id > after`` (a cursor: the last line's id), of one ``attempt`` if given."""
        for name, value, low in (("attempt", attempt, 0), ("after", after, 0),
                                 ("limit", limit, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not low <= value <= 2**62):
                raise ConfigurationError(f"{name} must be an integer >= {low}, not {value!r}")
        return self.store.job_logs(validate.job_id(job_id), attempt=attempt, after=after,
                                   limit=min(limit, 10_000))

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` with every event this process causes; returns an unsubscribe."""
        return self.events.subscribe(callback)

    def wait(self, job_id: str, timeout: float | None = None, *,
             until_paused: bool = True) -> Job:
        """Block until the job is terminal (or paused, unless ``until_paused`` is False).

        Wakes when the job stops, not on a timer: on this app's own events, and on the store's
        announcement of a change made elsewhere (PostgreSQL: a NOTIFY sent when the change
        commits; SQLite: the watch on the file). A re-read every :data:`WAIT_RECHECK` seconds
        is only a safety net. Raises :class:`WaitTimeout` (a ``TimeoutError``) when
        ``timeout`` passes first, and leaves the job as it is.
        """
        validate.job_id(job_id)
        check_wait_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        woken = threading.Event()
        unsubscribe = self.subscribe(lambda e: woken.set() if e.job.id == job_id else None)
        unwatch = self.store.watch_job(job_id, woken.set)
        try:
            while True:
                woken.clear()  # before the read: a stop after it sets the flag again
                job = self.get(job_id)
                if has_stopped(job, until_paused=until_paused):
                    return job
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise WaitTimeout(f"job {job_id} is still {job.state.value} after {timeout}s")
                woken.wait(WAIT_RECHECK if left is None else min(WAIT_RECHECK, left))
        finally:
            unwatch()
            unsubscribe()

    def result(self, job_id: str) -> Any:
        """What a completed job returned (a job may read another's this way).

        Raises :class:`JobNotCompleted` naming the job's state (and its error, if it failed)
        for a job that has not completed: a missing result never reads as ``None``.
        """
        return result_of(self.get(job_id))

    # -- control ---------------------------------------------------------------------------------
    def pause(self, job_id: str, *, actor: str = "api", reason: str = "") -> Job:
        """Ask a running job to pause at its next checkpoint (it stays running until then)."""
        return self._verb(Verb.PAUSE, job_id, actor, reason)

    def resume(self, job_id: str, *, actor: str = "api", reason: str = "") -> Job:
        """Mark a paused job ready; a worker with a free slot resumes it from its checkpoint.

        On a running job with a pause request not yet honoured, or a pending retry still
        carrying one from a run whose worker was lost, withdraws the request.
        """
        return self._verb(Verb.RESUME, job_id, actor, reason)

    def cancel(self, job_id: str, *, actor: str = "api", reason: str = "") -> Job:
        """Cancel now if pending or paused; a running job stops at its next checkpoint, or is
        stopped by its worker after the grace period."""
        return self._verb(Verb.CANCEL, job_id, actor, reason)

    def retry(self, job_id: str, *, actor: str = "api", reason: str = "") -> Job:
        """Send a failed job back to pending now, if it has retries left."""
        return self._verb(Verb.RETRY, job_id, actor, reason)

    def _verb(self, verb: Verb, job_id: str, actor: str, reason: str) -> Job:
        """Do what the verbs table says ``verb`` does to the job as it is when applied.

        A repeated request changes nothing and returns the job as it is; a refused verb raises
        InvalidStateError and writes nothing.
        """
        return self._control(job_id, verb_decision(verb, job_id, actor, reason))

    def start(self, job_id: str, *, worker: str = "api", lease_seconds: float = 30.0) -> Job:
        """Claim one job by id, for a caller that runs it itself; returns it with its lease.

        Startable: pending and due (``run_at`` passed), or paused with a resume requested.
        Like a worker's claim it is a compare-and-set: of callers racing for one job exactly
        one wins, and the others get InvalidStateError naming the state they found. The
        lease (``lease_token``) expires after ``lease_seconds`` unless renewed, after which
        the reaper treats the job as a lost worker's.
        """
        decide = start_decision(job_id, worker, lease_seconds)
        return self._control(job_id, lambda job: decide(job, self.store.now()))

    def requeue(self, job_id: str, *, actor: str = "api", keep_checkpoint: bool = False) -> Job:
        """Enqueue a fresh copy of a job that has stopped for good; it links back to the original.

        The copy starts with attempt 0 and, unless ``keep_checkpoint``, no checkpoint.
        """
        validate.actor(actor)
        new = self._requeued_copy(self.get(job_id), keep_checkpoint)
        (job,) = self.engine.insert([new], actor=actor, reason=f"requeued from {job_id}")
        return job

    def _requeued_copy(self, original: Job, keep_checkpoint: bool) -> NewJob:
        """The fresh copy :meth:`requeue` stores, or the error it raises (nothing written)."""
        job_id = original.id
        if lifecycle.verb_rule(Verb.REQUEUE, original) is None:
            raise lifecycle.verb_refusal(Verb.REQUEUE, original)
        if original.error is not None and original.error.type == UNDECODABLE_ROW:
            raise InvalidStateError(f"Cannot requeue job {job_id}: its stored row cannot be "
                                    "decoded, so its params are lost")
        if original.job_type in self.engine.types:
            # the function may have changed since: the copy's params must still fit it
            self.job_type(original.job_type).bind(original.params)
        # Everything else was validated when the original was enqueued, so a control-only
        # app (the CLI without --app) can requeue too.
        return NewJob(
            id=new_job_id(), job_type=original.job_type, params=original.params,
            queue=original.queue, priority=original.priority,
            max_attempts=original.max_attempts, timeout=original.timeout,
            pause_timeout=original.pause_timeout, backoff=original.backoff,
            requeued_from=original.id, limit_key=original.limit_key,
            progress=copy.deepcopy(original.progress) if keep_checkpoint else None)

    def _control(self, job_id: str,
                 decide: Callable[[Job], builtins.list[Change]]) -> Job:
        return self.engine.control(job_id, decide)

    def apply(self, changes: Sequence[Change]) -> Job:
        """Apply worker or reaper changes and emit their events (ChangeRefused propagates)."""
        return self.engine.apply(changes)

    # -- workers ---------------------------------------------------------------------------------
    def worker(self, **options: Any) -> Worker:
        """A :class:`~conveyor.worker.Worker` on this app. With ``pool="process"`` and no
        ``app_path``, the path is found among the imported modules (the children import it)."""
        from conveyor.worker import Worker

        if options.get("pool") == "process" and options.get("app_path") is None:
            from conveyor.worker.processes import find_app_path

            options["app_path"] = find_app_path(self)
        return Worker(self.engine, **options)

    def run_worker(self, concurrency: int = 4, *, burst: bool = False,
                   queues: Sequence[str] | None = None, **options: Any) -> WorkerStats:
        """Run a worker in this thread until stopped (SIGINT/SIGTERM) or, with ``burst``, until
        no runnable work is left."""
        return self.worker(concurrency=concurrency, queues=queues, **options).run(burst=burst)


def no_key_on(jobs: Sequence[NewJob]) -> None:
    """An outbox enqueue cannot take a unique key (see :meth:`Conveyor.enqueue`)."""
    if any(new.unique_key is not None for new in jobs):
        raise ConfigurationError("unique_key cannot be combined with connection= (an enqueue "
                                 "in your own transaction); enqueue keyed jobs without it")
    no_links_on(jobs)


def no_links_on(jobs: Sequence[NewJob]) -> None:
    """An outbox enqueue cannot take dependencies: they are linked, and their dependencies'
    rows locked, in a transaction of the store's own."""
    if any(new.depends_on for new in jobs):
        raise ConfigurationError("depends_on cannot be combined with connection= (an enqueue "
                                 "in your own transaction); enqueue dependent jobs without it")
