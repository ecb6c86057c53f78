"""The async client: :class:`AsyncConveyor`, every read and control call of an app, awaitable.

Why a separate object over the same app rather than ``aenqueue``-style twins on
:class:`~conveyor.Conveyor`: one app keeps one registry, one event bus and one set of rules,
and the async client only changes how the database is reached. Every call takes its decisions
from the same functions the sync app uses (validation in ``Conveyor._new_job``, the verbs
table through :func:`~conveyor.decisions.verb_decision`, the list checks of
:func:`~conveyor.decisions.list_query`), and announces what it changed through the app's engine, so
subscribers see the same events whichever client made a change. Only the I/O differs:

- PostgreSQL: psycopg's async connection pool (:mod:`conveyor.stores.postgres.aio`), the same
  named statements as the sync store.
- SQLite: the sync store's calls run in a thread (``asyncio.to_thread``): SQLite has no async
  driver, and the event loop is never blocked on the file.

Workers are not part of it: they run in threads or processes of their own (``conveyor worker``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from conveyor import app as app_module
from conveyor import validate
from conveyor.app import Conveyor, EnqueueRequest
from conveyor.bulk import BATCH_SIZE, BulkResult
from conveyor.changes import Change, ChangeRefused
from conveyor.decisions import (
    check_wait_timeout,
    has_stopped,
    list_query,
    result_of,
    start_decision,
    verb_decision,
)
from conveyor.engine import RACE_RETRIES, Decide, ended_with_dependents
from conveyor.errors import ConveyorError, JobNotFound, WaitTimeout
from conveyor.events import JobEvent, Subscriber
from conveyor.filters import Search
from conveyor.lifecycle import JobState, Verb
from conveyor.model import HistoryEntry, Job, LogLine
from conveyor.retry import Backoff
from conveyor.stores.base import JobQuery, NewJob, Store
from conveyor.workflows import chained, grouped

__all__ = ["AsyncConveyor"]


class AsyncStore(Protocol):
    """What the async client needs of a store (internal)."""

    async def now(self) -> datetime: ...
    async def insert_jobs(self, jobs: Sequence[NewJob], *, actor: str = "") -> list[Job]: ...
    async def insert_jobs_on(self, connection: object, jobs: Sequence[NewJob], *,
                             actor: str = "") -> list[Job]: ...
    async def get_job(self, job_id: str) -> Job: ...
    async def get_jobs(self, job_ids: Iterable[str]) -> list[Job]: ...
    async def list_jobs(self, query: JobQuery) -> list[Job]: ...
    async def count_by_state(self, queue: str | None = None) -> dict[JobState, int]: ...
    async def history(self, job_id: str) -> list[HistoryEntry]: ...
    async def apply(self, changes: Sequence[Change]) -> list[Job]: ...
    async def close(self) -> None: ...


class ThreadedStore:
    """A sync store (SQLite) behind the async protocol: each call runs in a worker thread."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def now(self) -> datetime:
        return await asyncio.to_thread(self._store.now)

    async def insert_jobs(self, jobs: Sequence[NewJob], *, actor: str = "") -> list[Job]:
        return await asyncio.to_thread(self._store.insert_jobs, jobs, actor=actor)

    async def insert_jobs_on(self, connection: object, jobs: Sequence[NewJob], *,
                             actor: str = "") -> list[Job]:
        # In the calling thread: a sqlite3 connection may only be used in the thread that
        # made it, and the caller's transaction is theirs to hold (see docs/integration.md).
        return self._store.insert_jobs_on(connection, jobs, actor=actor)

    async def get_job(self, job_id: str) -> Job:
        return await asyncio.to_thread(self._store.get_job, job_id)

    async def get_jobs(self, job_ids: Iterable[str]) -> list[Job]:
        return await asyncio.to_thread(self._store.get_jobs, list(job_ids))

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        return await asyncio.to_thread(self._store.list_jobs, query)

    async def count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        return await asyncio.to_thread(self._store.count_by_state, queue)

    async def history(self, job_id: str) -> list[HistoryEntry]:
        return await asyncio.to_thread(self._store.history, job_id)

    async def apply(self, changes: Sequence[Change]) -> list[Job]:
        return await asyncio.to_thread(self._store.apply, changes)

    async def close(self) -> None:
        """The sync store stays the app's: closed by ``app.close()``."""


