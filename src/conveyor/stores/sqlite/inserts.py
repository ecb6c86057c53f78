"""The SQLite store's inserts: enqueueing jobs, in the store's own transaction or the caller's.

A mixin of :class:`~conveyor.stores.sqlite.store.SQLiteStore`, kept apart so the store module
stays about connections, schema and reads. Rows are encoded before the write lock is taken;
unique keys and dependencies take the slower path of one INSERT ... RETURNING per job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from conveyor.errors import DuplicateJob, StoreError
from conveyor.model import Job
from conveyor.stores.base import NewJob, inserted_job
from conveyor.stores.sqlite.config import autocommits, outbox_connection
from conveyor.stores.sqlite.dependencies import link
from conveyor.stores.sqlite.queries import QUERIES as _Q
from conveyor.stores.sqlite.rows import (
    job_head,
    new_history_rows,
    new_job_rows,
    row_to_job,
    ts,
)


def plain_job_rows(jobs: Iterable[NewJob], now: float) -> list[tuple[Any, ...]] | None:
    """The ``insert_job_plain`` arguments of each job (the first ``PLAIN_COLUMNS`` of
    :func:`new_job_rows`' row), or None when a job needs more: one of the last columns set
    (progress, requeued_from, trace, limit_key), or a unique key or dependencies (the keyed
    path). Made directly (:func:`job_head`) rather than cut from full rows: building the full
    row, comparing its tail with ``PLAIN_TAIL`` and cutting it cost as much as the rest of
    the row."""
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    backoffs: dict[int, str] = {}
    for new in jobs:
        if (new.progress is not None or new.requeued_from is not None
                or new.unique_key is not None or new.trace is not None
                or new.limit_key is not None or new.depends_on):
            return None
        append(job_head(new, now, backoffs))
    return rows


#: The most bound values one multi-row statement takes: SQLite's default
#: ``SQLITE_MAX_VARIABLE_NUMBER`` before 3.32, so that a build of SQLite that kept it works too.
MAX_VALUES = 999
#: The fewest rows a multi-row statement is made for (below it rows go one statement each).
SMALL_CHUNK = 8


def insert_rows(conn: sqlite3.Connection, statement: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run the one-row ``INSERT ... VALUES (?, ...)`` ``statement`` for each of ``rows``, in
    their order, with as few statements as it takes: ``n`` rows per statement
    (``INSERT ... VALUES (...), (...), ...``, :func:`multi_row`), in three sizes (the most
    that :data:`MAX_VALUES` allows, rounded down to a power of two; :data:`SMALL_CHUNK`; one).

    Each row is inserted as the one-row statement inserts it, in order (so seq numbers follow
    the rows): the same constraints checked, the same indexes written. What is saved is each
    statement's own work, done once per statement instead of once per row: the reset and
    binding set-up, opening a cursor on the table and on each of its indexes, and closing
    the statement (callgrind, 10,000 plain jobs: about 28,000 of the 66,000 instructions per
    job of the write).
    """
    if not rows:
        return
    width = len(rows[0])
    big = 1 << ((MAX_VALUES // width).bit_length() - 1)
    done = 0
    for size in (big, SMALL_CHUNK) if big > SMALL_CHUNK else (big,):
        if size <= 1:
            break
        count = (len(rows) - done) // size
        if count:
            end = done + count * size
            chain = itertools.chain.from_iterable
            conn.executemany(multi_row(statement, size),
                             (list(chain(rows[at:at + size])) for at in range(done, end, size)))
            done = end
    if done < len(rows):
        conn.executemany(statement, rows[done:])


@functools.lru_cache(maxsize=16)
def multi_row(statement: str, rows: int) -> str:
    """The one-row ``INSERT ... VALUES (?, ..., ?)`` ``statement`` for ``rows`` rows at once
    (made from the statement as it is, so a statement a test swaps for an older schema's
    gets its own)."""
    head, found, values = statement.rstrip().rstrip(";").rpartition("VALUES")
    if not found or values.count("(") != 1:
        raise ValueError(f"not a one-row INSERT ... VALUES: {statement!r}")
    return f"{head}VALUES {', '.join([values.strip()] * rows)}"


class _Store(Protocol):
    url: str
    path: str

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def _clock(self) -> float: ...
    def notify_work(self) -> None: ...
    def _insert_keyed(self, jobs: Sequence[NewJob], rows: list[tuple[Any, ...]],
                      history: list[tuple[Any, ...]]) -> list[Job]: ...
    def _insert_one(self, conn: sqlite3.Connection, new: NewJob, row: tuple[Any, ...],
                    history: tuple[Any, ...]) -> tuple[sqlite3.Row, bool]: ...


class SQLiteInserts:
    """Inserting jobs: :meth:`insert_jobs` and :meth:`insert_jobs_on`."""

    def insert_jobs(self: _Store, jobs: Sequence[NewJob], *, actor: str = "") -> list[Job]:
        now = self._clock()
        # encoded before the write lock; jobs whose last columns are all defaults (most)
        # leave them to the table (insert_job_plain)
        plain = plain_job_rows(jobs, now)
        if plain is None:
            if any(new.unique_key is not None or new.depends_on for new in jobs):
                return self._insert_keyed(jobs, new_job_rows(jobs, now),
                                          new_history_rows(jobs, now, actor))
            rows, statement = new_job_rows(jobs, now), _Q["insert_job"]
        else:
            rows, statement = plain, _Q["insert_job_plain"]
        if len(rows) == 1:  # one enqueue: plain statements, no executemany set-up
            new, row = jobs[0], rows[0]
            with self._write() as conn:
                conn.execute(statement, row)
                conn.execute(_Q["insert_created_last"], (new.id, now, actor))
            self.notify_work()
            created = ts(now)
            assert created is not None
            return [inserted_job(new, created,
                                 created if row[6] == now else ts(row[6]) or created)]
        with self._write() as conn:
            (last,) = conn.execute(_Q["last_seq"]).fetchone()
            insert_rows(conn, statement, rows)
            # the batch's jobs are those past the last seq (the write lock is held), each
            # with its create row, written by one statement: its values are the same
            # for every job but the job's own
            written = conn.execute(_Q["insert_created_after"],
                                   (now, actor, last or 0)).rowcount
            if written != len(rows):  # pragma: no cover - only past seq 2**63 - 1,
                # where SQLite picks rowids at random: refused, rolled back
                raise StoreError(f"SQLite store {self.url}: {written} create rows for "
                                 f"{len(rows)} jobs")
        self.notify_work()
        created = ts(now)
        assert created is not None
        # row[6] is run_at, as stored (the delay already added); most are now
        return [inserted_job(new, created, created if row[6] == now else ts(row[6]) or created)
                for new, row in zip(jobs, rows, strict=True)]

    def _insert_keyed(self: _Store, jobs: Sequence[NewJob], rows: list[tuple[Any, ...]],
                      history: list[tuple[Any, ...]]) -> list[Job]:
        """Insert jobs of which some hold unique keys: each row comes back from its INSERT,
        or is the unfinished job already holding the key."""
        with self._write() as conn:
            found = [self._insert_one(conn, new, row, entry)
                     for new, row, entry in zip(jobs, rows, history, strict=True)]
        self.notify_work()
        return [dataclasses.replace(row_to_job(row), existing=True) if existing
                else row_to_job(row) for row, existing in found]

    def _insert_one(self: _Store, conn: sqlite3.Connection, new: NewJob, row: tuple[Any, ...],
                    history: tuple[Any, ...]) -> tuple[sqlite3.Row, bool]:
        """Insert one job (linked to its dependencies), or find the unfinished job already
        holding its unique key."""
        inserted = conn.execute(_Q["insert_job_returning"], row).fetchone()
        if inserted is not None:
            conn.execute(_Q["insert_history"], history)
            return (link(conn, new, history[1]) if new.depends_on else inserted), False
        holder = conn.execute(_Q["select_unfinished_by_key"], (new.unique_key,)).fetchone()
        if holder is None:  # pragma: no cover - only a duplicate job id could get here
            raise StoreError(f"SQLite store {self.url}: job {new.id} could not be inserted")
        if new.on_conflict == "raise":
            raise DuplicateJob(row_to_job(holder, lenient=True))  # rolls the batch back
        return holder, True

    def insert_jobs_on(self: _Store, connection: object, jobs: Sequence[NewJob], *,
                       actor: str = "") -> list[Job]:
        """Insert jobs through the caller's own ``sqlite3.Connection`` to this file, inside its
        transaction: they commit or roll back with the caller's data (see docs/integration.md).

        Inside a savepoint, so a failure here leaves the caller's earlier writes as they were.
        A connection not in a transaction that would open one on its next write (the sqlite3
        module's default) gets that transaction opened here, for the caller to commit; one in
        autocommit mode gets a transaction of its own, committed here.
        """
        conn = outbox_connection(connection, self.path)
        now = self._clock()
        rows = new_job_rows(jobs, now)
        history = new_history_rows(jobs, now, actor)
        cur = conn.cursor()
        cur.row_factory = sqlite3.Row
        own = not conn.in_transaction and autocommits(conn)
        try:
            if not conn.in_transaction:
                cur.execute("BEGIN IMMEDIATE" if own else "BEGIN")
            cur.execute("SAVEPOINT conveyor_enqueue")
            try:
                inserted = [cur.execute(_Q["insert_job_returning"], row).fetchone()
                            for row in rows]
                cur.executemany(_Q["insert_history"], history)
            except BaseException:
                cur.execute("ROLLBACK TO conveyor_enqueue")
                raise
            finally:
                cur.execute("RELEASE conveyor_enqueue")
            if own:
                cur.execute("COMMIT")
        except sqlite3.Error as exc:
            if own:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
            raise StoreError(f"SQLite store {self.url}: enqueue in the caller's transaction "
                             f"failed: {exc}") from exc
        finally:
            cur.close()
        return [row_to_job(row) for row in inserted]
