"""Claim cost against table size: a claim must cost the same with 1,000 or 1,000,000 jobs.

The table is filled with finished jobs (the bulk of any real table), plus pending jobs
scheduled in the future, plus a fixed set of runnable jobs; each timed operation claims one job
and completes it. Ratios between sizes, measured in one run, are what matter on a noisy machine.

    .venv/bin/python -m bench.bench_claim [--sizes 1000,100000,1000000] [--ops 300] [--docs PAGE]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.common import median, pct, table, timed, write_sections
from conveyor import transitions
from conveyor.changes import Lease
from conveyor.stores.base import NewJob
from conveyor.stores.sqlite import SQLiteStore
from conveyor.stores.sqlite.worker_path import candidates_statement

FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO jobs (id, job_type, queue, state, params, run_at, line_at, pause_timeout,
                  created_at, updated_at, finished_at, max_attempts)
SELECT 'filler-' || i, 'bench', 'default',
       CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'completed' END, '{}',
       :now + CASE WHEN i % 10 = 0 THEN 86400 ELSE -86400 END,
       :now + CASE WHEN i % 10 = 0 THEN 86400 ELSE -86400 END, 86400, :now, :now,
       CASE WHEN i % 10 = 0 THEN NULL ELSE :now END, 3
FROM n
"""


def build(path: Path, size: int, runnable: int) -> SQLiteStore:
    store = SQLiteStore(f"sqlite:///{path}")
    store.migrate()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(FILL, {"count": size, "now": time.time()})
    conn.close()
    store.insert_jobs([NewJob(id=f"run-{i}", job_type="bench", params={}) for i in range(runnable)])
    return store


def claim_and_complete(store: SQLiteStore) -> None:
    (job,) = store.claim("bench", queues=[], job_types=["bench"], limit=1, lease_seconds=30)
    assert job.lease_token is not None
    store.apply([transitions.complete(Lease(job.id, job.lease_token, job.attempt), None, "b")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--docs", type=Path, help="rewrite this page's generated section")
    args = parser.parse_args()
    rows = []
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"claim-{size}.db"
            started = time.perf_counter()
            store = build(path, size, args.ops + 10)
            fill = time.perf_counter() - started
            # the store's own claim query (not a copy of it, which drifts from it)
            plan = sqlite3.connect(path).execute(
                "EXPLAIN QUERY PLAN " + candidates_statement(1, one_queue=False),
                ("bench", 1, 0, "bench", 1)).fetchall()
            samples = timed(partial(claim_and_complete, store), args.ops)
            store.close()
            med = median(samples)
            base = base or med
            rows.append((f"{size:,}", f"{fill:.1f}", f"{med * 1e3:.3f}",
                         f"{pct(samples, 0.99) * 1e3:.3f}", f"{med / base:.2f}x",
                         "USING INDEX" if any("USING INDEX" in str(r[-1]) for r in plan)
                         else "SCAN"))
    text = table("SQLite: claim + complete one job, by jobs in the table",
          ["jobs in table", "fill s", "median ms", "p99 ms", "vs smallest", "claim plan"], rows)
    if args.docs:
        write_sections(args.docs, {"claim": text})


if __name__ == "__main__":
    main()
