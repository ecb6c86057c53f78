"""Whole-system speed: enqueue rates, no-op jobs drained by worker processes, pickup latency.

On SQLite always, and on PostgreSQL when ``CONVEYOR_BENCH_PG_URL`` is set (``scripts/run-bench``
starts a throwaway server and sets it). Each measurement gets a fresh store (a new SQLite file,
or a new PostgreSQL schema, dropped afterwards).

- Enqueue, single: ``app.enqueue`` in a loop (one transaction per job). Bulk: ``enqueue_many``
  of 1,000 jobs per call (one transaction per call).
- Drain: 2,000 no-op jobs are enqueued in one call while 1, 2 or 4 worker PROCESSES (4 slots
  each) wait idle; jobs/s is 2,000 over the span from the jobs' ``created_at`` to the last
  ``finished_at``, both by the store's clock; the median of 3 rounds (same workers) is shown.
  Workers poll every 0.1 s here, so that SQLite's first pickup (by polling, see below) does
  not dominate the span.
- Pickup latency: two idle worker processes; no-op jobs are enqueued one at a time at random
  gaps of 50-250 ms; latency is ``started_at - created_at`` by the store's clock. PostgreSQL
  wakes workers with LISTEN/NOTIFY; SQLite has no cross-process wake-up, so its workers find
  new work by polling, and latency follows ``poll_interval`` (measured at the default 1.0 s,
  and at 0.1 s).

Speeds depend on the machine; compare the ratios within one run.

    .venv/bin/python -m bench.bench_throughput [--jobs 2000] [--rounds 3] [--probes 100]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import median, pct, table
from conveyor import Conveyor, EnqueueRequest, Job, JobContext, JobState

NOOP = "bench.noop"
PG_ENV = "CONVEYOR_BENCH_PG_URL"
ROOT = Path(__file__).resolve().parents[1]
SLOTS = 4


def build_app(url: str, schema: str | None) -> Conveyor:
    options: dict[str, Any] = {"schema": schema} if schema else {}
    app = Conveyor(url, **options)

    @app.job(NOOP)
    def noop(ctx: JobContext) -> None:
        return None

    return app


# -- stores -----------------------------------------------------------------------------------

@dataclass
class Target:
    """One store under test; ``fresh()`` gives a new, empty store location each time."""

    name: str
    pg_url: str | None = None
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="conveyor-b-")))
    schemas: list[str] = field(default_factory=list)

    def fresh(self) -> tuple[str, str | None]:
        if self.pg_url is None:
            return f"sqlite:///{self.folder / f'{uuid.uuid4().hex[:8]}.db'}", None
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.schemas.append(schema)
        return self.pg_url, schema

    def cleanup(self) -> None:
        if self.pg_url is not None and self.schemas:
            import psycopg

            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for path in self.folder.glob("*"):
            path.unlink()
        self.folder.rmdir()


@contextlib.contextmanager
def opened(target: Target) -> Iterator[Conveyor]:
    url, schema = target.fresh()
    app = build_app(url, schema)
    try:
        _ = app.store  # create the schema now, not inside a timed section
        yield app
    finally:
        app.close()


# -- worker processes -------------------------------------------------------------------------

def worker_main(args: argparse.Namespace) -> None:
    """A worker process (``--worker``): opens the store, says it is ready, works until SIGTERM."""
    app = build_app(args.url, args.schema)
    _ = app.store
    Path(args.ready).touch()
    try:
        app.run_worker(concurrency=args.concurrency, poll_interval=args.poll)
    finally:
        app.close()


@contextlib.contextmanager
def workers(app: Conveyor, count: int, poll: float) -> Iterator[None]:
    """``count`` idle worker processes on ``app``'s store, stopped (SIGTERM) at the end."""
    store = app.store
    schema = getattr(store, "schema", None)
    folder = Path(tempfile.mkdtemp(prefix="conveyor-bw-"))
    procs = []
    try:
        for i in range(count):
            args = [sys.executable, "-m", "bench.bench_throughput", "--worker", "--url", app.url,
                    "--ready", str(folder / f"ready-{i}"), "--poll", str(poll),
                    "--concurrency", str(SLOTS)]
            if schema is not None:
                args += ["--schema", schema]
            procs.append(subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while not all((folder / f"ready-{i}").exists() for i in range(count)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("bench worker processes did not start")
            time.sleep(0.02)
        _wait_idle(app, count)
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for path in folder.glob("*"):
            path.unlink()
        folder.rmdir()


def _wait_idle(app: Conveyor, count: int) -> None:
    """Give the workers time to reach their idle wait (on PostgreSQL: until all LISTEN)."""
    if not app.url.startswith("postgres"):
        time.sleep(0.5)
        return
    import psycopg

    channel = f"conveyor_{getattr(app.store, 'schema', 'conveyor')}_work"
    deadline = time.monotonic() + 30
    with psycopg.connect(app.url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query = %s",
                               (f'LISTEN "{channel}"',)).fetchone()
            if row and row[0] >= count:
                return
            time.sleep(0.02)
    raise RuntimeError("bench workers did not LISTEN")


def all_jobs(app: Conveyor) -> list[Job]:
    jobs: list[Job] = []
    before = None
    while True:
        page = app.list(limit=1000, before=before)
        jobs += page
        if len(page) < 1000:
            return jobs
        before = page[-1].id


def wait_done(app: Conveyor, count: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while app.counts()[JobState.COMPLETED] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not done in {timeout}s: {app.counts()}")
        time.sleep(0.02)


# -- measurements -----------------------------------------------------------------------------

def enqueue_rates(target: Target, single: int, bulk_calls: int) -> tuple[float, float]:
    with opened(target) as app:
        for _ in range(20):  # warm up: connections, prepared paths
            app.enqueue(NOOP)
        started = time.perf_counter()
        for _ in range(single):
            app.enqueue(NOOP)
        one = single / (time.perf_counter() - started)
    with opened(target) as app:
        batch = [EnqueueRequest(NOOP) for _ in range(1000)]
        app.enqueue_many(batch[:10])
        started = time.perf_counter()
        for _ in range(bulk_calls):
            app.enqueue_many(batch)
        many = bulk_calls * 1000 / (time.perf_counter() - started)
    return one, many


def drain_rates(target: Target, processes: int, jobs: int, rounds: int) -> list[float]:
    """jobs/s of ``processes`` workers running ``jobs`` no-op jobs, once per round.

    The same idle workers serve every round; each round's jobs/s is ``jobs`` over the span
    from their ``created_at`` to the last ``finished_at`` (the store's clock).
    """
    rates = []
    with opened(target) as app, workers(app, processes, poll=0.1):
        for round_ in range(1, rounds + 1):
            ids = [j.id for j in app.enqueue_many([EnqueueRequest(NOOP) for _ in range(jobs)])]
            wait_done(app, jobs * round_)
            done = app.store.get_jobs(ids)
            first = min(j.created_at for j in done)
            last = max(j.finished_at for j in done if j.finished_at is not None)
            rates.append(jobs / (last - first).total_seconds())
    return rates


def pickup_latencies(target: Target, poll: float, probes: int) -> list[float]:
    rng = random.Random(7)
    with opened(target) as app, workers(app, 2, poll=poll):
        for _ in range(probes):
            app.enqueue(NOOP)
            time.sleep(rng.uniform(0.05, 0.25))
        wait_done(app, probes)
        done = all_jobs(app)
    return [(j.started_at - j.created_at).total_seconds() for j in done
            if j.started_at is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--single", type=int, default=500)
    parser.add_argument("--bulk-calls", type=int, default=5)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=SLOTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    targets = [Target("SQLite")]
    pg_url = os.environ.get(PG_ENV)
    if pg_url:
        targets.append(Target("PostgreSQL", pg_url))
    else:
        print(f"{PG_ENV} is not set: SQLite only (scripts/run-bench starts a PostgreSQL)")
    counts = [int(n) for n in args.processes.split(",")]
    started = time.monotonic()
    enqueue_rows: list[tuple[object, ...]] = []
    drain_rows: list[tuple[object, ...]] = []
    latency_rows: list[tuple[object, ...]] = []
    try:
        for target in targets:
            one, many = enqueue_rates(target, args.single, args.bulk_calls)
            enqueue_rows.append((target.name, f"{one:,.0f}", f"{many:,.0f}",
                                 f"{many / one:.0f}x"))
            base = None
            for n in counts:
                rates = drain_rates(target, n, args.jobs, args.rounds)
                rate = median(rates)
                base = base or rate
                drain_rows.append((target.name, n, n * SLOTS, f"{rate:,.0f}",
                                   f"{min(rates):,.0f}-{max(rates):,.0f}",
                                   f"{rate / base:.2f}x"))
            polls = [1.0] if target.pg_url else [1.0, 0.1]
            for poll in polls:
                samples = pickup_latencies(target, poll, args.probes)
                wake = "LISTEN/NOTIFY" if target.pg_url else "polling"
                latency_rows.append((target.name, wake, f"{poll:g} s", len(samples),
                                     f"{median(samples) * 1e3:.1f}",
                                     f"{pct(samples, 0.99) * 1e3:.1f}",
                                     f"{max(samples) * 1e3:.1f}"))
    finally:
        for target in targets:
            target.cleanup()
    table("Enqueue rate (jobs/s)",
          ["store", "enqueue() in a loop", "enqueue_many(1,000 per call)", "bulk vs single"],
          enqueue_rows)
    table(f"Draining {args.jobs:,} no-op jobs with worker processes ({SLOTS} slots each; "
          f"median of {args.rounds} rounds)",
          ["store", "processes", "slots", "jobs/s", "range", "vs 1 process"], drain_rows)
    table("Pickup latency, enqueue -> started_at (2 idle worker processes)",
          ["store", "wake-up", "poll_interval", "jobs", "p50 ms", "p99 ms", "max ms"],
          latency_rows)
    print(f"bench_throughput took {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
