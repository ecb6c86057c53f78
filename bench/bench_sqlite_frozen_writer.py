"""What one process frozen inside a SQLite write transaction does to everyone else.

Process A opens the store's file, takes the write lock (``BEGIN IMMEDIATE``, as every conveyor
write does) and is then stopped with SIGSTOP, as a debugger, an OOM-thrashing host or a
``kill -STOP`` would. Meanwhile process B (this one) enqueues a job, and reads.

Two runs: A stays stopped (how long does B's write wait, and with what error?), and A is
continued after ``--thaw`` seconds (does B's write then go through at once?).

    .venv/bin/python -m bench.bench_sqlite_frozen_writer [--thaw 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import table
from conveyor.errors import StoreError
from conveyor.stores.base import NewJob
from conveyor.stores.sqlite import SQLiteStore

HOLDER = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
conn.execute("ROLLBACK")
"""


def _freeze_holder(path: Path) -> subprocess.Popen[str]:
    """Start A, wait until it holds the write lock, and until it is stopped."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None
    if holder.stdout.readline().strip() != "locked":
        raise RuntimeError("the holder process did not take the lock")
    while _state(holder.pid) != "T":
        time.sleep(0.01)
    return holder


def _state(pid: int) -> str:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0]


def _enqueue(store: SQLiteStore) -> tuple[float, str]:
    started = time.monotonic()
    try:
        store.insert_jobs([NewJob(id=os.urandom(8).hex(), job_type="probe", params={})])
        outcome = "enqueued"
    except StoreError as exc:
        outcome = f"StoreError: {str(exc).split(': ', 1)[-1]}"
    return time.monotonic() - started, outcome


def run(folder: Path, thaw: float | None) -> list[list[str]]:
    path = folder / f"frozen-{'thaw' if thaw else 'stuck'}.db"
    store = SQLiteStore(f"sqlite:///{path}")
    store.migrate()
    holder = _freeze_holder(path)
    try:
        started = time.monotonic()
        counts = store.count_by_state()  # WAL: readers do not wait for the writer
        read_ms = (time.monotonic() - started) * 1000
        if thaw is not None:
            thawer = subprocess.Popen(["sh", "-c", f"sleep {thaw}; kill -CONT {holder.pid}"])
        waited, outcome = _enqueue(store)
        if thaw is not None:
            thawer.wait()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.wait(10)
        store.close()
    label = "A stopped for good" if thaw is None else f"A continued after {thaw:g} s"
    return [[label, f"{read_ms:.1f} ms ({sum(counts.values())} jobs)", f"{waited:.1f} s",
             outcome]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thaw", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(Path(tmp), args.thaw) + run(Path(tmp), None)
    table("SQLite: B's enqueue while A is frozen holding the write lock",
          ["scenario", "B's read", "B's enqueue waited", "B's enqueue"], rows)


if __name__ == "__main__":
    main()
