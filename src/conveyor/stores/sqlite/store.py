"""The embedded SQLite store: one file, WAL, safe across threads and processes on one machine.

Why it is built this way:
- One connection per store object, guarded by a lock. SQLite serialises writers anyway, and a
  single connection keeps transactions simple; other processes use their own connections.
- Every write transaction starts with ``BEGIN IMMEDIATE``, taking the write lock up front, so a
  transaction never fails half-way on a lock upgrade. Busy waits are absorbed by the busy
  timeout and then by our own retry loop, so no caller ever sees "database is locked".
- The database's clock is this machine's clock (every process sharing the file shares it). It
  is injectable so that tests move time instead of sleeping.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from conveyor import payload, transitions
from conveyor.errors import ConfigurationError, JobNotFound, LeaseLost, StoreError
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job, JobProgress
from conveyor.stores.base import (
    JSON_COLUMNS,
    Change,
    ChangeRefused,
    DbNow,
    FirstTime,
    Increment,
    JobQuery,
    Lease,
    NewJob,
    Signals,
    single_job,
)
from conveyor.stores.sqlfiles import load_migrations, load_queries
from conveyor.stores.sqlite.rows import decode_rows, row_to_history, row_to_job

APPLICATION_ID = 0x434F4E56  # "CONV": marks a file as a conveyor database
_PACKAGE = "conveyor.stores.sqlite"
_Q = load_queries(_PACKAGE)
_MIGRATIONS = load_migrations(_PACKAGE)
LATEST_VERSION = _MIGRATIONS[-1][0]
_BUSY_RETRY_SECONDS = 120.0
T = TypeVar("T")
#: A new database file's mode; SQLite gives its -wal and -shm files the same one.
FILE_MODE = 0o600
# A worker claims only jobs whose payloads decode: it must never run one with lost params.
_DECODABLE = ("json_valid(params) AND json_valid(checkpoint) AND json_valid(backoff) "
              "AND typeof(run_at) IN ('integer', 'real')")


class _Refused(Exception):
    def __init__(self, change: Change):
        self.change = change


def parse_sqlite_url(url: str) -> str:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite://:memory:``."""
    if not url.startswith("sqlite://"):
        raise ConfigurationError(f"Not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    rest = url[len("sqlite://"):]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise ConfigurationError(
            f"Malformed SQLite URL {url!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = rest[1:]
    if "?" in path or "#" in path:
        raise ConfigurationError(f"Malformed SQLite URL {url!r}: options are not supported")
    return path


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use an aware UTC datetime")
    return value.timestamp()


def _create_private(path: str) -> None:
    """Create a missing database file readable by its owner only, whatever the umask.

    Jobs' params and results may be private. SQLite would create the file with 0644 (less the
    umask); it creates -wal and -shm with the main file's mode, so those follow. An existing
    file keeps the mode its owner gave it.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"Cannot create SQLite store file {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, FILE_MODE)  # os.open's mode is filtered by the umask
    finally:
        os.close(fd)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteStore:
    """The :class:`~conveyor.stores.base.Store` on one SQLite file."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time,
                 busy_timeout_ms: int = 5000) -> None:
        self.url = url
        self.path = parse_sqlite_url(url)
        self._clock = clock
        self._lock = threading.RLock()
        self._work = threading.Condition(threading.Lock())
        self._work_seq = 0
        self._closed = False
        self._conn = self._connect(busy_timeout_ms)

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
            _create_private(self.path)
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
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
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
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id == APPLICATION_ID:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > LATEST_VERSION:
                raise StoreError(
                    f"The database {self.url} is at schema version {version}, newer than this "
                    f"conveyor knows ({LATEST_VERSION}); upgrade conveyor to use it"
                )
            return
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        if app_id != 0 or tables:
            shown = ", ".join(tables[:5]) or f"application_id {app_id}"
            raise StoreError(
                f"The database {self.url} is not a conveyor database (it holds {shown}); "
                "refusing to touch it"
            )

    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        with self._write() as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            for version, _name, sql in _MIGRATIONS:
                if version <= current:
                    continue
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

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
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise StoreError(f"SQLite store {self.url}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"SQLite store {self.url}: {exc}") from exc

    # -- jobs ------------------------------------------------------------------------------------
    def insert_jobs(self, jobs: Sequence[NewJob], *, actor: str = "") -> list[Job]:
        now = self._clock()
        rows = []
        for new in jobs:
            progress = new.progress or JobProgress()
            run_at = _epoch(new.run_at) if new.run_at else now
            rows.append((
                new.id, new.job_type, new.queue, new.priority, payload.dumps(new.params),
                new.max_attempts, run_at, run_at, new.timeout,
                new.pause_timeout, payload.dumps(new.backoff), now, now,
                progress.current_step, progress.total_steps,
                payload.dumps(progress.last_checkpoint), new.requeued_from,
            ))
        history = [(new.id, now, "create", None, "pending", 0, actor, "") for new in jobs]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO jobs (id, job_type, queue, priority, params, max_attempts, run_at, "
                "line_at, timeout, pause_timeout, backoff, created_at, updated_at, current_step, "
                "total_steps, checkpoint, requeued_from) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(_Q["insert_history"], history)
        self.notify_work()
        return self.get_jobs(new.id for new in jobs)

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
            marks = ",".join("?" * len(chunk))
            for row in self._read(f"SELECT * FROM jobs WHERE id IN ({marks})", chunk):
                found.update((job.id, job) for job in decode_rows([row]))
        return [found[i] for i in ids if i in found]

    def list_jobs(self, query: JobQuery) -> list[Job]:
        where: list[str] = []
        args: list[Any] = []
        for column, values in (("state", [s.value for s in query.states]),
                               ("job_type", list(query.job_types)),
                               ("queue", list(query.queues))):
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(sorted(values))
        if query.before is not None:
            where.append("seq < coalesce((SELECT seq FROM jobs WHERE id = ?), -1)")
            args.append(query.before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        args.append(max(0, query.limit))
        rows = self._read(f"SELECT * FROM jobs {clause} ORDER BY seq DESC LIMIT ?", args)
        return decode_rows(rows)

    def count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        rows = (self._read(_Q["count_by_state"]) if queue is None
                else self._read(_Q["count_by_state_in_queue"], (queue,)))
        counts = dict.fromkeys(JobState, 0)
        for row in rows:
            counts[JobState(row["state"])] = row["n"]
        return counts

    def history(self, job_id: str) -> list[HistoryEntry]:
        rows = self._read(_Q["select_history"], (job_id,))
        if not rows:
            self.get_job(job_id)  # raises JobNotFound for an unknown id
        return [row_to_history(r) for r in rows]

    # -- transitions -----------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> list[Job]:
        job_id = single_job(changes)
        # JSON is encoded (up to 1 MiB each) before the write lock is taken, not while holding it
        encoded = [{column: _encode_json(column, value) for column, value in c.values.items()
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
        if any(c.to_state is JobState.PENDING or c.values.get("resume_requested") is True
               for c in changes):
            self.notify_work()
        return [row_to_job(row, lenient=True) for row in rows]

    def _apply_one(self, conn: sqlite3.Connection, change: Change, now: float,
                   json_values: dict[str, str | None] | None = None) -> sqlite3.Row | None:
        before = conn.execute(_Q["select_state"], (change.job_id,)).fetchone()
        if before is None:
            raise JobNotFound(change.job_id)
        sets: list[str] = ["updated_at = ?"]
        args: list[Any] = [now]
        if change.to_state is not None:
            sets.append("state = ?")
            args.append(change.to_state.value)
        for column, value in change.values.items():
            if json_values is not None and column in json_values:
                sql, arg = f"{column} = ?", json_values[column]
            else:
                sql, arg = _set_clause(column, value, now)
            sets.append(sql)
            args.append(arg)
        states = sorted(s.value for s in change.when)
        where = ["id = ?", f"state IN ({','.join('?' * len(states))})"]
        wargs: list[Any] = [change.job_id, *states]
        if change.lease is not None:
            where.append("lease_token = ? AND attempt = ?")
            wargs.extend((change.lease.token, change.lease.attempt))
        if change.retryable:
            where.append("attempt < max_attempts")
        if change.lease_expired:
            where.append("lease_expires_at < ?")
            wargs.append(now)
        if change.pause_expired:
            where.append("paused_at + pause_timeout < ? AND resume_requested = 0")
            wargs.append(now)
        if change.flag is not None:
            where.append(f"{change.flag} = 1")
        if change.unless_flag is not None:
            where.append(f"{change.unless_flag} = 0")
        row: sqlite3.Row | None = conn.execute(
            f"UPDATE jobs SET {', '.join(sets)} WHERE {' AND '.join(where)} RETURNING *",
            [*args, *wargs],
        ).fetchone()
        if row is None:
            return None
        conn.execute(_Q["insert_history"], (
            change.job_id, now, change.action, before["state"], row["state"], row["attempt"],
            change.actor, change.reason,
        ))
        return row

    # -- workers ---------------------------------------------------------------------------------
    def claim(self, worker_id: str, *, queues: Sequence[str], job_types: Sequence[str],
              limit: int, lease_seconds: float) -> list[Job]:
        if limit <= 0 or not job_types:
            return []
        claimed: list[str] = []
        with self._write() as conn:
            now = self._clock()
            for job_id, source in self._candidates(conn, queues, job_types, limit, now):
                change = transitions.start(job_id, source, worker_id, uuid.uuid4().hex,
                                           lease_seconds)
                if self._apply_one(conn, change, now):
                    claimed.append(job_id)
        return self.get_jobs(claimed)

    def _candidates(self, conn: sqlite3.Connection, queues: Sequence[str],
                    job_types: Sequence[str], limit: int,
                    now: float) -> list[tuple[str, JobState]]:
        types = sorted(set(job_types))
        tmarks = ",".join("?" * len(types))
        scopes: list[tuple[str, list[Any]]] = (
            [("queue = ? AND ", [q]) for q in sorted(set(queues))] if queues else [("", [])]
        )
        resumable: list[tuple[float, str]] = []
        pending: list[tuple[int, float, int, str]] = []  # (-priority, line_at, seq, id)
        for scope, qargs in scopes:
            resumable.extend((r["paused_at"], r["id"]) for r in conn.execute(
                f"SELECT id, paused_at FROM jobs INDEXED BY jobs_resumable WHERE {scope}"
                f"state = 'paused' AND resume_requested = 1 AND job_type IN ({tmarks}) "
                f"AND {_DECODABLE} "
                "ORDER BY paused_at LIMIT ?", [*qargs, *types, limit]))
            index = "jobs_pending_queue" if scope else "jobs_pending_any"
            pending.extend((-r["priority"], r["line_at"], r["seq"], r["id"]) for r in conn.execute(
                f"SELECT id, priority, line_at, seq FROM jobs INDEXED BY {index} WHERE {scope}"
                f"state = 'pending' AND run_at <= ? AND job_type IN ({tmarks}) AND {_DECODABLE} "
                "ORDER BY priority DESC, line_at, seq LIMIT ?", [*qargs, now, *types, limit]))
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
        """Wakes early only for work made in this process; other processes are polled."""
        with self._work:
            seen = self._work_seq
            self._work.wait_for(lambda: self._work_seq != seen, timeout=max(0.0, timeout))

    def notify_work(self) -> None:
        with self._work:
            self._work_seq += 1
            self._work.notify_all()


def _set_clause(column: str, value: Any, now: float) -> tuple[str, Any]:
    """``column = ?`` and its argument, resolving the store-side markers."""
    if isinstance(value, DbNow):
        return f"{column} = ?", now + value.offset
    if isinstance(value, FirstTime):
        return f"{column} = coalesce({column}, ?)", now
    if isinstance(value, Increment):
        return f"{column} = {column} + ?", value.by
    if column in JSON_COLUMNS:
        return f"{column} = ?", _encode_json(column, value)
    if isinstance(value, bool):
        return f"{column} = ?", int(value)
    if isinstance(value, datetime):
        return f"{column} = ?", _epoch(value)
    return f"{column} = ?", value


def _encode_json(column: str, value: Any) -> str | None:
    """How a JSON column is stored: NULL for None, except the NOT NULL checkpoint (``{}``)."""
    if value is None:
        return "{}" if column == "checkpoint" else None
    return payload.dumps(value)


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, so it runs inside our transaction.

    ``executescript`` would commit first, which would break the one-transaction migration.
    """
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not current.strip():
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
