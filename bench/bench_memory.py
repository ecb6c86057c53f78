"""A worker's memory (RSS) as the jobs it has run pile up: it must stay flat.

One ordinary worker process (4 slots, ``python -m bench.procs``) runs no-op jobs on a SQLite
store while this process feeds it (``enqueue_many`` in batches, keeping at most a few batches
pending). At each mark of finished jobs the worker's resident set (``VmRSS`` of
``/proc/PID/status``) is read. Growth per thousand jobs between the first mark and the others
is what to read: a leak of even a few hundred bytes per job shows up as tens of MiB over a
million jobs, far above the few MiB that the allocator and SQLite's page cache move by.

The store is SQLite because only the worker's own code is under test here; a million durable
PostgreSQL commits would take an hour on the small machine this runs on.

    .venv/bin/python -m bench.bench_memory [--quick] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import bench_arguments, table, write_sections
from bench.procs import NOOP, Target, opened, workers
from conveyor import EnqueueRequest, JobState

BATCH = 10_000
#: Pending jobs kept ahead of the worker: enough that it never starves between batches.
AHEAD = 3 * BATCH


def rss_mib(pid: int) -> float:
    """The process's resident set now, from the kernel (no dependency on psutil)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def measure(marks: list[int]) -> list[tuple[int, float, float]]:
    """(jobs finished, RSS MiB, seconds since start) at each mark, for one worker process."""
    target = Target("SQLite")
    found: list[tuple[int, float, float]] = []
    try:
        with opened(target) as app, workers(app, 1, 4, idle=True) as (pid,):
            started, enqueued, finished = time.monotonic(), 0, 0
            for mark in marks:
                while finished < mark:
                    if enqueued - finished < AHEAD and enqueued < marks[-1]:
                        app.enqueue_many([EnqueueRequest(NOOP) for _ in range(BATCH)])
                        enqueued += BATCH
                        continue
                    time.sleep(0.5)
                    finished = app.count_jobs(JobState.COMPLETED)
                found.append((finished, rss_mib(pid), time.monotonic() - started))
                print(f"  {finished:,} jobs: {found[-1][1]:.1f} MiB", flush=True)
    finally:
        target.cleanup()
    return found


def main() -> None:
    parser = bench_arguments(__doc__, "stop at 100,000 jobs")
    parser.add_argument("--marks", help="jobs finished at which to read the RSS, e.g. 1000,5000")
    args = parser.parse_args()
    marks = ([int(m) for m in args.marks.split(",")] if args.marks
             else [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    found = measure(marks)
    first_jobs, first_rss, _ = found[0]
    rows = [(f"{jobs:,}", f"{rss:.1f}", f"{rss - first_rss:+.1f}",
             "—" if jobs == first_jobs else
             f"{(rss - first_rss) * 1024 * 1024 / (jobs - first_jobs):.1f}",
             f"{seconds:.0f}")
            for jobs, rss, seconds in found]
    out = table("A worker process's memory (1 process x 4 slots, SQLite, no-op jobs)",
                ["jobs finished", "RSS MiB", "since the first mark, MiB",
                 "bytes per job since the first mark", "s"], rows)
    if args.docs:
        write_sections(args.docs, {"memory": out})


if __name__ == "__main__":
    main()
