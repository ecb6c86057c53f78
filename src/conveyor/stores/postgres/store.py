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
import select
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from conveyor.changes import (
    CLAIM_ACTIONS,
    Change,
    ChangeRefused,
    ClaimStart,
    Lease,
    distinct_jobs,
    shape_key,
    single_job,
    wakes_workers,
)
from conveyor.errors import ConfigurationError, JobNotFound, LeaseLost, StoreError
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job, JobProgress
from conveyor.stores.base import JobQuery, NewJob, Signals, inserted_job
from conveyor.stores.postgres.changes import (
    batch_of_shape,
    compile_change,
    compile_claim,
    json_value,
)
from conveyor.stores.postgres.config import DEFAULT_SCHEMA, describe, parse_url
from conveyor.stores.postgres.dash import PostgresDash
from conveyor.stores.postgres.dependencies import link_all, upstream_downstream
from conveyor.stores.postgres.flow import PostgresFlow
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
from conveyor.stores.postgres.statements import (
    COPY_HISTORY_TYPES,
    COPY_JOB_TYPES,
    apply_params,
    brief,
    check_caller_connection,
    copies,
    copy_rows,
    insert_params,
    inserted_jobs,
    list_statement,
    one_job_params,
)
from conveyor.stores.sqlfiles import load_migrations, load_queries

_PACKAGE = "conveyor.stores.postgres"
_Q = load_queries(_PACKAGE)
_MIGRATIONS = load_migrations(_PACKAGE)
LATEST_VERSION = _MIGRATIONS[-1][0]
_INSERT_BRIEF = brief(_Q["insert_jobs"])

Conn = psycopg.Connection[TupleRow]
Row = dict[str, Any]
T = TypeVar("T")


class _Refused(Exception):
    """A change matched no row: unwinds the transaction, then becomes ChangeRefused."""

    def __init__(self, change: Change) -> None:
        super().__init__(change.action)
        self.change = change


def _has_input(conn: Conn) -> bool:
    """Whether the server sent something to a connection nobody is using (a FATAL, or EOF)."""
    fd = conn.fileno()
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # pragma: no cover - Windows
    return bool(readable)


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


def _fetch(conn: Conn, query: str | sql.SQL | sql.Composed,
           params: dict[str, Any] | None = None, *, binary: bool = False) -> list[Row]:
    """Run one statement and return its rows as dicts (none for a statement without rows);
    ``binary``: results in binary format (times and numbers decode several times faster)."""
    statement = sql.SQL(query) if isinstance(query, str) else query
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(statement, params, binary=binary)
        return cur.fetchall() if cur.description is not None else []


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


