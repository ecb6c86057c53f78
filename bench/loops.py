"""Hand-written loops: the physical limit that conveyor's figures are compared against.

Each loop does the least work the same job needs on the same store: a one-table queue with the
columns a claim needs, no history, no JSON, no leases. Whatever conveyor does beyond that is its
own overhead, so conveyor's figure is shown as a ratio of the loop's, measured in the same run.

- SQLite claim+complete: ``BEGIN IMMEDIATE``; pick the oldest pending row and mark it running;
  ``COMMIT``; then mark it done in a second transaction (conveyor also claims and completes in
  separate transactions). WAL, with the ``synchronous`` level given.
- PostgreSQL claim+complete: ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED
  LIMIT 1)`` in one transaction, completion in another, on several connections at once.
- Enqueue: one ``INSERT`` per transaction.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS q (
    id INTEGER PRIMARY KEY, state TEXT NOT NULL, params TEXT NOT NULL, run_at REAL NOT NULL,
    worker TEXT, finished_at REAL);
CREATE INDEX IF NOT EXISTS q_pending ON q (run_at) WHERE state = 'pending';
"""
SQLITE_CLAIM = ("UPDATE q SET state = 'running', worker = ? WHERE id = (SELECT id FROM q "
                "WHERE state = 'pending' ORDER BY run_at LIMIT 1) RETURNING id")
SQLITE_DONE = "UPDATE q SET state = 'done', finished_at = ? WHERE id = ? AND worker = ?"
SQLITE_INSERT = "INSERT INTO q (state, params, run_at) VALUES ('pending', '{}', ?)"

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS q (
    id bigserial PRIMARY KEY, state text NOT NULL, params jsonb NOT NULL,
    run_at timestamptz NOT NULL DEFAULT now(), worker text, finished_at timestamptz);
CREATE INDEX IF NOT EXISTS q_pending ON q (run_at) WHERE state = 'pending';
"""
PG_CLAIM = ("UPDATE q SET state = 'running', worker = %s WHERE id = (SELECT id FROM q "
            "WHERE state = 'pending' ORDER BY run_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
            "RETURNING id")
PG_DONE = "UPDATE q SET state = 'done', finished_at = now() WHERE id = %s AND worker = %s"
PG_INSERT = "INSERT INTO q (state, params) VALUES ('pending', '{}')"


# -- SQLite ---------------------------------------------------------------------------------------

def _sqlite_conn(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _sqlite_fill(path: Path, jobs: int) -> None:
    conn = _sqlite_conn(path, "NORMAL")
    conn.executescript(SQLITE_SCHEMA)
    with conn:
        conn.execute("BEGIN")
        conn.executemany(SQLITE_INSERT, [(time.time(),) for _ in range(jobs)])
    conn.close()


def _sqlite_drain(path: str, synchronous: str, name: str) -> int:
    """Claim and complete until the queue is empty; returns how many this process did."""
    conn = _sqlite_conn(Path(path), synchronous)
    done = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(SQLITE_CLAIM, (name,)).fetchone()
        conn.execute("COMMIT")
        if row is None:
            conn.close()
            return done
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(SQLITE_DONE, (time.time(), row[0], name))
        conn.execute("COMMIT")
        done += 1


def sqlite_claim_complete(folder: Path, jobs: int, processes: int, synchronous: str) -> float:
    """jobs/s of ``processes`` processes, each one connection, draining ``jobs`` rows."""
    path = folder / f"loop-claim-{processes}-{synchronous}.db"
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)  # a fresh table each time, as in a run of its own
    _sqlite_fill(path, jobs)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pool.apply(time.time)  # the pool's processes are up before the clock starts
        started = time.perf_counter()
        results = [pool.apply_async(_sqlite_drain, (str(path), synchronous, f"w{i}"))
                   for i in range(processes)]
        total = sum(r.get(600) for r in results)
        elapsed = time.perf_counter() - started
    assert total == jobs, (total, jobs)
    return jobs / elapsed


class SQLiteInserts:
    """The loop's one ``INSERT`` per transaction, a chunk at a time (:func:`interleaved`)."""

    def __init__(self, folder: Path, synchronous: str) -> None:
        self.conn = _sqlite_conn(folder / f"loop-enqueue-{synchronous}.db", synchronous)
        self.conn.executescript(SQLITE_SCHEMA)

    def step(self, count: int) -> float:
        conn = self.conn
        started = time.perf_counter()
        for _ in range(count):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(SQLITE_INSERT, (time.time(),))
            conn.execute("COMMIT")
        return time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


