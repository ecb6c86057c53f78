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
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from conveyor import payload
from conveyor.changes import (
    JSON_COLUMNS,
    Change,
    ChangeRefused,
    ClaimStart,
    FreshToken,
    Lease,
    distinct_jobs,
    single_job,
    wakes_workers,
)
from conveyor.errors import (
    ConfigurationError,
    DuplicateJob,
    JobNotFound,
    LeaseLost,
    StoreError,
)
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job, JobProgress
from conveyor.stores.base import JobQuery, NewJob, Signals, inserted_job
from conveyor.stores.sqlfiles import load_migrations, load_queries
from conveyor.stores.sqlite.changes import (
    change_shape,
    compile_batch,
    compile_change,
    compile_claim,
    encode_json,
    marks,
)
from conveyor.stores.sqlite.checkpoint import BACKSTOP_PAGES, Checkpointer
from conveyor.stores.sqlite.config import (
    APPLICATION_ID,
    autocommits,
    create_private,
    is_busy,
    outbox_connection,
    parse_sqlite_url,
    split_sql,
    sqlite_synchronous,
)
from conveyor.stores.sqlite.dash import SQLiteDash, filter_clause
from conveyor.stores.sqlite.dependencies import link, upstream_downstream
from conveyor.stores.sqlite.flow import SQLiteFlow
from conveyor.stores.sqlite.limits import SQLiteLimits
from conveyor.stores.sqlite.logs import SQLiteLogs
from conveyor.stores.sqlite.ops import SQLiteOps
from conveyor.stores.sqlite.rows import (
    decode_rows,
    new_history_rows,
    new_job_rows,
    row_to_history,
    row_to_job,
    ts,
)
from conveyor.stores.sqlite.wake import CommitWatch

_PACKAGE = "conveyor.stores.sqlite"
_Q = load_queries(_PACKAGE)
_MIGRATIONS = load_migrations(_PACKAGE)
LATEST_VERSION = _MIGRATIONS[-1][0]
_BUSY_RETRY_SECONDS = 120.0
#: Most jobs one batched UPDATE writes (its placeholders stay far below SQLite's limit).
_BATCH_ROWS = 200
T = TypeVar("T")


class _Refused(Exception):
    def __init__(self, change: Change):
        self.change = change


