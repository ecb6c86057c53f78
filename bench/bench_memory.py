"""A worker's memory (RSS) as the jobs it has run pile up: it must stay flat.

One ordinary worker process (4 slots, ``python -m bench.procs``) runs no-op jobs on a SQLite
store while this process feeds it (``enqueue_many`` in batches, keeping at most a few batches
pending). At each mark of finished jobs the worker's resident set (``VmRSS`` of
``/proc/PID/status``) is read. Growth per thousand jobs between the first mark and the others
is what to read: a leak of even a few hundred bytes per job shows up as tens of MiB over a
million jobs, far above the few MiB that the allocator and SQLite's page cache move by. At
each mark the worker also counts its Python heap (on SIGUSR1, after a full collection:
``sys.getallocatedblocks()``, every object and buffer Python's allocator holds, and the
objects the collector tracks; ``procs._census_on_signal``), which moves only with what Python
code keeps: one object kept per job would add a million blocks.

The store is SQLite because only the worker's own code is under test here; a million durable
PostgreSQL commits would take an hour on the small machine this runs on.

    .venv/bin/python -m bench.bench_memory [--quick] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

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


class Mark(NamedTuple):
    jobs: int
    rss_mib: float
    seconds: float
    blocks: int  # sys.getallocatedblocks() in the worker, after gc.collect()
    objects: int  # len(gc.get_objects()) there


def census(pid: int, path: Path, taken: int) -> tuple[int, int]:
    """Ask the worker for its heap's counts (SIGUSR1) and wait for its ``taken + 1``-th line."""
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) > taken:
            blocks, objects = lines[taken].split()
            return int(blocks), int(objects)
        time.sleep(0.05)
    raise RuntimeError("the worker did not answer the census")


def measure(marks: list[int]) -> list[Mark]:
    """The worker's memory at each mark of finished jobs, for one worker process."""
    target = Target("SQLite")
    found: list[Mark] = []
    counts = Path(tempfile.mkdtemp(prefix="conveyor-census-")) / "census"
    try:
        with (opened(target) as app,
              workers(app, 1, 4, idle=True, census=counts) as (pid,)):
            started, enqueued, finished = time.monotonic(), 0, 0
            for mark in marks:
                while finished < mark:
                    if enqueued - finished < AHEAD and enqueued < marks[-1]:
                        app.enqueue_many([EnqueueRequest(NOOP) for _ in range(BATCH)])
                        enqueued += BATCH
                        continue
                    time.sleep(0.5)
                    finished = app.count_jobs(JobState.COMPLETED)
                rss, seconds = rss_mib(pid), time.monotonic() - started
                found.append(Mark(finished, rss, seconds, *census(pid, counts, len(found))))
                print(f"  {finished:,} jobs: {rss:.1f} MiB, {found[-1].blocks:,} blocks",
                      flush=True)
    finally:
        target.cleanup()
        counts.unlink(missing_ok=True)
        counts.parent.rmdir()
    return found


def main() -> None:
    parser = bench_arguments(__doc__, "stop at 100,000 jobs")
    parser.add_argument("--marks", help="jobs finished at which to read the RSS, e.g. 1000,5000")
    args = parser.parse_args()
    marks = ([int(m) for m in args.marks.split(",")] if args.marks
             else [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    found = measure(marks)
    first = found[0]
    rows = [(f"{m.jobs:,}", f"{m.rss_mib:.1f}", f"{m.rss_mib - first.rss_mib:+.1f}",
             "—" if m.jobs == first.jobs else
             f"{(m.rss_mib - first.rss_mib) * 1024 * 1024 / (m.jobs - first.jobs):.1f}",
             f"{m.blocks:,} ({m.blocks - first.blocks:+,})",
             f"{m.objects:,} ({m.objects - first.objects:+,})", f"{m.seconds:.0f}")
            for m in found]
    out = table("A worker process's memory (1 process x 4 slots, SQLite, no-op jobs)",
                ["jobs finished", "RSS MiB", "since the first mark, MiB",
                 "bytes per job since the first mark",
                 "Python heap blocks (since the first mark)",
                 "objects tracked by gc (since the first mark)", "s"], rows)
    if args.docs:
        write_sections(args.docs, {"memory": out})


if __name__ == "__main__":
    main()
