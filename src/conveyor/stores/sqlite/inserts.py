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
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from conveyor.errors import DuplicateJob, StoreError
from conveyor.model import Job
from conveyor.stores.base import NewJob, inserted_job
from conveyor.stores.sqlite.config import autocommits, outbox_connection
from conveyor.stores.sqlite.dependencies import link
from conveyor.stores.sqlite.queries import QUERIES as _Q
from conveyor.stores.sqlite.rows import (
    encoded,
    job_head,
    new_history_rows,
    new_job_rows,
    row_to_job,
    ts,
)


def plain(new: NewJob) -> bool:
    """Whether ``new``'s row is all that ``insert_job_plain`` (and, in a batch,
    ``insert_job_shared``) writes: none of the last columns set (progress, requeued_from,
    trace, limit_key), and no unique key or dependencies (the keyed path)."""
    return (new.progress is None and new.requeued_from is None and new.unique_key is None
            and new.trace is None and new.limit_key is None and not new.depends_on)


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
        if not plain(new):
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
    done = 0
    chain = itertools.chain.from_iterable
    for size, count in _chunks(len(rows), _largest(len(rows[0]))):
        end = done + count * size
        if size == 1:
            conn.executemany(statement, rows[done:end])
        else:
            conn.executemany(multi_row(statement, size),
                             (list(chain(rows[at:at + size])) for at in range(done, end, size)))
        done = end