async def open_async_store(store: Store, *, max_size: int = 10) -> AsyncStore:
    """The async face of ``store``: a pool of its own on PostgreSQL, a thread elsewhere."""
    try:
        from conveyor.stores.postgres import PostgresStore
    except ImportError:  # pragma: no cover - without the postgres extra
        return ThreadedStore(store)
    if isinstance(store, PostgresStore):
        from conveyor.stores.postgres.aio import AsyncPostgresStore

        opened = AsyncPostgresStore(store, max_size=max_size)
        await opened.open()
        return opened
    return ThreadedStore(store)


class AsyncConveyor:
    """Every read and control call of ``app``, for asyncio applications.

    Opened on first use (the sync store too, with its migration, in a thread); close it with
    ``await client.close()`` or ``async with AsyncConveyor(app) as client:``. It shares the
    app's job types and events; ``app.close()`` still closes the app's own store.
    """

    def __init__(self, app: Conveyor, *, max_size: int = 10) -> None:
        self.app = app
        self._max_size = max_size
        self._store: AsyncStore | None = None
        self._opening: asyncio.Lock | None = None

    async def __aenter__(self) -> AsyncConveyor:
        await self._async_store()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    async def _async_store(self) -> AsyncStore:
        if self._store is None:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if self._store is None:
                    sync_store = await asyncio.to_thread(lambda: self.app.store)
                    self._store = await open_async_store(sync_store, max_size=self._max_size)
        return self._store

    # -- enqueue -----------------------------------------------------------------------------
    async def enqueue(self, job_type: str, params: dict[str, Any] | None = None, *,
                      queue: str | None = None, priority: int | None = None,
                      run_at: datetime | None = None, delay: float | None = None,
                      max_attempts: int | None = None, timeout: float | None = None,
                      pause_timeout: float | None = None, backoff: Backoff | None = None,
                      unique_key: str | None = None, on_conflict: str = "return_existing",
                      depends_on: Sequence[str] | None = None,
                      on_dependency_failure: str = "cancel",
                      actor: str = "api", connection: object = None) -> Job:
        """:meth:`Conveyor.enqueue`; ``connection``: the caller's ``psycopg.AsyncConnection``
        (or ``sqlite3.Connection``) whose transaction the job joins (not with ``unique_key``
        or ``depends_on``)."""
        new = self.app._new_job(job_type, params, queue=queue, priority=priority,
                                run_at=run_at, delay=delay, max_attempts=max_attempts,
                                timeout=timeout, pause_timeout=pause_timeout, backoff=backoff,
                                unique_key=unique_key, on_conflict=on_conflict,
                                depends_on=depends_on,
                                on_dependency_failure=on_dependency_failure)
        validate.actor(actor)
        (job,) = await self._insert([new], actor, connection)
        return job

    async def enqueue_many(self, requests: Iterable[EnqueueRequest], *, actor: str = "api",
                           connection: object = None) -> builtins.list[Job]:
        """:meth:`Conveyor.enqueue_many`: all validated first, then one transaction."""
        validate.actor(actor)
        return await self._insert(self.app._new_jobs(requests), actor, connection)

    async def _insert(self, news: builtins.list[NewJob], actor: str, connection: object,
                      reason: str = "") -> builtins.list[Job]:
        if not news:
            return []
        store = await self._async_store()
        if connection is not None:  # no event: the caller's transaction may still roll back
            app_module.no_key_on(news)
            return await store.insert_jobs_on(connection, news, actor=actor)
        jobs = await store.insert_jobs(news, actor=actor)
        engine = self.app.engine
        if engine.eager is not None:  # testing: the jobs run inline, off the event loop
            return await asyncio.to_thread(engine.created, jobs, actor=actor, reason=reason)
        return engine.created(jobs, actor=actor, reason=reason)

    async def chain(self, *steps: EnqueueRequest, actor: str = "api") -> builtins.list[Job]:
        """:meth:`Conveyor.chain`: each step depends on the one before, one transaction."""
        validate.actor(actor)
        return await self._insert(chained(self.app._new_jobs(steps)), actor, None)

    async def group(self, jobs: Iterable[EnqueueRequest], *, then: EnqueueRequest | None = None,
                    actor: str = "api") -> builtins.list[Job]:
        """:meth:`Conveyor.group`: ``jobs`` side by side, ``then`` (last) once all completed."""
        validate.actor(actor)
        final = None if then is None else self.app._new_jobs([then])[0]
        return await self._insert(grouped(self.app._new_jobs(jobs), final), actor, None)

    # -- reading -----------------------------------------------------------------------------
    async def get(self, job_id: str) -> Job:
        return await (await self._async_store()).get_job(validate.job_id(job_id))

    async def list(self, state: JobState | str | Iterable[JobState | str] | None = None, *,
                   job_type: str | Iterable[str] | None = None,
                   queue: str | Iterable[str] | None = None, limit: int = 50,
                   before: str | None = None, id_prefix: str | None = None,
                   created_after: datetime | None = None,
                   created_before: datetime | None = None,
                   finished_after: datetime | None = None,
                   finished_before: datetime | None = None,
                   text: str | None = None) -> builtins.list[Job]:
        """:meth:`Conveyor.list`, search filters included."""
        query = list_query(state, job_type=job_type, queue=queue, limit=limit, before=before,
                           search=Search(id_prefix, created_after, created_before,
                                         finished_after, finished_before, text))
        store = await self._async_store()
        if query.before is not None and not await store.get_jobs([query.before]):
            raise JobNotFound(query.before)
        return await store.list_jobs(query)

    async def counts(self, queue: str | None = None) -> dict[JobState, int]:
        checked = None if queue is None else validate.name("queue", queue)
        return await (await self._async_store()).count_by_state(checked)

    async def history(self, job_id: str) -> builtins.list[HistoryEntry]:
        return await (await self._async_store()).history(validate.job_id(job_id))

    # Counting, bulk actions and the dependency graph are operators' calls, not hot paths: they
    # run the sync app's own call in a thread (never on the loop), with its checks and events.
    async def count_jobs(self, state: JobState | str | Iterable[JobState | str] | None = None,
                         *, job_type: str | Iterable[str] | None = None,
                         queue: str | Iterable[str] | None = None,
                         id_prefix: str | None = None, created_after: datetime | None = None,
                         created_before: datetime | None = None,
                         finished_after: datetime | None = None,
                         finished_before: datetime | None = None,
                         text: str | None = None) -> int:
        """:meth:`Conveyor.count_jobs`."""
        return await asyncio.to_thread(
            self.app.count_jobs, state, job_type=job_type, queue=queue, id_prefix=id_prefix,
            created_after=created_after, created_before=created_before,
            finished_after=finished_after, finished_before=finished_before, text=text)

    async def bulk(self, verb: Verb | str,
                   state: JobState | str | Iterable[JobState | str] | None = None, *,
                   job_type: str | Iterable[str] | None = None,
                   queue: str | Iterable[str] | None = None, id_prefix: str | None = None,
                   created_after: datetime | None = None,
                   created_before: datetime | None = None,
                   finished_after: datetime | None = None,
                   finished_before: datetime | None = None, text: str | None = None,
                   actor: str = "api", reason: str = "", dry_run: bool = False,
                   batch_size: int = BATCH_SIZE, keep_checkpoint: bool = False) -> BulkResult:
        """:meth:`Conveyor.bulk`: a verb on every job the filters match, in batches."""
        return await asyncio.to_thread(
            self.app.bulk, verb, state, job_type=job_type, queue=queue, id_prefix=id_prefix,
            created_after=created_after, created_before=created_before,
            finished_after=finished_after, finished_before=finished_before, text=text,
            actor=actor, reason=reason, dry_run=dry_run, batch_size=batch_size,
            keep_checkpoint=keep_checkpoint)

    async def dependencies(self, job_id: str) -> tuple[builtins.list[Job], builtins.list[Job]]:
        """:meth:`Conveyor.dependencies`: (upstream, downstream)."""
        return await asyncio.to_thread(self.app.dependencies, job_id)

    async def logs(self, job_id: str, *, attempt: int | None = None, after: int = 0,
                   limit: int = 1000) -> builtins.list[LogLine]:
        """:meth:`Conveyor.logs` (read in a thread: a job's log is no hot path)."""
        return await asyncio.to_thread(self.app.logs, job_id, attempt=attempt, after=after,
                                       limit=limit)

    async def result(self, job_id: str) -> Any:
        """:meth:`Conveyor.result`: what a completed job returned, else JobNotCompleted."""
        return result_of(await self.get(job_id))

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """The app's events (sync callbacks, called in the thread that made the change)."""
        return self.app.subscribe(callback)

    async def wait(self, job_id: str, timeout: float | None = None, *,
                   until_paused: bool = True) -> Job:
        """:meth:`Conveyor.wait` without blocking the loop: woken by the app's events and the
        store's announcement of a stopped job, not by polling."""
        validate.job_id(job_id)
        check_wait_timeout(timeout)
        store = await self._async_store()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        woken = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(woken.set)

        def on_event(event: JobEvent) -> None:
            if event.job.id == job_id:
                wake()

        unsubscribe = self.app.subscribe(on_event)
        # in a thread: on PostgreSQL, watching writes the job's mark (one round trip)
        unwatch = await asyncio.to_thread(self.app.store.watch_job, job_id, wake)
        try:
            while True:
                woken.clear()
                job = await store.get_job(job_id)
                if has_stopped(job, until_paused=until_paused):
                    return job
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise WaitTimeout(f"job {job_id} is still {job.state.value} after {timeout}s")
                recheck = app_module.WAIT_RECHECK  # the safety net, as in Conveyor.wait
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), recheck if left is None
                                           else min(recheck, left))
        finally:
            unwatch()
            unsubscribe()

    # -- control -----------------------------------------------------------------------------
    async def pause(self, job_id: str, *, actor: str = "api", reason: str = "") -> Job:
        return await self._control(job_id, verb_decision(Verb.PAUSE, job_id, actor, reason))

    async def resume(self, job_id: str, *, actor: str = "api", reason: str = "") -> Job:
        return await self._control(job_id, verb_decision(Verb.RESUME, job_id, actor, reason))

    async def cancel(self, job_id: str, *, actor: str = "api", reason: str = "") -> Job:
        return await self._control(job_id, verb_decision(Verb.CANCEL, job_id, actor, reason))

    async def retry(self, job_id: str, *, actor: str = "api", reason: str = "") -> Job:
        return await self._control(job_id, verb_decision(Verb.RETRY, job_id, actor, reason))

    async def start(self, job_id: str, *, worker: str = "api",
                    lease_seconds: float = 30.0) -> Job:
        """:meth:`Conveyor.start` (the claim is still guarded by due time in the store)."""
        decide = start_decision(job_id, worker, lease_seconds)
        now = await (await self._async_store()).now()
        return await self._control(job_id, lambda job: decide(job, now))

    async def requeue(self, job_id: str, *, actor: str = "api",
                      keep_checkpoint: bool = False) -> Job:
        """:meth:`Conveyor.requeue`: a fresh copy of a job that has stopped for good."""
        validate.actor(actor)
        new = self.app._requeued_copy(await self.get(job_id), keep_checkpoint)
        (job,) = await self._insert([new], actor, None, reason=f"requeued from {job_id}")
        return job

    async def _control(self, job_id: str, decide: Decide) -> Job:
        """:meth:`Engine.control`'s compare-and-set loop, awaited; events through the engine."""
        store = await self._async_store()
        for _ in range(RACE_RETRIES):
            job = await store.get_job(job_id)
            changes = decide(job)
            if not changes:
                return job
            try:
                rows = await store.apply(changes)
            except ChangeRefused:
                continue  # the job moved under us: decide again on its fresh state
            announced = self.app.engine.announce(changes, rows, before=job)
            if ended_with_dependents(rows):
                # what the dependency triggers did to dependents, announced as the sync app does
                await asyncio.to_thread(self.app.engine.dependents_moved, rows)
            return announced
        raise ConveyorError(f"job {job_id} kept changing under {RACE_RETRIES} attempts; "
                            "try again")
