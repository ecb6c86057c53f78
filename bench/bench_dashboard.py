"""The dashboard's reads with a million jobs in the store: overview, job list, counts, search.

On demand (not in ``make bench``): fills a store with ``--size`` jobs (85% completed, 7%
failed, 3% cancelled, finished over the last two hours; 5% pending; five types, four queues),
then times each read the dashboard makes and prints the query plans of the overview's queries,
so an index that stopped being used shows up as a scan.

    .venv/bin/python -m bench.bench_dashboard [--size 1000000] [--repeat 5] [--pg URL]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from bench.common import median, table, timed
from conveyor import Conveyor
from conveyor.stores.sqlfiles import load_queries
from conveyor.web.charts import read_overview

SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO jobs (id, job_type, queue, state, params, run_at, line_at, pause_timeout,
                  created_at, updated_at, finished_at, max_attempts, attempt, error)
SELECT printf('%08x-0000-4000-8000-%012x', i, i), 'type' || (i % 5), 'queue' || (i % 4),
       CASE WHEN i % 20 = 0 THEN 'pending' WHEN i % 20 = 1 THEN 'cancelled'
            WHEN i % 100 < 9 THEN 'failed' ELSE 'completed' END,
       '{"n":' || i || ',"note":"customer ' || (i % 1000) || '"}',
       :now - 7200, :now - 7200, 86400, :now - 86400 + i * 86400.0 / :count, :now,
       CASE WHEN i % 20 = 0 THEN NULL ELSE :now - (i % 7200) END, 3,
       CASE WHEN i % 100 < 9 AND i % 20 > 1 THEN 3 ELSE 0 END,
       CASE WHEN i % 100 < 9 AND i % 20 > 1
            THEN '{"type":"ValueError","message":"bad row ' || i || '","traceback":""}' END
FROM n
"""

PG_FILL = """
INSERT INTO jobs (id, job_type, queue, state, params, run_at, line_at, pause_timeout,
                  created_at, updated_at, finished_at, max_attempts, attempt, error)
SELECT lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0'),
       'type' || (i %% 5), 'queue' || (i %% 4),
       CASE WHEN i %% 20 = 0 THEN 'pending' WHEN i %% 20 = 1 THEN 'cancelled'
            WHEN i %% 100 < 9 THEN 'failed' ELSE 'completed' END,
       jsonb_build_object('n', i, 'note', 'customer ' || (i %% 1000)),
       now() - interval '2 hours', now() - interval '2 hours', 86400,
       now() - interval '1 day' + i * interval '1 day' / %(count)s, now(),
       CASE WHEN i %% 20 = 0 THEN NULL ELSE now() - (i %% 7200) * interval '1 second' END, 3,
       CASE WHEN i %% 100 < 9 AND i %% 20 > 1 THEN 3 ELSE 0 END,
       CASE WHEN i %% 100 < 9 AND i %% 20 > 1 THEN jsonb_build_object(
            'type', 'ValueError', 'message', 'bad row ' || i, 'traceback', '') END
FROM generate_series(1, %(count)s) AS i
"""

PLANS = {
    "counts by state": "SELECT state, count(*) FROM jobs GROUP BY state",
    "counts by queue": "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state",
    "list failed": "SELECT id FROM jobs WHERE state = 'failed' ORDER BY seq DESC LIMIT 50",
}
#: The SQLite store's own forms of them: its counts read each state from the index that holds
#: it, and its indexes by state hold no pending and no running job (schema version 12), so a
#: list of another state says so (see filter_clause).
SQLITE_PLANS = {
    "counts by state": load_queries("conveyor.stores.sqlite", "queries.sql")["count_by_state"],
    "counts by queue": load_queries("conveyor.stores.sqlite", "flow.sql")["queue_counts"],
    "list failed": "SELECT id FROM jobs WHERE state = 'failed' AND state <> 'pending' "
                   "AND state <> 'running' ORDER BY seq DESC LIMIT 50",
}


#: The PostgreSQL store's form of one: its index by state holds no pending job either (schema
#: version 12), and a list of another state says so (see statements.filter_terms).
PG_PLANS = {
    "list failed": "SELECT id FROM jobs WHERE state = 'failed' AND state <> 'pending' "
                   "ORDER BY seq DESC LIMIT 50",
}


