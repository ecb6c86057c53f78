"""The PostgreSQL store: many workers on many machines sharing one database.

Why it is built this way:
- A ``psycopg_pool.ConnectionPool`` of autocommit connections. What is atomic as one statement
  (a claim, a heartbeat, a single compare-and-set with its history row) runs as one statement,
  without BEGIN/COMMIT round trips; what takes several statements runs in an explicit
  transaction. Writes that must wake workers NOTIFY inside their transaction, so the
  notification is delivered exactly when the work becomes visible.
- Every transition is one ``UPDATE ... WHERE state = ANY(...)`` (plus lease and guards) whose
  history row is written by the same statement; zero rows means refused, never overwritten.
- Claims use ``FOR UPDATE SKIP LOCKED`` over partial indexes, so concurrent workers never get
  the same job and never queue behind each other's row locks.
- Time is the database's ``now()``: hosts with skewed clocks still agree on leases and run_at.
- The server may drop connections at any time (restart, failover, ``pg_terminate_backend``).
  A pooled connection the server closed has input waiting on its socket while idle; such a
  connection is checked and replaced before use, so a dropped connection costs no failed call.
  Reads are also retried once on a broken connection; a write is retried only when it broke
  before anything was sent (its outcome would otherwise be unknown).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from time import monotonic
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from conveyor.errors import ConfigurationError, JobNotFound, StoreError
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job
from conveyor.stores.base import JobQuery
from conveyor.stores.postgres import wire
from conveyor.stores.postgres.common import PACKAGE, QUERIES, Conn
from conveyor.stores.postgres.common import fetch_rows as _fetch
from conveyor.stores.postgres.config import DEFAULT_SCHEMA, describe, parse_url
from conveyor.stores.postgres.dash import PostgresDash
from conveyor.stores.postgres.dependencies import upstream_downstream
from conveyor.stores.postgres.flow import PostgresFlow
from conveyor.stores.postgres.inserts import PostgresInserts
from conveyor.stores.postgres.limits import PostgresLimits
from conveyor.stores.postgres.listener import StopListener, WorkListener
from conveyor.stores.postgres.logs import PostgresLogs
from conveyor.stores.postgres.ops import PostgresOps
from conveyor.stores.postgres.rows import (
    decode_rows,
    json_loads,
    register_loaders,
    row_to_history,
    row_to_job,
    utc,
)
from conveyor.stores.postgres.statements import count_statement, list_statement
from conveyor.stores.postgres.worker_path import PostgresWorkerPath
from conveyor.stores.sqlfiles import load_migrations

_Q = QUERIES  # the one dict of statements the store and its mixins share
_MIGRATIONS = load_migrations(PACKAGE)
LATEST_VERSION = _MIGRATIONS[-1][0]

T = TypeVar("T")
#: How long a connection may serve one statement after another without passing back through
#: the pool (see :meth:`PostgresStore._checkin`): the pool's own policies (its lifetime and
#: idle limits, its accounting) see every connection at least this often while it is used.
PARKED_FOR = 1.0
_IDLE = TransactionStatus.IDLE
#: A connection out of the pool: the connection, the time (``monotonic()``) by which it goes
#: back through the pool, and a call telling whether the server sent it something meanwhile.
_Lease = tuple[Conn, float, Callable[[], object]]


def _has_input(conn: Conn) -> bool:
    """Whether the server sent something to a connection nobody is using (a FATAL, or EOF)."""
    return bool(wire.input_check(conn)())


def _usable(conn: Conn) -> bool:
    """Cheap liveness check: a round trip only when the socket says something happened."""
    if conn.closed or conn.broken:
        return False
    if not _has_input(conn):
        return True
    try:
        conn.execute("")
    except psycopg.Error:
        return False
    return True


def _configure(conn: Conn) -> None:
    """Set up each new pooled connection: our jsonb loader (see :func:`rows.json_loads`)."""
    set_json_loads(json_loads, conn)
    register_loaders(conn)


def _dropped(conn: Conn, exc: psycopg.OperationalError) -> bool:
    """Whether the connection died under us (so a safe statement may be run again).

    The server's "terminating connection" errors (57P0x) arrive before libpq has seen the
    socket close, so ``conn.broken`` alone misses them.
    """
    state = exc.sqlstate or ""
    return conn.broken or state.startswith("08") or state in ("57P01", "57P02", "57P03")


class PostgresStore(PostgresInserts, PostgresWorkerPath, PostgresFlow, PostgresLogs,
                    PostgresLimits, PostgresDash, PostgresOps):
    """The :class:`~conveyor.stores.base.Store` on PostgreSQL (psycopg 3).

    ``url`` is ``postgresql://user:password@host:port/dbname``, optionally with
    ``?schema=name``; every table lives in that schema (default ``conveyor``). The constructor
    connects once to fail fast with a clear :class:`StoreError` on a wrong URL, and refuses a
    schema written by a newer conveyor.
    """

    def __init__(self, url: str, *, schema: str = DEFAULT_SCHEMA, min_size: int = 1,
                 max_size: int = 10, timeout: float = 15.0) -> None:
        if min_size < 0 or max_size < max(1, min_size):
            raise ConfigurationError(
                f"PostgreSQL pool sizes must satisfy 0 <= min_size <= max_size and "
                f"max_size >= 1 (got min_size={min_size}, max_size={max_size})")
        self._settings = parse_url(url, schema)
        self.url = url
        self.schema = self._settings.schema
        self._safe_url = self._settings.safe_url
        self._max_size = max_size
        self._timeout = timeout
        self._closed = False
        #: The connection parked between two statements (at most one: see _checkin), with the
        #: time by which it goes back through the pool; none when the pool may keep no idle
        #: connection (min_size 0), which a parked one would be.
        self._parked: list[_Lease] = []
        self._parks = min_size >= 1
        #: How many threads are getting a connection from the pool: while one is, a connection
        #: given back goes to the pool, where that thread may be waiting for it.
        self._asking = 0
        self._asking_lock = threading.Lock()
        self._check_server()
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            self._settings.conninfo, min_size=min_size, max_size=max_size,
            kwargs={"autocommit": True}, open=True, timeout=timeout,
            name=f"conveyor-{self.schema}", configure=_configure,
        )
        self._listener = WorkListener(self._settings.conninfo, self._settings.channel,
                                      self._safe_url, self._settings.secrets)
        self._stops = StopListener(self._settings.conninfo, self._settings.stop_channel,
                                   self._safe_url, self._settings.secrets)

    # -- connections ---------------------------------------------------------------------------
    def _check_server(self) -> None:
        try:
            with psycopg.connect(self._settings.conninfo, autocommit=True) as conn:
                version = self._read_version(conn)
        except psycopg.Error as exc:
            raise self._error(
                f"Cannot connect to PostgreSQL at {self._safe_url}: {self._describe(exc)}",
                exc) from None
        self._refuse_newer(version)

    def _describe(self, exc: BaseException) -> str:
        return describe(exc, self._settings.secrets)

    def _error(self, message: str, exc: BaseException) -> StoreError:
        """A StoreError caused by ``exc``, unless the text of ``exc`` might hold the password."""
        error = StoreError(message)
        leaked = any(secret in str(exc) for secret in self._settings.secrets)
        error.__cause__ = None if leaked else exc
        error.__suppress_context__ = True
        return error

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Every database failure leaves the store as one StoreError naming what failed."""
        try:
            yield
        except (PoolClosed, PoolTimeout, psycopg.Error) as exc:
            error = self._translated(what, exc)
            raise error from error.__cause__

    def _translated(self, what: str, exc: Exception) -> StoreError:
        """The StoreError :meth:`_errors` raises for ``exc``, to be raised ``from`` its
        ``__cause__`` (:meth:`_run` raises it too, without a generator context manager
        around every statement). A psycopg error is raised from None: its text went into
        the message (with any secret masked); the error stays the ``__context__``."""
        if isinstance(exc, PoolClosed):
            error = StoreError(f"PostgreSQL store {self._safe_url} is closed")
            error.__cause__ = exc
            return error
        if isinstance(exc, PoolTimeout):
            error = StoreError(
                f"PostgreSQL store {self._safe_url}: {what} failed: no connection within "
                f"{self._timeout:g}s (is the server reachable?)")
            error.__cause__ = exc
            return error
        if isinstance(exc, psycopg.errors.UndefinedTable):
            message = (f"PostgreSQL store {self._safe_url}: schema {self.schema!r} is not set "
                       f"up ({self._describe(exc)}); run migrate() first")
        else:
            message = f"PostgreSQL store {self._safe_url}: {what} failed: {self._describe(exc)}"
        error = StoreError(message)
        error.__cause__ = None
        return error

    def _checkout(self) -> _Lease:
        """A usable connection, with the time by which it goes back through the pool.

        The connection parked by the last statement first (see :meth:`_checkin`) if it is not
        due back and the server sent it nothing (such as a FATAL, or EOF: the pool's path
        below checks it properly); else one from the pool, checked for a server-side close
        before it is used."""
        try:
            lease = self._parked.pop()
        except IndexError:
            pass
        else:
            if not lease[2]() and monotonic() <= lease[1]:
                return lease
            self._pool.putconn(lease[0])
        for _ in range(self._max_size):
            lease = self._from_pool()
            if _usable(lease[0]):
                return lease
            self._pool.putconn(lease[0])  # closed by the server: the pool drops it, opens another
        return self._from_pool()

    def _from_pool(self) -> _Lease:
        """A connection from the pool (which may wait for one), or one parked meanwhile."""
        with self._asking_lock:
            self._asking += 1
        try:
            # parked after this thread found none, and before it counted itself above: the
            # thread parking it may not have seen this one asking, so it is taken here
            # rather than left parked while this thread waits in the pool
            if self._parked:
                with contextlib.suppress(IndexError):
                    return self._parked.pop()
            conn = self._pool.getconn()
            return conn, monotonic() + PARKED_FOR, wire.input_check(conn)
        finally:
            with self._asking_lock:
                self._asking -= 1

    def _checkin(self, lease: _Lease) -> None:
        """Give a connection back after a statement: park it for the next one, or return it
        to the pool.

        Why park: psycopg_pool's checkout and return (its lock, stats, logging calls and
        checks) cost about a fifth of the client's CPU per ``enqueue()``; a single parked
        connection serves a thread's next statement for a list pop and a poll. Only an idle
        connection is parked (one in a transaction, in error or closed goes to the pool,
        which rolls it back or replaces it), only one at a time (the pool keeps the others,
        and shrinks to ``min_size`` when idle as before: the parked one is one of those it
        counts), and never while another thread is asking the pool for a connection, which
        it then gets from the pool at once rather than waiting for a parked one. A parked
        connection goes back through the pool once it is due (:data:`PARKED_FOR`), so the
        pool's lifetime and idle limits still apply; a closed store parks nothing.
        """
        conn = lease[0]
        if not self._parks or self._parked or conn.pgconn.transaction_status != _IDLE:
            self._pool.putconn(conn)
            return
        self._parked.append(lease)
        if self._asking or self._closed or len(self._parked) > 1:
            self._unpark()

    def _unpark(self) -> None:
        """Return every parked connection to the pool."""
        while self._parked:
            try:
                lease = self._parked.pop()
            except IndexError:  # taken by another thread meanwhile
                return
            self._pool.putconn(lease[0])

    def _run(self, what: str, work: Callable[[Conn], T], *, transaction: bool = False,
             retry: bool = False) -> T:
        """Run ``work`` on a pooled connection, in a transaction if asked.

        ``retry`` marks ``work`` as a read, safe to run again on a fresh connection if the
        first one broke. A transaction is retried only if it broke at BEGIN.
        """
        attempts = 3 if retry else 2 if transaction else 1
        for attempt in range(1, attempts + 1):
            try:
                lease = self._checkout()
                conn = lease[0]
                sent = False
                try:
                    if transaction:
                        conn.execute("BEGIN")
                    sent = True
                    result = work(conn)
                    if transaction:
                        conn.execute("COMMIT")
                    return result
                except psycopg.OperationalError as exc:
                    if attempt < attempts and _dropped(conn, exc) and (retry or not sent):
                        continue
                    raise
                finally:
                    if transaction and not conn.broken:
                        with contextlib.suppress(psycopg.Error):
                            conn.rollback()  # a no-op after COMMIT
                    self._checkin(lease)
            except (PoolClosed, PoolTimeout, psycopg.Error) as exc:  # as _errors(what) would
                error = self._translated(what, exc)
                raise error from error.__cause__
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schema --------------------------------------------------------------------------------
    def _read_version(self, conn: Conn) -> int:
        present = _fetch(conn, _Q["has_migrations_table"])
        if not present[0]["present"]:
            return 0
        return int(_fetch(conn, _Q["schema_version"])[0]["version"])

    def _refuse_newer(self, version: int) -> None:
        if version > LATEST_VERSION:
            raise StoreError(
                f"The PostgreSQL store {self._safe_url} (schema {self.schema!r}) is at schema "
                f"version {version}, newer than this conveyor knows ({LATEST_VERSION}); "
                "upgrade conveyor to use it")

    def _migration_lock_key(self) -> int:
        """One advisory lock per schema: migrations of other schemas do not wait for ours."""
        digest = hashlib.blake2b(f"conveyor.migrate:{self.schema}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)

    def schema_version(self) -> int:
        return self._run("read the schema version", self._read_version, retry=True)

    def migrate(self) -> None:
        """Create the schema or bring it up to date, in one transaction.

        The advisory lock serialises concurrent migrators (several workers starting at once):
        the first does the work, the others then find nothing left to do.
        """
        def work(conn: Conn) -> None:
            # a migration may take longer than the session's bounds meant for job traffic
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute("SET LOCAL lock_timeout = 0")
            conn.execute(_Q["lock_migrations"], {"key": self._migration_lock_key()})
            schema = sql.Identifier(self.schema)
            exists = _fetch(conn, "SELECT 1 AS one FROM pg_namespace WHERE nspname = %(s)s",
                            {"s": self.schema})
            if not exists:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
            current = self._read_version(conn)
            self._refuse_newer(current)
            if current == 0:
                self._refuse_foreign(conn)
            conn.execute(_Q["create_migrations_table"])
            for version, name, script in _MIGRATIONS:
                if version > current:
                    conn.execute(script)
                    conn.execute(_Q["record_migration"], {"version": version, "name": name})

        self._run("migrate", work, transaction=True)

    def _refuse_foreign(self, conn: Conn) -> None:
        tables = [r["name"] for r in _fetch(conn, _Q["foreign_tables"], {"schema": self.schema})]
        if tables:
            raise StoreError(
                f"Schema {self.schema!r} in {self._safe_url} already holds tables that are not "
                f"conveyor's ({', '.join(tables[:5])}); refusing to touch it: choose another "
                "schema (?schema=name)")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unpark()
        self._listener.close()
        self._stops.close()
        self._pool.close()

    def now(self) -> datetime:
        rows = self._run("read the clock", lambda c: _fetch(c, _Q["now"]), retry=True)
        now = utc(rows[0]["now"])
        assert now is not None
        return now

    # -- jobs ------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job:
        rows = self._run("read a job", lambda c: _fetch(c, _Q["select_job"], {"id": job_id}),
                         retry=True)
        if not rows:
            raise JobNotFound(job_id)
        return row_to_job(rows[0])

    def get_jobs(self, job_ids: Iterable[str]) -> list[Job]:
        ids = list(job_ids)
        if not ids:
            return []
        rows = self._run("read jobs", lambda c: _fetch(c, _Q["select_jobs"], {"ids": ids}),
                         retry=True)
        found = {job.id: job for job in decode_rows(rows)}
        return [found[i] for i in ids if i in found]

    def list_jobs(self, query: JobQuery) -> list[Job]:
        statement, params = list_statement(_Q["list_jobs"], query)
        rows = self._run("list jobs", lambda c: _fetch(c, statement, params), retry=True)
        return decode_rows(rows)

    def count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        rows = self._run("count jobs",
                         lambda c: _fetch(c, *count_statement(_Q, queue)),
                         retry=True)
        counts = dict.fromkeys(JobState, 0)
        for row in rows:
            counts[JobState(row["state"])] = int(row["n"])
        return counts

    def dependencies(self, job_id: str) -> tuple[list[Job], list[Job]]:
        return self._run("read dependencies", lambda c: upstream_downstream(c, job_id),
                         retry=True)

    def history(self, job_id: str) -> list[HistoryEntry]:
        rows = self._run("read history",
                         lambda c: _fetch(c, _Q["select_history"], {"id": job_id}), retry=True)
        if not rows:
            self.get_job(job_id)  # raises JobNotFound for an unknown id
        return [row_to_history(r) for r in rows]

    # -- workers ---------------------------------------------------------------------------------
    def expired_leases(self, limit: int) -> list[Job]:
        rows = self._run("find expired leases",
                         lambda c: _fetch(c, _Q["expired_leases"], {"limit": limit}), retry=True)
        return decode_rows(rows)

    def expired_pauses(self, limit: int) -> list[Job]:
        rows = self._run("find expired pauses",
                         lambda c: _fetch(c, _Q["expired_pauses"], {"limit": limit}), retry=True)
        return decode_rows(rows)

    def wait_for_work(self, timeout: float) -> None:
        """Wakes on a NOTIFY from any process using this schema, or after ``timeout``."""
        self._listener.wait(timeout)

    def watch_job(self, job_id: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Calls ``wake`` on the NOTIFY a change that stops the job sends, from any process.

        Only a watched job's stops are announced (migration 0009), so the job is marked here,
        after the listener is asked for (its LISTEN calls every watcher once it is up, for
        what it missed before) and before the caller reads the job."""
        unwatch = self._stops.watch(job_id, wake)
        try:
            self._run("watch job", lambda c: c.execute(_Q["watch_job"], {"id": job_id}))
        except BaseException:
            unwatch()
            raise
        return unwatch

    def notify_work(self) -> None:
        self._run("notify workers", lambda c: _fetch(
            c, _Q["notify"], {"channel": self._settings.channel}))
        self._listener.wake()

    @property
    def listening(self) -> bool:
        """Whether this store's LISTEN connection is up (diagnostics)."""
        return self._listener.listening
