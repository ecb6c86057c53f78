"""The PostgreSQL store's inserts: new jobs, one by one, in batches, or in the caller's
transaction.

A mixin of :class:`~conveyor.stores.postgres.store.PostgresStore`, kept apart so the store
module stays readable: plain batches go by COPY or one multi-row statement, jobs with unique
keys or dependencies in one transaction, and every path wakes workers once its jobs are
visible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql

from conveyor.errors import ConfigurationError, StoreError
from conveyor.model import Job
from conveyor.stores.base import NewJob, inserted_job
from conveyor.stores.postgres import wire
from conveyor.stores.postgres.common import QUERIES, Conn
from conveyor.stores.postgres.common import fetch_rows as _fetch
from conveyor.stores.postgres.config import PgSettings
from conveyor.stores.postgres.dependencies import link_all
from conveyor.stores.postgres.listener import WorkListener
from conveyor.stores.postgres.rows import row_to_job, utc
from conveyor.stores.postgres.statements import (
    COPY_HISTORY_TYPES,
    COPY_JOB_TYPES,
    brief,
    check_caller_connection,
    copies,
    copy_history_row,
    copy_job_row,
    insert_params,
    inserted_jobs,
    one_job_params,
    one_job_text,
)

_Q = QUERIES
_INSERT_BRIEF = brief(_Q["insert_jobs"])
#: ``insert_job`` as bytes, the form psycopg sends: encoded once, not at every enqueue.
_INSERT_JOB = _Q["insert_job"].encode()
_INSERT_JOB_TEXT = _Q["insert_job"]
T = TypeVar("T")


def _insert_one(conn: Conn, sent: list[bytes | None] | None, new: NewJob, actor: str,
                channel: str) -> tuple[datetime, int]:
    """Run ``insert_job``; its one row (``created_at``, ``due_in_us``) as a tuple.

    Through libpq itself (:func:`.wire.one_text`: the statement prepared once per
    connection, then one Bind/Execute/Sync with ``sent``, the parameters already encoded as
    text): psycopg's cursor around the statement (query conversion, a dumper per parameter,
    its prepare bookkeeping) was most of the client's CPU per ``enqueue()``. The first time
    on a connection (or when ``sent`` is None) through :func:`.wire.one` with the parameters'
    dict, which prepares it; through psycopg where wire leaves it (a parameter of a type it
    does not send, a connection in another encoding), as a plain query with tuple rows: no
    ``sql.SQL`` to compose, no dict per row.
    """
    rows = None if sent is None else wire.one_text(conn, _INSERT_JOB_TEXT, sent)
    if rows is None:
        params = one_job_params(new, actor, channel)
        rows = wire.one(conn, _INSERT_JOB_TEXT, params)
        row = rows[0] if rows else conn.execute(_INSERT_JOB, params, binary=True).fetchone()
    else:
        row = rows[0]
    assert row is not None
    return row[0], row[1]


class _Store(Protocol):
    schema: str
    _settings: PgSettings
    _listener: WorkListener

    def _run(self, what: str, work: Callable[[Conn], T], *, transaction: bool = False,
             retry: bool = False) -> T: ...
    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]: ...
    def _copy(self, conn: Conn, jobs: Sequence[NewJob], actor: str) -> list[Job]: ...
    def _insert_linked(self, conn: Conn, jobs: Sequence[NewJob],
                       params: dict[str, Any]) -> list[Job]: ...
    def _insert_keyed(self, conn: Conn, jobs: Sequence[NewJob], params: dict[str, Any]
                      ) -> list[Job]: ...


class PostgresInserts:
    """Inserting jobs: :meth:`insert_jobs` and :meth:`insert_jobs_on`."""

    def insert_jobs(self: _Store, jobs: Sequence[NewJob], *, actor: str = "") -> list[Job]:
        if len(jobs) == 1 and jobs[0].unique_key is None and not jobs[0].depends_on:
            # the commonest enqueue, tested first: one statement in autocommit (job, history
            # row and NOTIFY in one round trip)
            new, channel = jobs[0], self._settings.channel
            sent = one_job_text(new, actor, channel)
            at, due_in_us = self._run("insert a job",
                                      lambda c: _insert_one(c, sent, new, actor, channel))
            self._listener.wake()
            created = at.astimezone(UTC)
            # due at once (no run_at, no delay: most jobs): no timedelta to make and add
            due = created + timedelta(microseconds=due_in_us) if due_in_us else created
            return [inserted_job(jobs[0], created, due)]
        if not jobs:
            return []
        if not any(new.unique_key is not None or new.depends_on for new in jobs):
            # one statement in autocommit: jobs, history rows and the NOTIFY in one round trip
            channel = self._settings.channel
            if copies(jobs):
                copied = self._run("insert jobs", lambda c: self._copy(c, jobs, actor),
                                   transaction=True)
                self._listener.wake()
                return copied
            params = insert_params(jobs, actor, channel)
            rows = self._run("insert jobs",
                             lambda c: _fetch(c, _INSERT_BRIEF, params, binary=True))
            self._listener.wake()
            return inserted_jobs(jobs, rows)
        params = insert_params(jobs, actor, self._settings.channel)
        for attempt in range(3):
            try:
                found = self._run("insert jobs",
                                  lambda c: self._insert_linked(c, jobs, params),
                                  transaction=True)
                break
            except StoreError as exc:
                # two batches taking the same keys in opposite orders: the server aborts one
                # (nothing written); it goes again and now finds the other's jobs
                cause = exc.__cause__ or exc.__context__
                if attempt == 2 or not isinstance(cause, psycopg.errors.DeadlockDetected):
                    raise
        self._listener.wake()
        return found

    def _copy(self: _Store, conn: Conn, jobs: Sequence[NewJob], actor: str) -> list[Job]:
        """COPY a batch of plain jobs and their history rows (in the caller's transaction,
        after the clock and the NOTIFY: see ``copy_clock``); returns the stored jobs.

        psycopg writes COPY rows in C, and the server stores them without unnesting arrays
        first. Each row is built as it is written and each returned job built right after:
        the server takes longer to store a job (its indexes) than this process to build both,
        so that Python runs while the server works, not before it starts or after it ends.
        """
        found = _fetch(conn, _Q["copy_clock"], {"channel": self._settings.channel})
        created = utc(found[0]["created_at"])
        assert created is not None
        out = []
        with conn.cursor() as cur:
            with cur.copy(sql.SQL(_Q["copy_jobs"])) as copy:
                copy.set_types(COPY_JOB_TYPES)
                for new in jobs:
                    copy.write_row(copy_job_row(new))
                    out.append(inserted_job(new, created, created))
            with cur.copy(sql.SQL(_Q["copy_history"])) as copy:
                copy.set_types(COPY_HISTORY_TYPES)
                for new in jobs:
                    copy.write_row(copy_history_row(new, actor))
        return out

    def _insert_linked(self: _Store, conn: Conn, jobs: Sequence[NewJob],
                       params: dict[str, Any]) -> list[Job]:
        """Insert jobs with unique keys or dependencies, in the caller's transaction."""
        if any(new.unique_key is not None for new in jobs):
            found = self._insert_keyed(conn, jobs, params)
        else:
            found = [row_to_job(r) for r in _fetch(conn, _Q["insert_jobs"], params)]
        return link_all(conn, jobs, found) if any(new.depends_on for new in jobs) else found

    def _insert_params(self: _Store, jobs: Sequence[NewJob], actor: str) -> dict[str, Any]:
        """The ``insert_jobs`` statement's arrays (shared with the async store)."""
        return insert_params(jobs, actor, self._settings.channel)

    def insert_jobs_on(self: _Store, connection: object, jobs: Sequence[NewJob], *,
                       actor: str = "") -> list[Job]:
        """Insert jobs through the caller's own psycopg connection, inside its transaction.

        The jobs (and the NOTIFY that wakes workers) commit or roll back with the caller's
        transaction. A savepoint keeps a failure here from aborting the caller's transaction,
        and the store's schema is put on the search path for these statements only.
        """
        if not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(
                "connection= must be a psycopg.Connection to the store's database (with the "
                f"async client, a psycopg.AsyncConnection), not {type(connection).__name__}")
        params = insert_params(jobs, actor, self._settings.channel)
        with self._errors("insert jobs in the caller's transaction"):
            # first, outside the savepoint: on a connection not in autocommit this opens the
            # caller's transaction (a transaction() block opened here would commit itself)
            found = _fetch(connection, _Q["caller_connection"], {"schema": self.schema})
        check_caller_connection(found, self._settings)
        with self._errors("insert jobs in the caller's transaction"), connection.transaction():
            _fetch(connection, _Q["set_path"], {"path": self.schema})
            rows = _fetch(connection, _Q["insert_jobs"], params)
            _fetch(connection, _Q["set_path"], {"path": found[0]["path"]})
        return [row_to_job(r) for r in rows]