def _largest(width: int, bound: int = 0) -> int:
    """The most rows of ``width`` values one statement takes beside ``bound`` values bound once
    (:data:`MAX_VALUES` in all), rounded down to a power of two."""
    return 1 << (((MAX_VALUES - bound) // width).bit_length() - 1)


def _chunks(rows: int, largest: int) -> Iterator[tuple[int, int]]:
    """How ``rows`` rows go in, in order: (rows per statement, how many statements), as many
    statements of ``largest`` rows as they fill, then of :data:`SMALL_CHUNK`, then of one."""
    for size in (largest, SMALL_CHUNK, 1) if largest > SMALL_CHUNK else (largest, 1):
        count, rows = divmod(rows, size)
        if count:
            yield size, count


@functools.lru_cache(maxsize=16)
def multi_row(statement: str, rows: int) -> str:
    """The one-row ``INSERT ... VALUES (?, ..., ?)`` ``statement`` for ``rows`` rows at once
    (made from the statement as it is, so a statement a test swaps for an older schema's
    gets its own)."""
    head, found, values = statement.rstrip().rstrip(";").rpartition("VALUES")
    if not found or values.count("(") != 1:
        raise ValueError(f"not a one-row INSERT ... VALUES: {statement!r}")
    return f"{head}VALUES {', '.join([values.strip()] * rows)}"


#: A plain batch as :func:`insert_shared` writes it: runs of consecutive jobs sharing the
#: values ``insert_job_shared`` binds once (and how many jobs each run has), and every job's
#: own values (id, params, run_at), flat, in the batch's order.
PlainBatch = tuple[list[tuple[tuple[Any, ...], int]], list[Any]]
#: How many values of a job ``insert_job_shared`` takes as the job's own.
OWN_VALUES = 3


def plain_batch(jobs: Iterable[NewJob], now: float) -> PlainBatch | None:
    """The ``insert_job_shared`` values of a batch (see :data:`PlainBatch`), or None when a
    job needs more than ``insert_job_plain`` writes (as :func:`plain_job_rows`).

    The same values as :func:`plain_job_rows`' rows (its tests compare them), split into
    those most jobs of a batch share (all of one type and its defaults: one run) and each
    job's own, so that the shared ones are bound once per statement rather than once per
    job (binding a value costs Python's sqlite3 ~450 instructions)."""
    runs: list[tuple[tuple[Any, ...], int]] = []
    own: list[Any] = []
    add = own.extend
    backoffs: dict[int, str] = {}
    shared: tuple[Any, ...] | None = None
    count = 0
    for new in jobs:
        if not plain(new):
            return None
        params, run_at, backoff = encoded(new, now, backoffs)
        timeout = new.timeout
        values = (new.job_type, new.queue, new.priority, new.max_attempts,
                  0 if timeout is None else 1, 0 if timeout is None else timeout,
                  new.pause_timeout, backoff)
        if values != shared:
            if count:
                runs.append((shared, count))  # type: ignore[arg-type]
            shared, count = values, 0
        count += 1
        add((new.id, params, run_at))
    if count:
        runs.append((shared, count))  # type: ignore[arg-type]
    return runs, own


def insert_shared(conn: sqlite3.Connection, statement: str, batch: PlainBatch,
                  now: float) -> None:
    """Write a :func:`plain_batch` with ``statement`` (``insert_job_shared``: ``?1`` the
    clock, then the run's shared values, then one job's own), each run in statements of as
    many rows as :data:`MAX_VALUES` allows (a power of two), then :data:`SMALL_CHUNK`, then
    one, in the batch's order (see :func:`insert_rows`)."""
    runs, own = batch
    width = OWN_VALUES
    at = 0  # the next job's place in the batch
    for shared, count in runs:
        head = (now, *shared)
        for size, statements in _chunks(count, _largest(width, len(head))):
            stop = at + statements * size
            conn.executemany(shared_rows(statement, size, len(head)), [
                (*head, *own[width * start:width * (start + size)])
                for start in range(at, stop, size)])
            at = stop


_NUMBERED = re.compile(r"\?(\d+)")


@functools.lru_cache(maxsize=16)
def shared_rows(statement: str, rows: int, shared: int) -> str:
    """The one-row ``INSERT ... VALUES (...)`` ``statement`` with numbered parameters, the
    first ``shared`` of them the same for every row, for ``rows`` rows at once: each next
    row's own parameters are numbered on from the last one's."""
    head, found, values = statement.rstrip().rstrip(";").rpartition("VALUES")
    numbers = [int(n) for n in _NUMBERED.findall(values)]
    if not found or not numbers:
        raise ValueError(f"not a one-row INSERT ... VALUES with numbered parameters: "
                         f"{statement!r}")
    width = max(numbers) - shared

    def row(k: int) -> str:
        return _NUMBERED.sub(lambda m: f"?{int(m[1]) + k * width}" if int(m[1]) > shared
                             else m[0], values.strip())

    return f"{head}VALUES {', '.join(row(k) for k in range(rows))}"


class _Store(Protocol):
    url: str
    path: str

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def _clock(self) -> float: ...
    def notify_work(self) -> None: ...
    def _insert_keyed(self, jobs: Sequence[NewJob], rows: list[tuple[Any, ...]],
                      history: list[tuple[Any, ...]]) -> list[Job]: ...
    def _insert_batch(self, jobs: Sequence[NewJob], rows: list[tuple[Any, ...]] | PlainBatch,
                      now: float, actor: str, statement: str = "") -> list[Job]: ...
    def _insert_one(self, conn: sqlite3.Connection, new: NewJob, row: tuple[Any, ...],
                    history: tuple[Any, ...]) -> tuple[sqlite3.Row, bool]: ...


class SQLiteInserts:
    """Inserting jobs: :meth:`insert_jobs` and :meth:`insert_jobs_on`."""

    def insert_jobs(self: _Store, jobs: Sequence[NewJob], *, actor: str = "") -> list[Job]:
        now = self._clock()
        # encoded before the write lock; jobs whose last columns are all defaults (most)
        # leave them to the table (insert_job_plain; a batch of them: insert_job_shared)
        batch = plain_batch(jobs, now) if len(jobs) > 1 else None
        if batch is not None:
            return self._insert_batch(jobs, batch, now, actor)
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
        return self._insert_batch(jobs, rows, now, actor, statement)

    def _insert_batch(self: _Store, jobs: Sequence[NewJob],
                      rows: list[tuple[Any, ...]] | PlainBatch, now: float, actor: str,
                      statement: str = "") -> list[Job]:
        """Write a batch of jobs without unique keys or dependencies, as ``statement``'s
        ``rows`` (:func:`insert_rows`) or as a :func:`plain_batch` (:func:`insert_shared`),
        with their create rows; the jobs as written."""
        run_ats = ([row[6] for row in rows] if isinstance(rows, list)
                   else rows[1][OWN_VALUES - 1::OWN_VALUES])
        with self._write() as conn:
            (last,) = conn.execute(_Q["last_seq"]).fetchone()
            if isinstance(rows, list):
                insert_rows(conn, statement, rows)
            else:
                insert_shared(conn, _Q["insert_job_shared"], rows, now)
            # the batch's jobs are those past the last seq (the write lock is held), each
            # with its create row, written by one statement: its values are the same
            # for every job but the job's own
            written = conn.execute(_Q["insert_created_after"],
                                   (now, actor, last or 0)).rowcount
            if written != len(jobs):  # pragma: no cover - only past seq 2**63 - 1,
                # where SQLite picks rowids at random: refused, rolled back
                raise StoreError(f"SQLite store {self.url}: {written} create rows for "
                                 f"{len(jobs)} jobs")
        self.notify_work()
        created = ts(now)
        assert created is not None
        # run_at as stored (the delay already added); most are now
        return [inserted_job(new, created, created if run_at == now else ts(run_at) or created)
                for new, run_at in zip(jobs, run_ats, strict=True)]

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