class PostgresStore(PostgresFlow, PostgresLogs, PostgresLimits, PostgresDash, PostgresOps):
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
        except PoolClosed as exc:
            raise StoreError(f"PostgreSQL store {self._safe_url} is closed") from exc
        except PoolTimeout as exc:
            raise StoreError(
                f"PostgreSQL store {self._safe_url}: {what} failed: no connection within "
                f"{self._timeout:g}s (is the server reachable?)") from exc
        except psycopg.errors.UndefinedTable as exc:
            raise self._error(
                f"PostgreSQL store {self._safe_url}: schema {self.schema!r} is not set up "
                f"({self._describe(exc)}); run migrate() first", exc) from None
        except psycopg.Error as exc:
            raise self._error(
                f"PostgreSQL store {self._safe_url}: {what} failed: {self._describe(exc)}",
                exc) from None

    def _checkout(self) -> Conn:
        for _ in range(self._max_size):
            conn = self._pool.getconn()
            if _usable(conn):
                return conn
            self._pool.putconn(conn)  # closed by the server: the pool drops it, opens another
        return self._pool.getconn()

    def _run(self, what: str, work: Callable[[Conn], T], *, transaction: bool = False,
             retry: bool = False) -> T:
        """Run ``work`` on a pooled connection, in a transaction if asked.

        ``retry`` marks ``work`` as a read, safe to run again on a fresh connection if the
        first one broke. A transaction is retried only if it broke at BEGIN.
        """
        attempts = 3 if retry else 2 if transaction else 1
        for attempt in range(1, attempts + 1):
            with self._errors(what):
                conn = self._checkout()
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
                    self._pool.putconn(conn)
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
        self._listener.close()
        self._stops.close()
        self._pool.close()

    def now(self) -> datetime:
        rows = self._run("read the clock", lambda c: _fetch(c, _Q["now"]), retry=True)
        now = utc(rows[0]["now"])
        assert now is not None
        return now

    # -- jobs ------------------------------------------------------------------------------------
    def insert_jobs(self, jobs: Sequence[NewJob], *, actor: str = "") -> list[Job]:
        if not jobs:
            return []
        if not any(new.unique_key is not None or new.depends_on for new in jobs):
            # one statement in autocommit: jobs, history rows and the NOTIFY in one round trip
            channel = self._settings.channel
            if len(jobs) == 1:
                one = one_job_params(jobs[0], actor, channel)
                rows = self._run("insert a job",
                                 lambda c: _fetch(c, _Q["insert_job"], one, binary=True))
            elif copies(jobs):
                created = self._run("insert jobs", lambda c: self._copy(c, jobs, actor),
                                    transaction=True)
                self._listener.wake()
                return [inserted_job(new, created, created) for new in jobs]
            else:
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

    def _copy(self, conn: Conn, jobs: Sequence[NewJob], actor: str) -> datetime:
        """COPY a batch of plain jobs and their history rows (in the caller's transaction),
        then NOTIFY once; returns the clock their rows took. psycopg writes COPY rows in C,
        where ``insert_jobs``'s arrays were dumped element by element in Python, and the
        server stores them without unnesting arrays first."""
        job_rows, history_rows = copy_rows(jobs, actor)
        with conn.cursor() as cur:
            for query, types, rows in ((_Q["copy_jobs"], COPY_JOB_TYPES, job_rows),
                                       (_Q["copy_history"], COPY_HISTORY_TYPES, history_rows)):
                with cur.copy(sql.SQL(query)) as copy:
                    copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
        found = _fetch(conn, _Q["copied"], {"channel": self._settings.channel})
        created = utc(found[0]["created_at"])
        assert created is not None
        return created

    def _insert_linked(self, conn: Conn, jobs: Sequence[NewJob],
                       params: dict[str, Any]) -> list[Job]:
        """Insert jobs with unique keys or dependencies, in the caller's transaction."""
        if any(new.unique_key is not None for new in jobs):
            found = self._insert_keyed(conn, jobs, params)
        else:
            found = [row_to_job(r) for r in _fetch(conn, _Q["insert_jobs"], params)]
        return link_all(conn, jobs, found) if any(new.depends_on for new in jobs) else found

    def _insert_params(self, jobs: Sequence[NewJob], actor: str) -> dict[str, Any]:
        """The ``insert_jobs`` statement's arrays (shared with the async store)."""
        return insert_params(jobs, actor, self._settings.channel)

    def insert_jobs_on(self, connection: object, jobs: Sequence[NewJob], *,
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
                         lambda c: _fetch(c, _Q["count_by_state"], {"queue": queue}),
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

    # -- transitions -----------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> list[Job]:
        job_id = single_job(changes)
        compiled = [compile_change(_Q["apply_change"], change) for change in changes]
        wakes = any(wakes_workers(c) for c in changes)

        def work(conn: Conn) -> list[Row]:
            moved: list[Row] = []
            for change, (statement, params) in zip(changes, compiled, strict=True):
                # one transaction, one time: the later changes take the first one's moment
                moment = moved[0].get("moved_at") if moved else None
                rows = _fetch(conn, statement, apply_params(params, moment, self._settings))
                if not rows:
                    raise _Refused(change)
                moved.append(rows[0])  # the job as this change left it
            if wakes:
                conn.execute(_Q["notify"], {"channel": self._settings.channel})
            return moved

        what = "apply " + ", ".join(c.action for c in changes)
        try:
            # One change that wakes nobody is a single atomic statement: no transaction needed.
            rows = self._run(what, work, transaction=len(changes) > 1 or wakes)
        except _Refused as refused:
            raise ChangeRefused(refused.change, self.get_job(job_id)) from None
        if wakes:
            self._listener.wake()
        return [row_to_job(row) for row in rows]

    def apply_many(self, changes: Sequence[Change]) -> list[Job | None]:
        return self.finish_and_claim(changes, "", queues=(), job_types=(), limit=0,
                                     lease_seconds=0.0)[0]

    def finish_and_claim(self, finish: Sequence[Change], worker_id: str, *,
                         queues: Sequence[str], job_types: Sequence[str], limit: int,
                         lease_seconds: float) -> tuple[list[Job | None], list[Job]]:
        distinct_jobs(finish)
        claiming = limit > 0 and bool(job_types)
        if not finish:
            return [], self.claim(worker_id, queues=queues, job_types=job_types, limit=limit,
                                  lease_seconds=lease_seconds) if claiming else []
        statements = self._finish_statements(finish)
        claim = (self._claim_statement(worker_id, queues, job_types, limit, lease_seconds)
                 if claiming else None)
        wakes = any(wakes_workers(c) for c in finish)

        def work(conn: Conn) -> tuple[dict[int, Row], list[Row]]:
            try:
                return self._finish_in_pipeline(conn, statements, claim, wakes)
            except BaseException:
                if not conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()  # an explicit transaction stopped before COMMIT
                raise

        # the work makes its own transaction; never sent twice, as any transaction whose
        # outcome is unknown once a part of it was sent
        moved, claimed = self._run(f"apply {len(finish)} changes", work)
        if claim is not None and not claimed:  # the gate: limits apply (see limits.py)
            claimed = self._claim_limited(worker_id, queues, job_types, limit, lease_seconds)
        if wakes and moved:
            self._listener.wake()
        return ([row_to_job(moved[n]) if n in moved else None for n in range(len(finish))],
                decode_rows(claimed))

    def _finish_in_pipeline(self, conn: Conn,
                            statements: list[tuple[list[int], str, dict[str, Any]]],
                            claim: tuple[str, dict[str, Any]] | None, wakes: bool
                            ) -> tuple[dict[int, Row], list[Row]]:
        """One transaction sent as one pipeline: the statements and the claim, one round trip
        for all of them and the commit's flush. Without a BEGIN, the statements of a pipeline
        are one transaction (PostgreSQL's implicit one, committed at the pipeline's sync, rolled
        back whole if any fails); a NOTIFY that wakes workers is sent only if a change landed,
        so then the transaction is explicit and commits after it."""
        cursors: list[tuple[list[int], psycopg.Cursor[Row]]] = []
        with conn.pipeline():
            if wakes:
                conn.execute("BEGIN")
            for members, statement, params in statements:
                cursor = conn.cursor(row_factory=dict_row)
                cursor.execute(statement, apply_params(params, None, self._settings),
                               binary=True)
                cursors.append((members, cursor))
            claimer = conn.cursor(row_factory=dict_row)
            if claim is not None:
                claimer.execute(*claim, binary=True)
        moved: dict[int, Row] = {}
        for members, cursor in cursors:
            for row in cursor.fetchall():  # no row for a job: refused, nothing written
                moved[members[row["batch_n"] - 1] if "batch_n" in row else members[0]] = row
            cursor.close()
        claimed = claimer.fetchall() if claim is not None else []
        claimer.close()
        if wakes:
            if moved:
                conn.execute(_Q["notify"], {"channel": self._settings.channel})
            conn.execute("COMMIT")
        return moved, claimed

    def _finish_statements(self, changes: Sequence[Change]
                           ) -> list[tuple[list[int], str, dict[str, Any]]]:
        """Same-shaped changes (a batch of completions) in one statement each shape; any
        others one statement each, in job id order (one lock order for every batch)."""
        groups: dict[Hashable, list[int]] = {}
        for n, change in enumerate(changes):
            groups.setdefault(shape_key(change), []).append(n)
        statements: list[tuple[list[int], str, dict[str, Any]]] = []
        for key, members in groups.items():
            batch = (batch_of_shape(_Q["apply_change_batch"], key,
                                    [changes[n] for n in members])
                     if len(members) > 1 else None)
            if batch is not None:
                statements.append((members, *batch))
            else:
                statements += [([n], *compile_change(_Q["apply_change"], changes[n]))
                               for n in sorted(members, key=lambda n: changes[n].job_id)]
        return statements

    # -- workers ---------------------------------------------------------------------------------
    def claim(self, worker_id: str, *, queues: Sequence[str], job_types: Sequence[str],
              limit: int, lease_seconds: float) -> list[Job]:
        if limit <= 0 or not job_types:
            return []
        statement, params = self._claim_statement(worker_id, queues, job_types, limit,
                                                  lease_seconds)
        rows = self._run("claim jobs", lambda c: _fetch(c, statement, params, binary=True))
        if not rows:  # the gate: limits apply (see limits.py)
            rows = self._claim_limited(worker_id, queues, job_types, limit, lease_seconds)
        return decode_rows(rows)

    def _claim_statement(self, worker_id: str, queues: Sequence[str], job_types: Sequence[str],
                         limit: int, lease_seconds: float,
                         query: str | None = None) -> tuple[str, dict[str, Any]]:
        statement, params = compile_claim(query or _Q["claim"],
                                          ClaimStart(worker_id, lease_seconds), bool(queues))
        params.update({"job_types": sorted(set(job_types)), "queues": sorted(set(queues)),
                       "limit": limit, "worker_id": worker_id,
                       "start_action": CLAIM_ACTIONS[JobState.PENDING],
                       "resume_action": CLAIM_ACTIONS[JobState.PAUSED]})
        return statement, params

    def heartbeat(self, leases: Sequence[Lease], lease_seconds: float) -> dict[str, Signals]:
        if not leases:
            return {}
        ordered = sorted(leases, key=lambda lease: lease.job_id)  # one lock order for all
        params = {"ids": [lease.job_id for lease in ordered],
                  "tokens": [lease.token for lease in ordered],
                  "attempts": [lease.attempt for lease in ordered],
                  "lease_seconds": float(lease_seconds)}
        # lease-fenced and idempotent: safe to repeat on a fresh connection
        rows = self._run("heartbeat", lambda c: _fetch(c, _Q["heartbeat"], params), retry=True)
        return {r["lease_token"]: Signals(r["pause_requested"], r["cancel_requested"],
                                          r["renewed"])
                for r in rows}

    def save_progress(self, lease: Lease, progress: JobProgress, *,
                      checkpoint: bool = False) -> Signals:
        params: dict[str, Any] = {
            "id": lease.job_id, "token": lease.token, "attempt": lease.attempt,
            "current_step": progress.current_step, "total_steps": progress.total_steps,
        }
        query = _Q["save_progress"]
        if checkpoint:
            query = _Q["save_checkpoint"]
            params["checkpoint"] = json_value("checkpoint", progress.last_checkpoint)
        rows = self._run("save progress", lambda c: _fetch(c, query, params), retry=True)
        if not rows:
            raise LeaseLost(f"lease on job {lease.job_id} is no longer held")
        return Signals(rows[0]["pause_requested"], rows[0]["cancel_requested"])

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
        """Calls ``wake`` on the NOTIFY a change that stops the job sends, from any process."""
        return self._stops.watch(job_id, wake)

    def notify_work(self) -> None:
        self._run("notify workers", lambda c: _fetch(
            c, _Q["notify"], {"channel": self._settings.channel}))
        self._listener.wake()

    @property
    def listening(self) -> bool:
        """Whether this store's LISTEN connection is up (diagnostics)."""
        return self._listener.listening