def sqlite_enqueue(folder: Path, jobs: int, synchronous: str) -> float:
    """jobs/s of one INSERT per transaction."""
    loop = SQLiteInserts(folder, synchronous)
    try:
        return jobs / loop.step(jobs)
    finally:
        loop.close()


# -- PostgreSQL -----------------------------------------------------------------------------------

def _pg_connect(url: str, schema: str) -> Any:
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    conn.execute(f'SET search_path TO "{schema}"')
    return conn


def pg_claim_complete(url: str, schema: str, jobs: int, connections: int) -> float:
    """jobs/s of ``connections`` connections (one thread each) draining ``jobs`` rows."""
    setup = _pg_connect(url, schema)
    setup.execute(PG_SCHEMA)
    with setup.cursor() as cur:
        cur.execute("INSERT INTO q (state, params) SELECT 'pending', '{}' "
                    "FROM generate_series(1, %s)", (jobs,))
    conns = [_pg_connect(url, schema) for _ in range(connections)]
    counts = [0] * connections
    start = threading.Barrier(connections + 1)

    def drain(i: int) -> None:
        conn = conns[i]
        start.wait()
        while True:
            with conn.transaction():
                row = conn.execute(PG_CLAIM, (f"w{i}",)).fetchone()
            if row is None:
                return
            with conn.transaction():
                conn.execute(PG_DONE, (row[0], f"w{i}"))
            counts[i] += 1

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for conn in [*conns, setup]:
        conn.close()
    assert sum(counts) == jobs, (counts, jobs)
    return jobs / elapsed


class PgInserts:
    """The loop's one ``INSERT`` per transaction (autocommit: one round trip each), a chunk at
    a time (:func:`interleaved`)."""

    def __init__(self, url: str, schema: str) -> None:
        self.conn = _pg_connect(url, schema)
        self.conn.execute(PG_SCHEMA)

    def step(self, count: int) -> float:
        conn = self.conn
        started = time.perf_counter()
        for _ in range(count):
            conn.execute(PG_INSERT)
        return time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


# -- conveyor's own statements, without conveyor's Python -----------------------------------------

def _new_jobs(count: int) -> list[Any]:
    """No-op jobs as conveyor's enqueue makes them, with its time-ordered (v7) ids: random
    (v4) ids would land all over the id indexes and make the statements look dearer than
    conveyor's own."""
    from conveyor.ids import new_job_ids
    from conveyor.stores.base import NewJob

    return [NewJob(id=job_id, job_type="bench.noop", params={}, params_json="{}",
                   backoff_json="{}") for job_id in new_job_ids(count)]


class SQLiteConveyorInserts:
    """conveyor's one-job enqueue statements run by hand on its schema, a chunk at a time
    (:func:`interleaved`), each chunk's rows prepared before its clock starts: the floor that
    the schema and SQLite set, before any of conveyor's Python. The statements are the
    store's own for a job without unique key or dependencies: one transaction per job of
    ``insert_job_plain`` and its ``create`` history row (``insert_created_last``), in the
    store's own write transaction (which tells its checkpointer of each commit, as
    ``enqueue()``'s do)."""

    def __init__(self, url: str) -> None:
        from conveyor.stores.sqlite.store import SQLiteStore

        self.store = SQLiteStore(url)
        self.store.migrate()

    def step(self, count: int) -> float:
        from conveyor.stores.sqlite.inserts import plain_job_rows
        from conveyor.stores.sqlite.store import _Q

        rows = plain_job_rows(_new_jobs(count), time.time())
        assert rows is not None
        conn, checkpoints = self.store._conn, self.store._checkpoints
        assert checkpoints is not None
        insert_job, insert_created = _Q["insert_job_plain"], _Q["insert_created_last"]
        started = time.perf_counter()
        for row in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(insert_job, row)
            conn.execute(insert_created, (row[0], row[-1], "api"))
            conn.execute("COMMIT")
            checkpoints.committed()
        return time.perf_counter() - started

    def close(self) -> None:
        self.store.close()