class SQLiteStore(SQLiteFlow, SQLiteLogs, SQLiteLimits, SQLiteDash, SQLiteOps):
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
        self._foreign_seq = self._foreign_waited = 0  # commits by other connections
        self._watch: CommitWatch | None = None
        self._watchers: list[Callable[[], None]] = []  # watch_job's: any foreign commit
        self._closed = False
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
    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE``, retried while another process writes."""
        with self._lock:
            self._retry_busy(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            try:
                yield self._conn
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"SQLite store {self.url}: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
            self._retry_busy(lambda: self._conn.execute("COMMIT"))
            if self._checkpoints is not None:
                self._checkpoints.committed()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._retry_busy(lambda: self._conn.execute(sql, args).fetchall())

    def _retry_busy(self, op: Callable[[], T]) -> T:
        deadline = time.monotonic() + _BUSY_RETRY_SECONDS
        delay = 0.005
        while True:
            try:
                return op()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() > deadline:
                    raise StoreError(f"SQLite store {self.url}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"SQLite store {self.url}: {exc}") from exc

    # -- jobs ------------------------------------------------------------------------------------
    def insert_jobs(self, jobs: Sequence[NewJob], *, actor: str = "") -> list[Job]:
        now = self._clock()
        rows = new_job_rows(jobs, now)  # encoded before the write lock
        history = new_history_rows(jobs, now, actor)
        if any(new.unique_key is not None or new.depends_on for new in jobs):
            return self._insert_keyed(jobs, rows, history)
        with self._write() as conn:
            if len(rows) == 1:  # one enqueue: plain statements, no executemany set-up
                conn.execute(_Q["insert_job"], rows[0])
                conn.execute(_Q["insert_history"], history[0])
            else:
                conn.executemany(_Q["insert_job"], rows)
                conn.executemany(_Q["insert_history"], history)
        self.notify_work()
        created = ts(now)
        assert created is not None
        # row[6] is run_at, as stored (the delay already added); most are now
        return [inserted_job(new, created, created if row[6] == now else ts(row[6]) or created)
                for new, row in zip(jobs, rows, strict=True)]

    def _insert_keyed(self, jobs: Sequence[NewJob], rows: list[tuple[Any, ...]],
                      history: list[tuple[Any, ...]]) -> list[Job]:
        """Insert jobs of which some hold unique keys: each row comes back from its INSERT,
        or is the unfinished job already holding the key."""
        with self._write() as conn:
            found = [self._insert_one(conn, new, row, entry)
                     for new, row, entry in zip(jobs, rows, history, strict=True)]
        self.notify_work()
        return [dataclasses.replace(row_to_job(row), existing=True) if existing
                else row_to_job(row) for row, existing in found]

    def _insert_one(self, conn: sqlite3.Connection, new: NewJob, row: tuple[Any, ...],
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

    def insert_jobs_on(self, connection: object, jobs: Sequence[NewJob], *,
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
        where, args = filter_clause(query)
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
        for row in rows:
            counts[JobState(row["state"])] = row["n"]
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

    # -- transitions -----------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> list[Job]:
        job_id = single_job(changes)
        # JSON is encoded (up to 1 MiB each) before the write lock is taken, not while holding it
        encoded = [{column: encode_json(column, value) for column, value in c.values.items()
                    if column in JSON_COLUMNS} for c in changes]
        rows: list[sqlite3.Row] = []
        try:
            with self._write() as conn:
                now = self._clock()
                for change, json_values in zip(changes, encoded, strict=True):
                    # each change's own row (RETURNING, inside the transaction): the job as
                    # that change left it, not as a later change or another worker did
                    row = self._apply_one(conn, change, now, json_values)
                    if row is None:
                        raise _Refused(change)
                    rows.append(row)
        except _Refused as refused:
            raise ChangeRefused(refused.change, self.get_job(job_id)) from None
        if any(wakes_workers(c) for c in changes):
            self.notify_work()
        return [row_to_job(row, lenient=True) for row in rows]

    def apply_many(self, changes: Sequence[Change]) -> list[Job | None]:
        return self.finish_and_claim(changes, "", queues=(), job_types=(), limit=0,
                                     lease_seconds=0.0)[0]

    def _apply_one(self, conn: sqlite3.Connection, change: Change, now: float,
                   json_values: dict[str, str | None] | None = None) -> sqlite3.Row | None:
        if len(change.when) == 1:  # the state it came from, if it moved at all
            source = next(iter(change.when)).value
        else:
            before = conn.execute(_Q["select_state"], (change.job_id,)).fetchone()
            if before is None:
                raise JobNotFound(change.job_id)
            source = before["state"]
        statement, args = compile_change(_Q["apply_change"], change, now, json_values)
        row: sqlite3.Row | None = conn.execute(statement, args).fetchone()
        if row is None:
            return None  # refused (or no such job: the caller's read back tells which)
        conn.execute(_Q["insert_history"], (
            change.job_id, now, change.action, source, row["state"], row["attempt"],
            change.actor, change.reason,
        ))
        return row

    def _apply_batch(self, conn: sqlite3.Connection, changes: Sequence[Change], now: float,
                     encoded: Sequence[dict[str, str | None]],
                     history: list[tuple[Any, ...]]) -> list[sqlite3.Row | None]:
        """Each change's row (None: refused), changes of one shape written by one statement
        (a worker's completions mostly share one): each row still fenced by its own guards.
        The history rows of the batched ones, in the order of ``changes``, are added to
        ``history`` for the caller to write in this transaction."""
        shapes: dict[tuple[str, str], list[int]] = {}
        args: list[list[Any]] = []
        for n, (change, json_values) in enumerate(zip(changes, encoded, strict=True)):
            shape, row_args = change_shape(change, now, json_values)
            args.append(row_args)
            if len(change.when) == 1:  # a known source state, for its history row
                shapes.setdefault(shape, []).append(n)
        done: list[sqlite3.Row | None] = [None] * len(changes)
        alone = set(range(len(changes))) - {n for group in shapes.values() for n in group}
        for shape, group in shapes.items():
            if len(group) == 1:
                alone.add(group[0])
                continue
            for start in range(0, len(group), _BATCH_ROWS):
                part = group[start:start + _BATCH_ROWS]
                statement, flat = compile_batch(_Q["apply_change_batch"], shape,
                                                [args[n] for n in part])
                landed = {row["id"]: row for row in conn.execute(statement, flat).fetchall()}
                for n in part:
                    done[n] = landed.get(changes[n].job_id)
        for n in sorted(alone):
            done[n] = self._apply_one(conn, changes[n], now, encoded[n])
        history.extend(
            (change.job_id, now, change.action, next(iter(change.when)).value, row["state"],
             row["attempt"], change.actor, change.reason)
            for n, (change, row) in enumerate(zip(changes, done, strict=True))
            if row is not None and n not in alone)
        return done

    # -- workers ---------------------------------------------------------------------------------
    def claim(self, worker_id: str, *, queues: Sequence[str], job_types: Sequence[str],
              limit: int, lease_seconds: float) -> list[Job]:
        return self.finish_and_claim((), worker_id, queues=queues, job_types=job_types,
                                     limit=limit, lease_seconds=lease_seconds)[1]

    def finish_and_claim(self, finish: Sequence[Change], worker_id: str, *,
                         queues: Sequence[str], job_types: Sequence[str], limit: int,
                         lease_seconds: float) -> tuple[list[Job | None], list[Job]]:
        distinct_jobs(finish)
        if not finish and (limit <= 0 or not job_types):
            return [], []
        encoded = [{column: encode_json(column, value) for column, value in c.values.items()
                    if column in JSON_COLUMNS} for c in finish]
        history: list[tuple[Any, ...]] = []  # the batch's and the claim's: one statement
        with self._write() as conn:
            now = self._clock()
            done = self._apply_batch(conn, finish, now, encoded, history)
            rows = (self._claim_in(conn, ClaimStart(worker_id, lease_seconds), queues,
                                   job_types, limit, now, history)
                    if limit > 0 and job_types else [])
            if history:
                conn.executemany(_Q["insert_history"], history)
        if any(row is not None and wakes_workers(c)
               for c, row in zip(finish, done, strict=True)):
            self.notify_work()
        return ([None if row is None else row_to_job(row, lenient=True) for row in done],
                decode_rows(rows))

    def _claim_in(self, conn: sqlite3.Connection, start: ClaimStart, queues: Sequence[str],
                  job_types: Sequence[str], limit: int, now: float,
                  history: list[tuple[Any, ...]]) -> list[sqlite3.Row]:
        """The claim's writes, inside the caller's write transaction (its history rows added to
        ``history``, for the caller to write in it); the rows in claim order."""
        rows: list[sqlite3.Row] = []
        rules = self._claim_rules(conn, queues, job_types)  # limits: see limits.py
        picked = (self._limited_candidates(conn, rules, queues, job_types, limit, now) if rules
                  else self._candidates(conn, queues, job_types, limit, now))
        for source in (JobState.PAUSED, JobState.PENDING):
            ids = [job_id for job_id, from_state in picked if from_state is source]
            if not ids:
                continue
            # one UPDATE for all of them, each row under a fresh token (RETURNING *: the
            # claimed rows themselves, no read back); the write lock keeps them as picked
            change = start.change(ids[0], source, FreshToken())
            statement, args = compile_claim(_Q["apply_change"], change, ids, now)
            for row in conn.execute(statement, args):
                rows.append(row)
                history.append((row["id"], now, change.action, source.value, row["state"],
                                row["attempt"], change.actor, change.reason))
        place = {job_id: n for n, (job_id, _) in enumerate(picked)}
        rows.sort(key=lambda row: place[row["id"]])
        return rows

    def _candidates(self, conn: sqlite3.Connection, queues: Sequence[str],
                    job_types: Sequence[str], limit: int,
                    now: float) -> list[tuple[str, JobState]]:
        types = sorted(set(job_types))
        in_types = marks(len(types))
        scopes: list[tuple[str, list[Any]]] = (
            [("_in_queue", [q]) for q in sorted(set(queues))] if queues else [("", [])]
        )
        resumable: list[tuple[float, str]] = []
        pending: list[tuple[int, float, int, str]] = []  # (-priority, line_at, seq, id)
        for scope, qargs in scopes:
            resumable.extend((r["paused_at"], r["id"]) for r in conn.execute(
                _Q[f"claim_resumable{scope}"].format(job_types=in_types),
                [*qargs, *types, limit]))
            pending.extend((-r["priority"], r["line_at"], r["seq"], r["id"]) for r in conn.execute(
                _Q[f"claim_pending{scope}"].format(job_types=in_types),
                [*qargs, now, *types, limit]))
        picked = [(job_id, JobState.PAUSED) for _, job_id in sorted(resumable)]
        picked += [(row[3], JobState.PENDING) for row in sorted(pending)]
        return picked[:limit]

    def heartbeat(self, leases: Sequence[Lease], lease_seconds: float) -> dict[str, Signals]:
        held: dict[str, Signals] = {}
        if not leases:
            return held
        with self._write() as conn:
            now = self._clock()
            for lease in leases:
                row = conn.execute(_Q["heartbeat"], (now + lease_seconds, now, lease.job_id,
                                                     lease.token, lease.attempt)).fetchone()
                if row is not None:
                    held[lease.token] = Signals(bool(row[0]), bool(row[1]))
        return held

    def save_progress(self, lease: Lease, progress: JobProgress, *,
                      checkpoint: bool = False) -> Signals:
        encoded = payload.dumps(progress.last_checkpoint) if checkpoint else None
        with self._write() as conn:  # encoded first: the write lock is held for SQL only
            now = self._clock()
            fence = (lease.job_id, lease.token, lease.attempt)
            if checkpoint:
                row = conn.execute(_Q["save_checkpoint"], (
                    progress.current_step, progress.total_steps, encoded, now,
                    *fence)).fetchone()
            else:
                row = conn.execute(_Q["save_progress"], (
                    progress.current_step, progress.total_steps, now, *fence)).fetchone()
        if row is None:
            raise LeaseLost(f"lease on job {lease.job_id} is no longer held")
        return Signals(bool(row[0]), bool(row[1]))

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
            self._work.wait_for(
                lambda: self._work_seq != seen or self._foreign_seq != foreign,
                timeout=max(0.0, timeout))
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
            self._watch = CommitWatch(self.path, self._data_version, self._foreign_commit)
        self._foreign_commit()

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

        def unwatch() -> None:
            with self._work:
                if wake in self._watchers:
                    self._watchers.remove(wake)

        return unwatch

    def notify_work(self) -> None:
        with self._work:
            self._work_seq += 1
            self._work.notify_all()

