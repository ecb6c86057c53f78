"""The embedded SQLite store: one file, WAL, safe across threads and processes on one machine.

Why it is built this way:
- One connection per store object, guarded by a lock. SQLite serialises writers anyway, and a
  single connection keeps transactions simple; other processes use their own connections.
- Every write transaction starts with ``BEGIN IMMEDIATE``, taking the write lock up front, so a
  transaction never fails half-way on a lock upgrade. Busy waits are absorbed by the busy
  timeout and then by our own retry loop, so no caller ever sees "database is locked".
- Commits do not checkpoint the WAL: a thread per store does (``checkpoint.py``), so that no
  commit waits for a copy and two fsyncs every few dozen commits.
- The database's clock is this machine's clock (every process sharing the file shares it). It
  is injectable so that tests move time instead of sleeping.
- This module holds the connection, the schema, transactions and reads; the rest of the
  store is in mixins, one module each (``inserts.py``, ``worker_path.py``, ``flow.py``,
  ``logs.py``, ``limits.py``, ``dash.py``, ``ops.py``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from conveyor.errors import ConfigurationError, JobNotFound, StoreError
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job
from conveyor.stores.base import JobQuery
from conveyor.stores.sqlfiles import load_migrations
from conveyor.stores.sqlite.changes import marks
from conveyor.stores.sqlite.checkpoint import BACKSTOP_PAGES, Checkpointer
from conveyor.stores.sqlite.config import (
    APPLICATION_ID,
    create_private,
    is_busy,
    parse_sqlite_url,
    split_sql,
    sqlite_synchronous,
)
from conveyor.stores.sqlite.dash import SQLiteDash, backlog_probe, filter_clause
from conveyor.stores.sqlite.dependencies import upstream_downstream
from conveyor.stores.sqlite.flow import SQLiteFlow
from conveyor.stores.sqlite.inserts import SQLiteInserts
from conveyor.stores.sqlite.limits import SQLiteLimits
from conveyor.stores.sqlite.logs import SQLiteLogs
from conveyor.stores.sqlite.ops import SQLiteOps
from conveyor.stores.sqlite.queries import QUERIES
from conveyor.stores.sqlite.rows import decode_rows, row_to_history, row_to_job
from conveyor.stores.sqlite.wake import CommitWatch
from conveyor.stores.sqlite.worker_path import SQLiteWorkerPath

_PACKAGE = "conveyor.stores.sqlite"
_Q = QUERIES  # the dict the mixins run theirs from (see queries.py)
_MIGRATIONS = load_migrations(_PACKAGE)
LATEST_VERSION = _MIGRATIONS[-1][0]
_BUSY_RETRY_SECONDS = 120.0
T = TypeVar("T")


class _WriteTransaction:
    """:meth:`SQLiteStore._write`'s transaction: holds the store's lock from ``BEGIN
    IMMEDIATE`` to ``COMMIT``; an error inside rolls back (a SQLite error as a StoreError).

    A class rather than a ``contextlib.contextmanager`` generator: every write of the store
    opens one (each enqueue, claim and completion), and the generator's set-up and
    tear-down cost about 3,000 instructions a transaction (callgrind), this class's a third.
    ``BEGIN`` and ``COMMIT`` run directly, and through :meth:`SQLiteStore._retry_busy` (which
    retries them while another process holds the lock) only when refused: they almost
    never are, and the retry loop's set-up (a call, a clock read) cost every transaction.
    """

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __enter__(self) -> sqlite3.Connection:
        store = self._store
        store._lock.acquire()
        try:
            try:  # the statement itself first: _retry_busy's set-up only once it is refused
                store._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as refused:
                store._retry_busy(store._begin, refused)
        except BaseException:
            store._lock.release()
            raise
        return store._conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        store = self._store
        try:
            if kind is not None:
                store._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite store {store.url}: {exc}") from exc
                return
            try:  # as at BEGIN: the retries' set-up only for a refused COMMIT
                store._conn.execute("COMMIT")
            except sqlite3.DatabaseError as refused:
                store._retry_busy(store._commit, refused)
            if store._checkpoints is not None:
                store._checkpoints.committed()
        finally:
            store._lock.release()


class SQLiteStore(SQLiteInserts, SQLiteWorkerPath, SQLiteFlow, SQLiteLogs, SQLiteLimits,
                  SQLiteDash, SQLiteOps):
    """The :class:`~conveyor.stores.base.Store` on one SQLite file."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time,
                 busy_timeout_ms: int = 5000) -> None:
        self.url = url
        self.path = parse_sqlite_url(url)
        self.synchronous = sqlite_synchronous(url)
        self._clock = clock
        self._lock = threading.RLock()
        self._work = threading.Condition(threading.Lock())
        self._work_seq = 0
        self._work_waiters = 0  # threads in wait_for_work: nobody to notify, no notify_all
        self._foreign_seq = self._foreign_waited = 0  # commits by other connections
        self._watch: CommitWatch | None = None
        self._watchers: list[Callable[[], None]] = []  # watch_job's: any foreign commit
        self._closed = False
        #: whether a claim tries ``claim_pending`` first (worker_path.py): cleared when it
        #: found nothing (idle, a limit set, a job to resume), set again by a plain claim
        #: that took pending jobs only with no limit set, so those claims cost no extra statement
        self._one_statement_claims = True
        self._conn = self._connect(busy_timeout_ms)
        self._checkpoints = (None if self.path == ":memory:" else Checkpointer(
            self.path, busy_timeout_ms, self._lock, full=self.synchronous == "FULL"))
        if self._checkpoints is not None:  # a store dropped unclosed leaves no thread behind
            weakref.finalize(self, self._checkpoints.close)

    # -- connection and schema -------------------------------------------------------------
    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        if self.path != ":memory:":
            folder = Path(self.path).resolve().parent
            if not folder.is_dir():
                raise StoreError(
                    f"Cannot open SQLite store {self.url}: folder {folder} does not exist")
            if Path(self.path).is_dir():
                raise ConfigurationError(
                    f"SQLite store {self.url}: {self.path} is a directory; give the path of "
                    "a database file (it is created if missing)")
            create_private(self.path)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout_ms / 1000)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            opened = conn
            self._retry_busy(lambda: self._check_foreign(opened))
            if self.path != ":memory:":
                self._retry_busy(lambda: opened.execute("PRAGMA journal_mode = WAL"))
                # a backstop only: the Checkpointer's thread checkpoints (checkpoint.py)
                conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")  # a whitelisted word
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA recursive_triggers = ON")  # dependents' cascade
        except StoreError as exc:
            if conn is not None:
                conn.close()
            cause = exc.__cause__
            if isinstance(cause, sqlite3.DatabaseError) and not isinstance(
                    cause, sqlite3.OperationalError):
                raise StoreError(
                    f"Cannot open SQLite store {self.url}: the file is not a SQLite database or "
                    f"is corrupt ({cause})") from cause
            raise
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise StoreError(
                f"Cannot open SQLite store {self.url}: the file is not a SQLite database or is "
                f"corrupt ({exc})"
            ) from exc
        return conn

    def _check_foreign(self, conn: sqlite3.Connection) -> None:
        app_id = conn.execute(_Q["application_id"]).fetchone()[0]
        if app_id == APPLICATION_ID:
            version = conn.execute(_Q["schema_version"]).fetchone()[0]
            if version > LATEST_VERSION:
                raise StoreError(
                    f"The database {self.url} is at schema version {version}, newer than this "
                    f"conveyor knows ({LATEST_VERSION}); upgrade conveyor to use it"
                )
            return
        tables = [r[0] for r in conn.execute(_Q["user_tables"])]
        if app_id != 0 or tables:
            shown = ", ".join(tables[:5]) or f"application_id {app_id}"
            raise StoreError(
                f"The database {self.url} is not a conveyor database (it holds {shown}); "
                "refusing to touch it"
            )

    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute(_Q["schema_version"]).fetchone()[0])

    def migrate(self) -> None:
        # Foreign keys are off while migrating: a migration that rebuilds a table (0009) drops
        # the old one, which would otherwise cascade to every row referring to it. The pragma
        # does nothing inside a transaction, hence around it.
        with self._lock:
            self._conn.execute("PRAGMA foreign_keys = OFF")
            try:
                self._migrate()
            finally:
                self._conn.execute("PRAGMA foreign_keys = ON")

    def _migrate(self) -> None:
        with self._write() as conn:
            current = conn.execute(_Q["schema_version"]).fetchone()[0]
            for version, _name, sql in _MIGRATIONS:
                if version <= current:
                    continue
                for statement in split_sql(sql):
                    conn.execute(statement)
                conn.execute(_Q["set_schema_version"].format(version=int(version)))
            conn.execute(_Q["set_application_id"].format(application_id=int(APPLICATION_ID)))

    def close(self) -> None:
        if self._checkpoints is not None:
            # first, and outside the lock its thread may wait for: the store's close then
            # ends the WAL as the file's last connection
            self._checkpoints.close()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
                if self._watch is not None:
                    self._watch.close()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- transactions -------------------------------------------------------------------------
    def _write(self) -> _WriteTransaction:
        """A write transaction: ``BEGIN IMMEDIATE``, retried while another process writes."""
        return _WriteTransaction(self)

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._retry_busy(lambda: self._conn.execute(sql, args).fetchall())

    def _retry_busy(self, op: Callable[[], T],
                    refused: sqlite3.DatabaseError | None = None) -> T:
        """``op``, retried while another process holds the write lock (up to
        ``_BUSY_RETRY_SECONDS``); any other SQLite error as a StoreError. ``refused``: how a
        first attempt the caller made itself failed (as if ``op`` had raised it)."""
        deadline = time.monotonic() + _BUSY_RETRY_SECONDS
        delay = 0.005
        error = refused
        while True:
            if error is None:
                try:
                    return op()
                except sqlite3.DatabaseError as exc:
                    error = exc
            if (not isinstance(error, sqlite3.OperationalError) or not is_busy(error)
                    or time.monotonic() > deadline):
                raise StoreError(f"SQLite store {self.url}: {error}") from error
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            error = None

    # -- jobs ------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job:
        rows = self._read(_Q["select_job"], (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return row_to_job(rows[0], lenient=True)

    def get_jobs(self, job_ids: Iterable[str]) -> list[Job]:
        ids = list(job_ids)
        found: dict[str, Job] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in self._read(_Q["select_jobs"].format(ids=marks(len(chunk))), chunk):
                found.update((job.id, job) for job in decode_rows([row]))
        return [found[i] for i in ids if i in found]

    def list_jobs(self, query: JobQuery) -> list[Job]:
        probe = backlog_probe(query)
        small = probe is not None and bool(self._read(*probe)[0]["small"])
        where, args = filter_clause(query, listing=True, small_backlog=small)
        if query.before is not None:
            where.append(_Q["list_before"])
            args.append(query.before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        args.append(max(0, query.limit))
        rows = self._read(_Q["list_jobs"].format(where=clause), args)
        return decode_rows(rows)

    def count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        rows = (self._read(_Q["count_by_state"]) if queue is None
                else self._read(_Q["count_by_state_in_queue"], (queue,)))
        counts = dict.fromkeys(JobState, 0)
        for row in rows:  # pending comes in two rows (count_by_state)
            counts[JobState(row["state"])] += row["n"]
        return counts

    def dependencies(self, job_id: str) -> tuple[list[Job], list[Job]]:
        with self._lock:
            up, down = self._retry_busy(lambda: upstream_downstream(self._conn, job_id))
        return decode_rows(up), decode_rows(down)

    def history(self, job_id: str) -> list[HistoryEntry]:
        rows = self._read(_Q["select_history"], (job_id,))
        if not rows:
            self.get_job(job_id)  # raises JobNotFound for an unknown id
        return [row_to_history(r) for r in rows]

    # -- workers ---------------------------------------------------------------------------------
    def expired_leases(self, limit: int) -> list[Job]:
        return decode_rows(self._read(_Q["expired_leases"], (self._clock(), limit)))

    def expired_pauses(self, limit: int) -> list[Job]:
        return decode_rows(self._read(_Q["expired_pauses"], (self._clock(), limit)))

    def wait_for_work(self, timeout: float) -> None:
        """Return when work may have appeared, or after ``timeout`` seconds.

        Work made through this store object wakes the waiter at once. Another process cannot
        signal us, so the first wait starts a :class:`~conveyor.stores.sqlite.wake.CommitWatch`
        that wakes us soon after another connection commits (see that module). Such a commit
        seen since the previous wait returned (say, while the caller was claiming) returns at
        once, so that none falls between a caller's empty claim and its wait.
        """
        self._start_watch()
        with self._work:
            seen, foreign = self._work_seq, self._foreign_waited
            self._work_waiters += 1
            if self._watch is not None:
                self._watch.want()  # it rests while nobody waits (see wake.py)
            try:
                self._work.wait_for(
                    lambda: self._work_seq != seen or self._foreign_seq != foreign,
                    timeout=max(0.0, timeout))
            finally:
                self._work_waiters -= 1
            self._foreign_waited = self._foreign_seq

    def _start_watch(self) -> None:
        """Start the watch on first need. A commit made before the watch existed (between the
        caller's last look and now) is not seen by it, so its start counts as a foreign
        commit: every waiter looks once more, as a PostgreSQL listener's (re)start does."""
        if self.path == ":memory:":
            return
        with self._lock:
            if self._watch is not None or self._closed:
                return
            self._watch = CommitWatch(self.path, self._data_version, self._foreign_commit,
                                      self._someone_waits)
        self._foreign_commit()

    def _someone_waits(self) -> bool:
        """Whether the watch must look: a waiter or a job's watcher is there (read without
        the lock: a waiter counted after this read calls the watch's ``want``)."""
        return self._work_waiters > 0 or bool(self._watchers)

    def _data_version(self) -> int | None:
        """Changes when another connection commits (None once closed or unreadable)."""
        with self._lock:
            if self._closed:
                return None
            try:
                return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error:
                return None

    def _foreign_commit(self) -> None:
        with self._work:
            self._foreign_seq += 1
            self._work.notify_all()
            watchers = list(self._watchers)
        for wake in watchers:
            wake()

    def watch_job(self, job_id: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Calls ``wake`` after every commit by another connection (the file tells no more
        than that something changed): the caller reads its job again."""
        with self._work:
            self._watchers.append(wake)
        self._start_watch()
        if self._watch is not None:
            self._watch.want()

        def unwatch() -> None:
            with self._work:
                if wake in self._watchers:
                    self._watchers.remove(wake)

        return unwatch

    def notify_work(self) -> None:
        """Wake this store's waiters (:meth:`wait_for_work`). Called after every enqueue: a
        process that only enqueues has none, and skipping ``notify_all`` then saves most of
        this call's cost. The count is kept under the same lock as the waits, so a waiter
        either is counted here or reads the new ``_work_seq`` before it sleeps."""
        with self._work:
            self._work_seq += 1
            if self._work_waiters:
                self._work.notify_all()