def sqlite_conveyor_bulk_sql(url: str, bulk: int) -> float:
    """jobs/s of conveyor's batch statements for ``bulk`` jobs in one transaction, rows
    prepared beforehand: ``insert_job_shared`` in multi-row statements as the store runs it
    (``plain_batch``, ``insert_shared``), their history rows by one ``insert_created_after``."""
    from conveyor.stores.sqlite.inserts import insert_shared, plain_batch
    from conveyor.stores.sqlite.store import _Q, SQLiteStore

    store = SQLiteStore(url)
    store.migrate()
    conn = store._conn
    now = time.time()
    batch = plain_batch(_new_jobs(bulk), now)
    assert batch is not None
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    (last,) = conn.execute(_Q["last_seq"]).fetchone()
    insert_shared(conn, _Q["insert_job_shared"], batch, now)
    conn.execute(_Q["insert_created_after"], (now, "api", last or 0))
    conn.execute("COMMIT")
    many = bulk / (time.perf_counter() - started)
    store.close()
    return many


def sqlite_conveyor_worker_sql(url: str, jobs: int, per_transaction: int) -> float:
    """jobs/s of a SQLite worker's statements alone, one process: in each transaction the
    completion of the jobs the previous one claimed (``per_transaction`` at a time), the
    claim (its candidates and their start: ``claim_pending``, or for one job ``claim_one``'s
    three statements, with the completion ``complete_one``'s, as the store runs them), and the
    history rows of both, as ``SQLiteStore.finish_and_claim`` writes them, with none of the
    worker around them (no threads, no executor, no ``Job`` objects, no events).

    The floor that the schema and SQLite set for a worker, beside the loop's: at one job per
    transaction it is what a one-slot worker could reach with no Python cost at all.
    """
    from bench.procs import NOOP, build_app
    from conveyor import EnqueueRequest, transitions
    from conveyor.changes import Lease
    from conveyor.stores.sqlite.changes import change_shape, compile_batch
    from conveyor.stores.sqlite.queries import QUERIES
    from conveyor.stores.sqlite.store import SQLiteStore
    from conveyor.stores.sqlite.worker_path import (
        claim_one,
        complete_one,
        one_job_plan,
        pending_plan,
    )

    app = build_app(url, None)
    app.enqueue_many([EnqueueRequest(NOOP) for _ in range(jobs)])
    store = app.store
    assert isinstance(store, SQLiteStore)
    # The completion's statement and arguments come from conveyor's compiler, run once on a
    # placeholder lease; each job's id, token and attempt, and the clock, go in their places.
    placeholder = Lease("placeholder-id", "placeholder-token", 987_654)
    clock = time.time()
    shape, template = change_shape(transitions.complete(placeholder, None, "w"), clock, {})
    at_id, at_token = template.index(placeholder.job_id), template.index(placeholder.token)
    at_attempt = template.index(placeholder.attempt)
    at_now = [n for n, value in enumerate(template) if value == clock]

    def completion(prev: list[tuple[str, str, int]], now: float) -> list[Any]:
        rows = []
        for job_id, token, attempt in prev:
            row = list(template)
            for n in at_now:
                row[n] = now
            row[at_id], row[at_token], row[at_attempt] = job_id, token, attempt
            rows.append(row)
        if len(rows) == 1:  # the store's one change alone: without RETURNING
            landed = complete_one(conn, shape, rows[0], prev[0][0])
            return [] if landed is None else [landed]
        statement, args = compile_batch(QUERIES["apply_change_batch_landed"], shape, rows)
        return conn.execute(statement, args).fetchall()

    # the store's own claims: of one job (three statements), of several (one)
    one = one_job_plan(QUERIES["claim_seq"], QUERIES["pending_candidates"], "w", 30.0, 1,
                       False)
    claim = pending_plan(QUERIES["claim_pending"], QUERIES["pending_candidates"], "w", 30.0, 1,
                         False)

    def claimed(now: float) -> list[Any]:
        if per_transaction == 1:
            row = claim_one(conn, one, [now, NOOP, NOOP], now)
            return [] if row is None else [row]
        return conn.execute(claim.statement, claim.arguments(
            [now, NOOP, NOOP, per_transaction], now)).fetchall()

    history = QUERIES["insert_history_seq"]
    prev: list[tuple[str, str, int]] = []
    done = 0
    started = time.perf_counter()
    while True:
        now = time.time()
        rows: list[tuple[Any, ...]] = []
        # the store's own write transaction: BEGIN IMMEDIATE, COMMIT, and the checkpointer
        # told of the commit, as the worker's transactions are
        with store._write() as conn:
            if prev:
                for seq, job_id, state, attempt, _ in completion(prev, now):
                    rows.append((seq, job_id, now, "complete", "running", state, attempt, "w",
                                 ""))
                done += len(prev)
            prev = []
            for job in claimed(now):
                prev.append((job["id"], job["lease_token"], job["attempt"]))
                rows.append((job["seq"], job["id"], now, "start", "pending", "running",
                             job["attempt"], "w", ""))
            conn.executemany(history, rows)
        if not prev:
            break
    elapsed = time.perf_counter() - started
    app.close()
    assert done == jobs, (done, jobs)
    return jobs / elapsed