def fill_sqlite(path: Path, size: int) -> Conveyor:
    app = Conveyor(f"sqlite:///{path}")
    app.store  # noqa: B018 - create the schema
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(SQLITE_FILL, {"count": size, "now": time.time()})
        conn.execute("ANALYZE")
    conn.close()
    return app


def fill_postgres(url: str, size: int) -> tuple[Conveyor, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    app = Conveyor(url, schema=schema)
    app.store  # noqa: B018
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(PG_FILL, {"count": size})
        conn.execute("VACUUM ANALYZE jobs")
    return app, schema


def plans(app: Conveyor, schema: str | None) -> None:
    """The plans of the overview's own queries (throughput as the store runs it)."""
    if schema is None:  # a minute at a time
        minute = time.time() // 60 * 60
        throughput = load_queries("conveyor.stores.sqlite", "dash.sql")[
            "finished_in_minute"].replace("?", str(minute), 1).replace("?", str(minute + 60))
    else:
        throughput = load_queries("conveyor.stores.postgres", "dash.sql")[
            "finished_per_minute"].replace("%(since)s", "now() - interval '1 hour'")
    queries = {**PLANS, **(SQLITE_PLANS if schema is None else PG_PLANS),
               "throughput": throughput}
    for name, sql in queries.items():
        rows = _sqlite_plan(app, sql) if schema is None else _pg_plan(app, schema, sql)
        print(f"  {name}: " + " | ".join(r.strip() for r in rows if "Scan" in r or "SCAN" in r
                                        or "SEARCH" in r))


def _sqlite_plan(app: Conveyor, sql: str) -> list[str]:
    conn = sqlite3.connect(app.url.removeprefix("sqlite:///"))
    try:
        return [str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
    finally:
        conn.close()


def _pg_plan(app: Conveyor, schema: str, sql: str) -> list[str]:
    import psycopg

    with psycopg.connect(app.url) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return [str(r[0]) for r in conn.execute(f"EXPLAIN {sql}")]


def measure(app: Conveyor, repeat: int) -> list[tuple[str, float, float]]:
    hour_ago = app.store.now() - timedelta(hours=1)
    reads: dict[str, Callable[[], object]] = {
        "overview (charts + queues)": lambda: read_overview(app),
        "counts by state": app.counts,
        "list newest 50": lambda: app.list(limit=50),
        "list failed 50": lambda: app.list("failed", limit=50),
        "list pending 50": lambda: app.list("pending", limit=50),
        "list type 50": lambda: app.list(job_type="type3", limit=50),
        "list queue 50": lambda: app.list(queue="queue1", limit=50),
        "list type + queue 50": lambda: app.list(job_type="type3", queue="queue1", limit=50),
        "count failed in the last hour": lambda: app.count_jobs(
            "failed", finished_after=hour_ago),
        "search text (50)": lambda: app.list(text="bad row 4242", limit=50),
        "id prefix": lambda: app.list(id_prefix="000f4240", limit=50),
    }
    rows = []
    for name, read in reads.items():
        read()  # warm the cache: the dashboard is read again and again
        samples = timed(read, repeat)
        rows.append((name, median(samples) * 1000, max(samples) * 1000))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", help="a PostgreSQL URL to measure too (a throwaway schema)")
    args = parser.parse_args()
    stores: list[tuple[str, Conveyor, str | None]] = []
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        stores.append(("sqlite", fill_sqlite(Path(folder) / "bench.db", args.size), None))
        print(f"sqlite filled with {args.size} jobs in {time.perf_counter() - started:.0f} s")
        if args.pg:
            started = time.perf_counter()
            pg_app, pg_schema = fill_postgres(args.pg, args.size)
            stores.append(("postgres", pg_app, pg_schema))
            print(f"postgres filled in {time.perf_counter() - started:.0f} s")
        try:
            for name, app, schema in stores:
                print(f"{name} plans:")
                plans(app, schema)
                rows = measure(app, args.repeat)
                table(f"dashboard reads, {name}, {args.size:,} jobs", ["read", "median ms",
                                                                       "max ms"],
                      [(r, f"{m:.1f}", f"{x:.1f}") for r, m, x in rows])
        finally:
            for _name, opened, dropped in stores:
                opened.close()
                if dropped is not None and args.pg:
                    import psycopg

                    with psycopg.connect(args.pg, autocommit=True) as conn:
                        conn.execute(f'DROP SCHEMA "{dropped}" CASCADE')


if __name__ == "__main__":
    main()
