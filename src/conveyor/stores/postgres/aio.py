"""The PostgreSQL store for the async client: the same named statements over psycopg's async
pool, so an asyncio application never blocks its event loop on the database.

Only what :class:`conveyor.aio.AsyncConveyor` needs (enqueue, reads, one job's
compare-and-set); workers keep the sync store. Statements and their parameters come from
:mod:`.statements` and rows are decoded by :mod:`.rows`, as for the sync store, so the two
clients cannot drift apart. Errors are translated by the sync store's own rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from conveyor.changes import Change, ChangeRefused, single_job
from conveyor.errors import ConfigurationError, JobNotFound
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job
from conveyor.stores.base import JobQuery, NewJob, inserted_job
from conveyor.stores.postgres.changes import compile_change
from conveyor.stores.postgres.rows import (
    decode_rows,
    json_loads,
    register_loaders,
    row_to_history,
    row_to_job,
    utc,
)
from conveyor.stores.postgres.statements import (
    COPY_HISTORY_TYPES,
    COPY_JOB_TYPES,
    apply_params,
    check_caller_connection,
    copies,
    copy_history_row,
    copy_job_row,
    count_statement,
    insert_params,
    list_statement,
)
from conveyor.stores.postgres.store import _Q, PostgresStore
from conveyor.stores.postgres.worker_path import _Refused

AConn = psycopg.AsyncConnection[TupleRow]
Row = dict[str, Any]
T = TypeVar("T")


async def _fetch(conn: AConn, query: str | sql.Composed,
                 params: dict[str, Any] | None = None) -> list[Row]:
    statement = sql.SQL(query) if isinstance(query, str) else query
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement, params)
        return await cur.fetchall() if cur.description is not None else []


async def _configure(conn: AConn) -> None:
    set_json_loads(json_loads, conn)
    register_loaders(conn)


class AsyncPostgresStore:
    """Async reads and writes on the database of ``store`` (a :class:`PostgresStore`).

    The pool is opened by :meth:`open`, inside the running event loop; a connection is
    checked before use, so one the server dropped while idle costs no failed call.
    """

    def __init__(self, store: PostgresStore, *, max_size: int = 10) -> None:
        self._sync = store
        settings = store._settings
        self._pool: AsyncConnectionPool[AConn] = AsyncConnectionPool(
            settings.conninfo, min_size=1, max_size=max_size, kwargs={"autocommit": True},
            open=False, timeout=store._timeout, name=f"conveyor-async-{store.schema}",
            configure=_configure, check=AsyncConnectionPool.check_connection)

    async def open(self) -> None:
        with self._sync._errors("open the async pool"):
            await self._pool.open(wait=True, timeout=self._sync._timeout)

    async def close(self) -> None:
        await self._pool.close()

    async def _run(self, what: str, work: Callable[[AConn], Awaitable[T]], *,
                   transaction: bool = False) -> T:
        with self._sync._errors(what):
            async with self._pool.connection() as conn:
                if not transaction:
                    return await work(conn)
                async with conn.transaction():
                    return await work(conn)

    async def now(self) -> datetime:
        rows = await self._run("read the clock", lambda c: _fetch(c, _Q["now"]))
        now = utc(rows[0]["now"])
        assert now is not None
        return now

    async def insert_jobs(self, jobs: Sequence[NewJob], *, actor: str = "") -> list[Job]:
        if not jobs:
            return []
        if any(new.depends_on or new.unique_key is not None for new in jobs):
            # several statements (links; a held key's holder read back, or DuplicateJob):
            # the sync store's own, in a thread
            return await asyncio.to_thread(self._sync.insert_jobs, jobs, actor=actor)
        if copies(jobs):  # a large plain batch: by COPY, as the sync store sends it
            copied = await self._run("insert jobs", lambda c: self._copy(c, jobs, actor),
                                     transaction=True)
            self._sync._listener.wake()
            return copied
        params = insert_params(jobs, actor, self._sync._settings.channel)
        rows = await self._run("insert jobs", lambda c: _fetch(c, _Q["insert_jobs"], params))
        self._sync._listener.wake()
        return [row_to_job(r) for r in rows]

    async def _copy(self, conn: AConn, jobs: Sequence[NewJob], actor: str) -> list[Job]:
        """:meth:`PostgresStore._copy` over an async connection."""
        found = await _fetch(conn, _Q["copy_clock"], {"channel": self._sync._settings.channel})
        created = utc(found[0]["created_at"])
        assert created is not None
        out = []
        async with conn.cursor() as cur:
            async with cur.copy(sql.SQL(_Q["copy_jobs"])) as copy:
                copy.set_types(COPY_JOB_TYPES)
                for new in jobs:
                    await copy.write_row(copy_job_row(new))
                    out.append(inserted_job(new, created, created))
            async with cur.copy(sql.SQL(_Q["copy_history"])) as copy:
                copy.set_types(COPY_HISTORY_TYPES)
                for new in jobs:
                    await copy.write_row(copy_history_row(new, actor))
        return out

    async def insert_jobs_on(self, connection: object, jobs: Sequence[NewJob], *,
                             actor: str = "") -> list[Job]:
        """:meth:`PostgresStore.insert_jobs_on` for a ``psycopg.AsyncConnection``."""
        if not isinstance(connection, psycopg.AsyncConnection):
            raise ConfigurationError(
                "connection= must be a psycopg.AsyncConnection to the store's database (or, "
                f"with the sync app, a psycopg.Connection), not {type(connection).__name__}")
        settings = self._sync._settings
        params = insert_params(jobs, actor, settings.channel)
        with self._sync._errors("insert jobs in the caller's transaction"):
            # outside the savepoint: opens the caller's transaction (see the sync store)
            found = await _fetch(connection, _Q["caller_connection"],
                                 {"schema": settings.schema})
        check_caller_connection(found, settings)
        with self._sync._errors("insert jobs in the caller's transaction"):
            async with connection.transaction():
                await _fetch(connection, _Q["set_path"], {"path": settings.schema})
                rows = await _fetch(connection, _Q["insert_jobs"], params)
                await _fetch(connection, _Q["set_path"], {"path": found[0]["path"]})
        return [row_to_job(r) for r in rows]

    async def get_job(self, job_id: str) -> Job:
        rows = await self._run("read a job",
                               lambda c: _fetch(c, _Q["select_job"], {"id": job_id}))
        if not rows:
            raise JobNotFound(job_id)
        return row_to_job(rows[0])

    async def get_jobs(self, job_ids: Iterable[str]) -> list[Job]:
        ids = list(job_ids)
        if not ids:
            return []
        rows = await self._run("read jobs", lambda c: _fetch(c, _Q["select_jobs"], {"ids": ids}))
        found = {job.id: job for job in decode_rows(rows)}
        return [found[i] for i in ids if i in found]

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        statement, params = list_statement(_Q["list_jobs"], query)
        return decode_rows(await self._run("list jobs", lambda c: _fetch(c, statement, params)))

    async def count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        rows = await self._run("count jobs",
                               lambda c: _fetch(c, *count_statement(_Q, queue)))
        counts = dict.fromkeys(JobState, 0)
        for row in rows:
            counts[JobState(row["state"])] = int(row["n"])
        return counts

    async def history(self, job_id: str) -> list[HistoryEntry]:
        rows = await self._run("read history",
                               lambda c: _fetch(c, _Q["select_history"], {"id": job_id}))
        if not rows:
            await self.get_job(job_id)  # raises JobNotFound for an unknown id
        return [row_to_history(r) for r in rows]

    async def apply(self, changes: Sequence[Change]) -> list[Job]:
        """:meth:`PostgresStore.apply`, awaited: the same statements, one transaction."""
        job_id = single_job(changes)
        settings = self._sync._settings
        compiled = [compile_change(_Q["apply_change"], change) for change in changes]
        wakes = any(c.to_state is JobState.PENDING or c.values.get("resume_requested") is True
                    for c in changes)

        async def work(conn: AConn) -> list[Row]:
            moved: list[Row] = []
            for change, (statement, params) in zip(changes, compiled, strict=True):
                moment = moved[0].get("moved_at") if moved else None
                rows = await _fetch(conn, statement, apply_params(params, moment, settings))
                if not rows:
                    raise _Refused(change)
                moved.append(rows[0])
            if wakes:
                await conn.execute(_Q["notify"], {"channel": settings.channel})
            return moved

        what = "apply " + ", ".join(c.action for c in changes)
        try:
            rows = await self._run(what, work, transaction=len(changes) > 1 or wakes)
        except _Refused as refused:
            raise ChangeRefused(refused.change, await self.get_job(job_id)) from None
        if wakes:
            self._sync._listener.wake()
        return [row_to_job(row) for row in rows]
