"""Whole-system speed beside hand-written loops: throughput, pickup latency, enqueue rates.

On SQLite always, and on PostgreSQL when ``CONVEYOR_BENCH_PG_URL`` is set (``scripts/run-bench``
starts a throwaway, durable server and sets it). Each measurement gets a fresh store (a new
SQLite file, or a new PostgreSQL schema, dropped afterwards). Worker processes are ordinary
``app.run_worker()`` processes (``bench/procs.py``); the loops are in ``bench/loops.py``.

- Throughput: worker processes start (1 process x 4 slots, 4 processes x 1 slot) and wait idle,
  then N no-op jobs are enqueued in one transaction; jobs/s is N over the span from the first
  ``started_at`` to the last ``finished_at`` (the store's clock). The process pool (1 process x
  4 slots, each slot's jobs in a child process) is measured the same way after a warm-up job per
  slot has started its children: what a job costs once they run, not their start. Beside
  SQLite's runs, a worker's statements alone (``loops.sqlite_conveyor_worker_sql``: the claim,
  the completion and their history rows, 4 or 1 jobs per transaction, one process): what the
  schema and SQLite cost a worker before any of its Python. The loops, the worker runs and the
  statements alone take turns, five rounds of a run each (``in_rounds``; the process pool in the
  middle round only); each figure is the median of its rounds, each ratio the median of the
  rounds' own ratios (``paired``): a loop measured once, minutes from the runs compared with it,
  set the ratios more than the code did.
- Pickup latency: one idle worker process; no-op jobs are enqueued one at a time from this
  process at random gaps of 50-250 ms; latency is ``started_at - created_at``.
- Idle cost: CPU seconds an idle worker process uses over a few seconds.
- Enqueue: ``app.enqueue()`` in a loop, and one ``enqueue_many()`` of 10,000 jobs; beside
  them, conveyor's own insert statements run by hand with parameters prepared beforehand
  (``loops.*ConveyorInserts``, ``loops.*_conveyor_bulk_sql``): what the schema and the
  database cost before conveyor's Python. Five rounds; within a round the loop, ``enqueue()``
  and the statements alone run in turns of a few milliseconds (``common.interleaved``); each
  figure is the median of its rounds, and each ratio the median of the rounds' own ratios.
- SQLite ``synchronous=FULL``: throughput 1 x 4 and enqueue again, beside the loops at FULL.

Speeds depend on the machine; compare the ratios within one run.

    .venv/bin/python -m bench.bench_throughput [--quick] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from bench import loops
from bench.common import interleaved, median, pct, table, write_sections
from bench.machine import machine_section
from bench.procs import NOOP, Target, cpu_seconds, opened, wait_done, workers
from conveyor import Conveyor, EnqueueRequest
from conveyor.errors import ConfigurationError

PG_ENV = "CONVEYOR_BENCH_PG_URL"
BULK = 10_000
#: The ``synchronous=FULL`` runs' sizes (jobs, enqueues), capped: each commit waits for a flush.
FULL_JOBS, FULL_SINGLE = 2000, 3000
ENQUEUE_ROUNDS = 5
#: One-by-one enqueue rates run in turns of this many (about 10-30 ms each on this machine).
ENQUEUE_CHUNK = {"SQLite": 250, "PostgreSQL": 50}


@dataclass
class Sizes:
    jobs: int
    pg_jobs: int  # durable PostgreSQL is slow per job: fewer keeps `make bench`'s time
    probes: int
    single: int
    pg_single: int
    idle_seconds: float
    rounds: int  # throughput: each store's loop and runs, taking turns


@dataclass
class Rate:
    """A throughput run: jobs/s, and the CPU its worker processes spent per job (µs), which
    a loaded machine disturbs far less than wall time (``nan`` for the process pool, whose
    children's CPU is not counted)."""

    per_second: float
    cpu_us: float = math.nan


def throughput(target: Target, processes: int, slots: int, jobs: int,
               pool: str = "thread") -> Rate:
    cpu = math.nan
    with opened(target) as app:
        if pool == "process":
            ids = warm_process_pool(app, slots, jobs)
        else:
            # Enqueued once every worker waits idle: enqueued before, the first process up
            # ran alone while the others were still starting (up to 10 s for four on a
            # loaded machine), and that ramp was inside the measured span.
            with workers(app, processes, slots, idle=True) as pids:
                before = sum(cpu_seconds(pid) for pid in pids)
                ids = [j.id for j in app.enqueue_many(
                    [EnqueueRequest(NOOP) for _ in range(jobs)])]
                wait_done(app, jobs)
                cpu = (sum(cpu_seconds(pid) for pid in pids) - before) / jobs * 1e6
        done = app.store.get_jobs(ids)
    first = min(j.started_at for j in done if j.started_at is not None)
    last = max(j.finished_at for j in done if j.finished_at is not None)
    return Rate(jobs / (last - first).total_seconds(), cpu)


def warm_process_pool(app: Conveyor, slots: int, jobs: int) -> list[str]:
    """One worker process with a process pool: a job per slot starts the children (all
    claimed at once), then the measured jobs are enqueued in one transaction."""
    with workers(app, 1, slots, idle=False, pool="process"):
        app.enqueue_many([EnqueueRequest(NOOP) for _ in range(slots)])
        wait_done(app, slots)
        ids = [j.id for j in app.enqueue_many([EnqueueRequest(NOOP) for _ in range(jobs)])]
        wait_done(app, slots + jobs)
    return ids


#: One measurement of a round: its name, and how to take it in round ``n`` (``None``: not in
#: this round).
Step = tuple[str, Callable[[int], Rate | None]]
#: A round's figures by name.
Round = dict[str, Rate]


def in_rounds(groups: Sequence[Sequence[Step]], rounds: int) -> list[Round]:
    """Every step, once a round, ``rounds`` times; within a round the groups go in order and
    each group's steps go in reverse order every other round.

    A durable PostgreSQL loop's own speed moved 456-1,808 jobs/s between runs minutes apart on
    the shared machine the figures come from, so a loop measured once, minutes before the
    worker runs it is compared with, set the ratio more than the code did. Each round runs a
    loop and the runs compared with it seconds apart (the loops are the first group), and a
    ratio is taken within a round (:func:`paired`); reversing the order of a group's steps
    every other round spreads a drift within rounds over all of them instead of always
    against the same one."""
    done: list[Round] = []
    for n in range(rounds):
        figures: Round = {}
        for group in groups:
            for name, measure in (group if n % 2 == 0 else list(reversed(group))):
                rate = measure(n)
                if rate is not None:
                    figures[name] = rate
        done.append(figures)
    return done


class Paired(NamedTuple):
    """A run's figures over its rounds, beside its loop's: the medians of its jobs/s, of the
    worker CPU per job (``nan`` when not measured) and of the loop's jobs/s, and the median,
    lowest and highest of the rounds' own ratios (run / loop of the same round), and how many
    rounds measured both.

    The ratio is not ``per_second / loop``: the median of each figure alone may come from
    rounds of different speed, which is the pairing of distant runs that rounds are for."""

    per_second: float
    cpu_us: float
    loop: float
    ratio: float
    low: float
    high: float
    rounds: int

    def ratio_cell(self) -> str:
        """The median ratio, and the rounds' range (or that there was one round)."""
        spread = (f"{self.low:.0%}-{self.high:.0%}" if self.rounds > 1 else "1 round")
        return f"{self.ratio:.0%} ({spread})"


def paired(rounds: Sequence[Round], run: str, loop: str) -> Paired:
    """``run`` against ``loop`` in the rounds that measured both."""
    both = [(figures[run], figures[loop]) for figures in rounds
            if run in figures and loop in figures]
    if not both:
        raise ValueError(f"no round measured both {run!r} and {loop!r}")
    ratios = [rate.per_second / limit.per_second for rate, limit in both]
    cpu = [rate.cpu_us for rate, _ in both if not math.isnan(rate.cpu_us)]
    return Paired(median([rate.per_second for rate, _ in both]),
                  median(cpu) if cpu else math.nan,
                  median([limit.per_second for _, limit in both]),
                  median(ratios), min(ratios), max(ratios), len(both))


def throughput_rounds(target: Target, sizes: Sizes) -> list[Round]:
    """The throughput figures of one store in :attr:`Sizes.rounds` rounds (:func:`in_rounds`):
    the hand-written loop (on SQLite, ``loop 1``: one process, ``loop 2``: two), then the worker
    runs ``1x4`` and ``4x1``, then the process pool (``pool``, in the middle round only: its
    warm-up, a worker and four children started, took longer than its run, and it is the
    least read figure), then on SQLite a worker's SQL alone at 4 and at 1 job per transaction
    (``sql 4``, ``sql 1``)."""
    folder, jobs, pg_url = target.folder, sizes.jobs, target.pg_url

    def sqlite_loop(processes: int) -> Step:
        return (f"loop {processes}", lambda _: Rate(
            loops.sqlite_claim_complete(folder, jobs, processes, "NORMAL")))

    def sql_alone(per_transaction: int) -> Step:
        return (f"sql {per_transaction}", lambda n: Rate(loops.sqlite_conveyor_worker_sql(
            f"sqlite:///{folder / f'worker-sql-{per_transaction}-{n}.db'}", jobs,
            per_transaction)))

    loop_group: list[Step]
    floors: list[Step] = []
    if pg_url is None:
        loop_group = [sqlite_loop(1), sqlite_loop(2)]
        floors = [sql_alone(4), sql_alone(1)]
    else:
        loop_group = [("loop", lambda _: Rate(
            loops.pg_claim_complete(pg_url, target.new_schema(), jobs, 4)))]
    workers_group: list[Step] = [("1x4", lambda _: throughput(target, 1, 4, jobs)),
                                 ("4x1", lambda _: throughput(target, 4, 1, jobs))]
    middle = sizes.rounds // 2  # the pool's start costs more than its run: one round only
    pool: list[Step] = [("pool", lambda n: throughput(target, 1, 4, jobs, pool="process")
                         if n == middle else None)]
    return in_rounds([loop_group, workers_group, pool, floors], sizes.rounds)


def pickup(target: Target, probes: int) -> list[float]:
    rng = random.Random(7)
    with opened(target) as app, workers(app, 1, 4, idle=True):
        ids = []
        for _ in range(probes):
            ids.append(app.enqueue(NOOP).id)
            time.sleep(rng.uniform(0.05, 0.25))
        wait_done(app, probes)
        done = app.store.get_jobs(ids)
    return [(j.started_at - j.created_at).total_seconds() for j in done
            if j.started_at is not None]


def idle_cpu(target: Target, seconds: float) -> float:
    """Fraction of one core an idle worker process (4 slots, defaults) uses."""
    with opened(target) as app, workers(app, 1, 4, idle=True) as (pid,):
        time.sleep(1.0)
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def enqueue_one(target: Target, count: int) -> float:
    with opened(target) as app:
        return count / AppEnqueues(app).step(count)


def enqueue_bulk(target: Target) -> float:
    with opened(target) as app:
        app.enqueue_many([EnqueueRequest(NOOP) for _ in range(10)])
        batch = [EnqueueRequest(NOOP) for _ in range(BULK)]
        started = time.perf_counter()
        app.enqueue_many(batch)
        return BULK / (time.perf_counter() - started)


def sqlite_wake() -> str:
    """How this conveyor's SQLite workers learn of another process's work."""
    try:
        from conveyor.stores.sqlite import wake
    except ImportError:
        return "polling every poll_interval (1 s)"
    probe = Path(tempfile.mkdtemp(prefix="conveyor-bp-")) / "probe"
    probe.touch()
    try:
        fd = wake._inotify_on(str(probe))
        if fd is None:
            return f"PRAGMA data_version every {wake.POLL_SECONDS * 1e3:g} ms"
        os.close(fd)
        return "inotify on the WAL"
    finally:
        probe.unlink()
        probe.parent.rmdir()


def cpu_cell(us: float) -> str:
    return "-" if math.isnan(us) else f"{us:,.0f}"


def measure_store(target: Target, sizes: Sizes, sections: dict[str, list[tuple[object, ...]]],
                  ) -> None:
    """Every measurement on one store, appended to the rows of ``sections``."""
    name = target.name
    if target.pg_url is not None:
        sizes = replace(sizes, jobs=sizes.pg_jobs, single=sizes.pg_single)
    rounds = throughput_rounds(target, sizes)
    if target.pg_url is None:
        what = ("claim+complete, 1 connection, WAL, NORMAL", "the same, 2 processes")
        loop_1, loop_4 = "loop 1", "loop 2"
    else:
        what = ("one row per transaction, SKIP LOCKED, 4 connections", "the same loop")
        loop_1 = loop_4 = "loop"
    runs = [("1 process x 4 slots", "1x4", what[0], loop_1, "sql 4"),
            ("4 processes x 1 slot", "4x1", what[1], loop_4, "sql 1"),
            ("1 process x 4 slots, --pool process", "pool", what[0], loop_1, "sql 4")]
    for label, run, loop, against, floor in runs:
        figure = paired(rounds, run, against)
        floor_cell = "-"
        if target.pg_url is None:  # a worker's SQL alone at 4 and at 1 job per transaction
            alone = paired(rounds, floor, loop_1)
            floor_cell = f"{alone.per_second:,.0f} ({alone.ratio:.0%})"
        sections["throughput"].append(
            (name, label, f"{figure.per_second:,.0f}", cpu_cell(figure.cpu_us), loop,
             f"{figure.loop:,.0f}", figure.ratio_cell(), floor_cell))
    one_x_4 = paired(rounds, "1x4", loop_1)
    samples = pickup(target, sizes.probes)
    wake = "LISTEN/NOTIFY" if target.pg_url else sqlite_wake()
    sections["latency"].append((name, wake, len(samples), f"{median(samples) * 1e3:.1f}",
                                f"{pct(samples, 0.99) * 1e3:.1f}", f"{max(samples) * 1e3:.1f}"))
    cpu = idle_cpu(target, sizes.idle_seconds)
    sections["idle"].append((name, f"{sizes.idle_seconds:g} s", f"{cpu:.2%}"))
    rates = enqueue_rounds(target, sizes)
    insert, one, sql_one, bulk, sql_bulk = rates.medians
    sections["enqueue"].append((name, f"{one:,.0f}", f"{insert:,.0f}", f"{rates.one:.0%}",
                                f"{sql_one:,.0f} ({rates.sql_one:.0%})", f"{bulk:,.0f}",
                                f"{sql_bulk:,.0f}"))
    if target.pg_url is None:
        sections["sqlite_sync"].append(("NORMAL (default)", f"{one_x_4.per_second:,.0f}",
                                         f"{one_x_4.loop:,.0f}", f"{one:,.0f}",
                                         f"{insert:,.0f}"))
        sections["sqlite_sync"].append(sqlite_full(sizes))


class EnqueueRates(NamedTuple):
    """:func:`enqueue_rounds`' figures: the medians of each one's rounds (the loop's, then
    ``enqueue()``'s, the SQL alone one by one, ``enqueue_many()``, the SQL alone in bulk),
    and the medians of the rounds' own ratios to the loop of ``enqueue()`` and of the SQL
    alone."""

    medians: tuple[float, float, float, float, float]
    one: float
    sql_one: float


class AppEnqueues:
    """``app.enqueue()`` one by one, a chunk at a time (:func:`bench.common.interleaved`)."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app
        for _ in range(20):  # warm up: connections, prepared paths
            app.enqueue(NOOP)

    def step(self, count: int) -> float:
        enqueue = self.app.enqueue
        started = time.perf_counter()
        for _ in range(count):
            enqueue(NOOP)
        return time.perf_counter() - started


def enqueue_rounds(target: Target, sizes: Sizes) -> EnqueueRates:
    """The enqueue figures (the loop's one INSERT per transaction, ``enqueue()`` one by one,
    conveyor's SQL alone one by one, ``enqueue_many()``, its SQL alone in bulk), in
    :data:`ENQUEUE_ROUNDS` rounds. Within a round the three one-by-one rates run in turns of
    :data:`ENQUEUE_CHUNK` (:func:`bench.common.interleaved`): a commit's cost drifts (on
    durable PostgreSQL the disk's flush time moved 2x within minutes, and a run of a few
    hundred commits can meet a stall of a second), so rates measured one after the other made
    ratios of the drift rather than of the work. A ratio is each round's own, the median of
    the rounds: the median of each figure alone may come from rounds of different speed."""
    folder, rounds = target.folder, ENQUEUE_ROUNDS
    single = max(1, sizes.single // rounds)
    chunk = ENQUEUE_CHUNK["SQLite" if target.pg_url is None else "PostgreSQL"]
    figures: list[Round] = []
    for n in range(rounds):
        with contextlib.ExitStack() as stack:
            if target.pg_url is None:
                loop: loops.SQLiteInserts | loops.PgInserts = loops.SQLiteInserts(folder,
                                                                                 "NORMAL")
                sql: loops.SQLiteConveyorInserts | loops.PgConveyorInserts = (
                    loops.SQLiteConveyorInserts(f"sqlite:///{folder / f'sql-{n}.db'}"))
            else:
                loop = loops.PgInserts(target.pg_url, target.new_schema())
                sql = loops.PgConveyorInserts(target.pg_url, target.new_schema())
            stack.callback(loop.close)
            stack.callback(sql.close)
            app = stack.enter_context(opened(target))
            rates = interleaved({"insert": loop, "one": AppEnqueues(app), "sql one": sql},
                                single, chunk)
        if target.pg_url is None:
            sql_bulk = loops.sqlite_conveyor_bulk_sql(
                f"sqlite:///{folder / f'sql-bulk-{n}.db'}", BULK)
        else:
            sql_bulk = loops.pg_conveyor_bulk_sql(target.pg_url, target.new_schema(), BULK)
        rates["bulk"], rates["sql bulk"] = enqueue_bulk(target), sql_bulk
        figures.append({name: Rate(rate) for name, rate in rates.items()})
    one_to_loop, sql_to_loop = (paired(figures, name, "insert") for name in ("one", "sql one"))
    bulk, sql_bulk = (median([f[name].per_second for f in figures])
                      for name in ("bulk", "sql bulk"))
    return EnqueueRates((one_to_loop.loop, one_to_loop.per_second, sql_to_loop.per_second,
                         bulk, sql_bulk), one_to_loop.ratio, sql_to_loop.ratio)


def sqlite_full(sizes: Sizes) -> tuple[object, ...]:
    """The same figures with ``synchronous=FULL`` (an fsync of the WAL at every commit)."""
    target = Target("SQLite", sqlite_options="?synchronous=full")
    # an fsync per commit: at most the sizes these runs had before the NORMAL ones grew
    jobs, single = min(sizes.jobs, FULL_JOBS), min(sizes.single, FULL_SINGLE)
    try:
        limit = loops.sqlite_claim_complete(target.folder, jobs, 1, "FULL")
        insert = loops.sqlite_enqueue(target.folder, single * 2, "FULL")
        try:
            one_x_4 = f"{throughput(target, 1, 4, jobs).per_second:,.0f}"
            one = f"{enqueue_one(target, single):,.0f}"
        except ConfigurationError:
            one_x_4 = one = "n/a (no ?synchronous= option)"
    finally:
        target.cleanup()
    return ("FULL", one_x_4, f"{limit:,.0f}", one, f"{insert:,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer jobs, for a fast look")
    parser.add_argument("--docs", type=Path, help="rewrite this page's generated sections")
    args = parser.parse_args()
    # jobs and pg_jobs: per run, in each round (5,000 and 2,000 in one round before rounds).
    # SQLite 10,000 since 2026-12-02: at 2,000 the loop's run took 0.08 s and a worker's
    # 0.2-0.3 s on this machine, so its start-up (first claims, a cold page cache) was a
    # large share of the span, and ratios read 28-31 % where 10,000 jobs read 35-37 %.
    sizes = (Sizes(jobs=500, pg_jobs=300, probes=30, single=300, pg_single=100,
                   idle_seconds=3, rounds=3) if args.quick
             else Sizes(jobs=10_000, pg_jobs=1000, probes=100, single=10_000, pg_single=3000,
                        idle_seconds=10, rounds=5))
    targets = [Target("SQLite")]
    pg_url = os.environ.get(PG_ENV)
    if pg_url:
        targets.append(Target("PostgreSQL", pg_url))
    else:
        print(f"{PG_ENV} is not set: SQLite only (scripts/run-bench starts a PostgreSQL)")
    started = time.monotonic()
    rows: dict[str, list[tuple[object, ...]]] = {
        "throughput": [], "latency": [], "idle": [], "enqueue": [], "sqlite_sync": []}
    try:
        for target in targets:
            measure_store(target, sizes, rows)
    finally:
        for target in targets:
            target.cleanup()
    out = {
        "throughput": table(
            f"Throughput, no-op jobs enqueued to idle workers ({sizes.jobs:,} on SQLite, "
            f"{sizes.pg_jobs:,} on PostgreSQL), {sizes.rounds} rounds of the loop and each run "
            "(jobs/s and µs: medians of the rounds; ratios: medians of the rounds' own)",
            ["store", "conveyor", "jobs/s", "worker CPU µs per job", "hand-written loop",
             "loop jobs/s", "conveyor / loop (rounds' range)",
             "conveyor's SQL alone, 1 process (/ 1-process loop)"], rows["throughput"]),
        "latency": table(
            "Pickup latency, enqueue in this process -> started_at in an idle worker process",
            ["store", "wake-up", "jobs", "p50 ms", "p99 ms", "max ms"], rows["latency"]),
        "idle": table("An idle worker process's CPU", ["store", "measured over", "of one core"],
                      rows["idle"]),
        "enqueue": table(
            "Enqueue (jobs/s)",
            ["store", "enqueue() one by one", "loop: one INSERT per transaction",
             "enqueue / loop", "conveyor's SQL alone, one by one (/ loop)",
             f"enqueue_many({BULK:,})", "conveyor's SQL alone, bulk"], rows["enqueue"]),
        "sqlite-sync": table(
            "SQLite: synchronous=NORMAL against FULL (jobs/s)",
            ["synchronous", "conveyor 1 x 4", "loop claim+complete", "enqueue() one by one",
             "loop INSERT"], rows["sqlite_sync"]),
    }
    elapsed = time.monotonic() - started
    print(f"bench_throughput took {elapsed:.0f}s")
    if args.docs:
        out["machine"] = machine_section(pg_url, quick=args.quick, sizes=vars(sizes))
        write_sections(args.docs, out)


if __name__ == "__main__":
    main()
