"""The benchmark's floor for a SQLite worker (``bench.loops.sqlite_conveyor_worker_sql``)
writes what a real worker writes: every job completed, and the same history, so that the
floor it reports is the cost of conveyor's own statements and not of less work."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from bench.loops import sqlite_conveyor_worker_sql
from bench.procs import NOOP, build_app

from conveyor import EnqueueRequest

JOBS = 23  # not a multiple of 4: the last transaction completes fewer than it claimed


def _written(path: Path) -> tuple[list[tuple[str, int]], list[tuple[str, ...]]]:
    """Each job's state and attempt, and each job's history as (action, from, to), by seq."""
    conn = sqlite3.connect(path)
    try:
        jobs = conn.execute("SELECT state, attempt FROM jobs ORDER BY seq").fetchall()
        history = conn.execute(
            "SELECT group_concat(action || ':' || coalesce(from_state, '') || '>' || to_state,"
            " ' ') FROM (SELECT * FROM job_history ORDER BY job_seq, id) GROUP BY job_seq"
            " ORDER BY job_seq").fetchall()
    finally:
        conn.close()
    return jobs, history


@pytest.mark.parametrize("per_transaction", [1, 4])
def test_the_floor_writes_what_a_worker_writes(tmp_path: Path, per_transaction: int) -> None:
    floor = tmp_path / "floor.db"
    assert sqlite_conveyor_worker_sql(f"sqlite:///{floor}", JOBS, per_transaction) > 0

    worker = tmp_path / "worker.db"
    app = build_app(f"sqlite:///{worker}", None)
    app.enqueue_many([EnqueueRequest(NOOP) for _ in range(JOBS)])
    app.run_worker(concurrency=per_transaction, burst=True)
    app.close()

    jobs, history = _written(floor)
    assert jobs == [("completed", 0)] * JOBS
    assert history == [("create:>pending start:pending>running complete:running>completed",)
                       ] * JOBS
    assert (jobs, history) == _written(worker)