class PgConveyorInserts:
    """:class:`SQLiteConveyorInserts` on PostgreSQL: conveyor's one-job statement (job,
    history row and NOTIFY), sent through :func:`conveyor.stores.postgres.wire.one_text` as
    enqueue() sends it, each chunk's values prepared before its clock starts."""

    def __init__(self, url: str, schema: str) -> None:
        from conveyor.stores.postgres import wire
        from conveyor.stores.postgres.statements import one_job_params
        from conveyor.stores.postgres.store import _Q, PostgresStore

        store = PostgresStore(url, schema=schema)
        store.migrate()
        store.close()
        self.conn = _pg_connect(url, schema)
        self.statement = _Q["insert_job"]
        # prepared once (as enqueue() prepares it on a connection's first insert, wire.one)
        assert wire.one(self.conn, self.statement, one_job_params(_new_jobs(1)[0], "api",
                                                                  "bench"))

    def step(self, count: int) -> float:
        from conveyor.stores.postgres import wire
        from conveyor.stores.postgres.statements import one_job_text

        sent = [values for new in _new_jobs(count)
                if (values := one_job_text(new, "api", "bench")) is not None]
        assert len(sent) == count
        conn, statement = self.conn, self.statement
        started = time.perf_counter()
        for values in sent:  # as enqueue() sends it: Bind/Execute/Sync, its values as text
            assert wire.one_text(conn, statement, values)
        return time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


def pg_conveyor_bulk_sql(url: str, schema: str, bulk: int) -> float:
    """:func:`sqlite_conveyor_bulk_sql` on PostgreSQL: COPY of the jobs and of their history
    rows, and the NOTIFY, in one transaction, rows prepared beforehand."""
    from conveyor.stores.postgres.statements import (
        COPY_HISTORY_TYPES,
        COPY_JOB_TYPES,
        copy_history_row,
        copy_job_row,
    )
    from conveyor.stores.postgres.store import _Q, PostgresStore

    store = PostgresStore(url, schema=schema)
    store.migrate()
    store.close()
    conn = _pg_connect(url, schema)
    batch = _new_jobs(bulk)
    job_rows = [copy_job_row(new) for new in batch]
    history_rows = [copy_history_row(new, "api") for new in batch]
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_Q["copy_clock"], {"channel": "bench"}).fetchall()
        for query, types, rows in ((_Q["copy_jobs"], COPY_JOB_TYPES, job_rows),
                                   (_Q["copy_history"], COPY_HISTORY_TYPES, history_rows)):
            with cur.copy(query) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
    many = bulk / (time.perf_counter() - started)
    conn.close()
    return many
