"""Retention against claims: does pruning a million finished jobs stall the workers' claims?

A SQLite store is filled with N finished jobs (completed ten days ago, three history rows each:
create, start, complete) and a supply of runnable jobs. A claimer (one job claimed and
completed per operation, as a worker's loop does) is timed alone; then while another process
prunes as a worker does (batches a second apart) for a while; then while another process prunes
everything as ``conveyor prune`` does (batches as long apart as they take). Reported: claim
median and p99 in each case, the batch times (how long each holds the write lock) and the rate.

    .venv/bin/python -m bench.bench_prune [--jobs 1000000] [--baseline-ops 2000] [--docs PAGE]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

from bench.bench_claim import claim_and_complete
from bench.common import median, pct, table, timed, write_sections
from conveyor.lifecycle import JobState
from conveyor.retention import prune_store
from conveyor.stores.sqlite import SQLiteStore

DAY = 86400.0
FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO jobs (id, job_type, queue, state, params, run_at, line_at, pause_timeout,
                  created_at, updated_at, started_at, finished_at, max_attempts)
SELECT :prefix || i, 'bench', 'default', :state, '{}', :at, :at, 86400, :at, :at,
       CASE WHEN :state = 'completed' THEN :at END, CASE WHEN :state = 'completed' THEN :at END, 3
FROM n
"""
HISTORY = """
INSERT INTO job_history (job_seq, job_id, at, action, from_state, to_state, attempt)
SELECT seq, id, finished_at, a.action, a.from_state, a.to_state, 0 FROM jobs,
    (SELECT 'create' AS action, NULL AS from_state, 'pending' AS to_state
     UNION ALL SELECT 'start', 'pending', 'running'
     UNION ALL SELECT 'complete', 'running', 'completed') a
WHERE state = 'completed'
"""


def build(path: Path, jobs: int, runnable: int) -> float:
    """Fill the store; returns the seconds it took."""
    started = time.perf_counter()
    store = SQLiteStore(f"sqlite:///{path}")
    store.migrate()
    store.close()
    conn = sqlite3.connect(path)
    with conn:
        now = time.time()
        conn.execute(FILL, {"count": jobs, "prefix": "done-", "state": "completed",
                            "at": now - 10 * DAY})
        conn.execute(HISTORY)
        conn.execute(FILL, {"count": runnable, "prefix": "run-", "state": "pending",
                            "at": now - 1})
    conn.close()
    return time.perf_counter() - started


def prune(path: str, pause: float | None, window: float,
          done: multiprocessing.Queue[list[float]]) -> None:
    """The pruning process: completed jobs older than a day, as retention deletes them
    (:func:`~conveyor.retention.prune_store`, its batch sizing and ``pause``), until none is
    left or ``window`` seconds have passed. Reports each batch's time."""
    store = SQLiteStore(f"sqlite:///{path}")
    batches: list[float] = []
    original = store.prune_jobs

    def timed_batch(state: JobState, older_than: float, *, limit: int) -> int:
        started = time.perf_counter()
        try:
            return original(state, older_than, limit=limit)
        finally:
            batches.append(time.perf_counter() - started)

    store.prune_jobs = timed_batch  # type: ignore[method-assign]
    stop = threading.Event()
    timer = threading.Timer(window, stop.set)
    timer.daemon = True
    timer.start()
    prune_store(store, {JobState.COMPLETED: DAY}, pause=pause, stop=stop)
    timer.cancel()
    store.close()
    done.put(batches)


def claims_during(store: SQLiteStore, worker: multiprocessing.Process) -> list[float]:
    samples: list[float] = []
    while worker.is_alive():
        samples.extend(timed(partial(claim_and_complete, store), 20))
    return samples


def _run(store: SQLiteStore, path: str, pause: float | None, window: float,
         results: multiprocessing.Queue[list[float]]) -> tuple[list[float], list[float]]:
    """Claims timed while a pruning process runs; (claim times, batch times)."""
    worker = multiprocessing.Process(target=prune, args=(path, pause, window, results))
    worker.start()
    during = claims_during(store, worker)
    batches = results.get(timeout=60)
    worker.join()
    return during, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--baseline-ops", type=int, default=2000)
    parser.add_argument("--runnable", type=int, default=200_000)
    parser.add_argument("--paced-window", type=float, default=30.0,
                        help="seconds of a worker's paced prune (1 s between batches) to time")
    parser.add_argument("--docs", type=Path, help="rewrite this page's generated section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prune.db"
        fill = build(path, args.jobs, args.runnable)
        store = SQLiteStore(f"sqlite:///{path}")
        alone = timed(partial(claim_and_complete, store), args.baseline_ops)
        results: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
        paced = _run(store, str(path), 1.0, args.paced_window, results)[0]
        started = time.perf_counter()
        during, batches = _run(store, str(path), None, 1e9, results)
        elapsed = time.perf_counter() - started
        left = store.count_prunable(JobState.COMPLETED, DAY)
        store.close()
    print(f"filled {args.jobs:,} finished jobs (+{args.runnable:,} runnable) in {fill:.0f} s; "
          f"pruned in {elapsed:.0f} s ({args.jobs / elapsed:,.0f} jobs/s), {left} left")
    rows = [("without a prune", f"{len(alone):,}", f"{median(alone) * 1e3:.2f}",
             f"{pct(alone, 0.99) * 1e3:.2f}", f"{max(alone) * 1e3:.1f}"),
            ("during a paced prune (1 s pauses)", f"{len(paced):,}",
             f"{median(paced) * 1e3:.2f}", f"{pct(paced, 0.99) * 1e3:.2f}",
             f"{max(paced) * 1e3:.1f}"),
            ("during conveyor prune", f"{len(during):,}", f"{median(during) * 1e3:.2f}",
             f"{pct(during, 0.99) * 1e3:.2f}", f"{max(during) * 1e3:.1f}"),
            ("its batches (500 jobs at most)", f"{len(batches):,}",
             f"{median(batches) * 1e3:.2f}", f"{pct(batches, 0.99) * 1e3:.2f}",
             f"{max(batches) * 1e3:.1f}")]
    text = table(f"SQLite: claim + complete while {args.jobs:,} finished jobs are pruned",
                 ["", "operations", "median ms", "p99 ms", "max ms"], rows)
    if args.docs:
        write_sections(args.docs, {"prune": text + (
            f"\n\n{args.jobs:,} finished jobs (with 3 history rows each) pruned in "
            f"{elapsed:.0f} s, {args.jobs / elapsed:,.0f} jobs/s.")})


if __name__ == "__main__":
    main()
