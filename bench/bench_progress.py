"""The cost of ``ctx.advance()`` in a tight loop, and how many progress writes it causes.

A job calls ``advance()`` a million times; we time the calls and count the store writes the
worker's monitor makes meanwhile (coalesced to a few per second).

    .venv/bin/python -m bench.bench_progress [--calls 1000000] [--docs PAGE]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import table, write_sections
from conveyor import Conveyor, JobContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--docs", type=Path, help="rewrite this page's generated section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = Conveyor(f"sqlite:///{Path(tmp) / 'progress.db'}")
        timings: dict[str, float] = {}

        @app.job("bench.advance")
        def advance(ctx: JobContext, calls: int) -> None:
            ctx.progress(0, calls)
            start = time.perf_counter()
            for _ in range(calls):
                ctx.advance()
            timings["advance"] = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(calls):
                ctx.progress(i, calls)
            timings["progress"] = time.perf_counter() - start

        writes = 0
        original = app.store.save_progress

        def counting(*a: Any, **k: Any) -> Any:
            nonlocal writes
            writes += 1
            return original(*a, **k)

        app.store.save_progress = counting  # type: ignore[method-assign]
        job = app.enqueue("bench.advance", {"calls": args.calls})
        worker = app.worker(concurrency=1, handle_signals=False, progress_interval=0.25)
        thread = threading.Thread(target=worker.run, kwargs={"burst": True})
        thread.start()
        thread.join()
        done = app.get(job.id)
        empty = time.perf_counter()
        for _ in range(args.calls):
            pass
        loop = time.perf_counter() - empty
        app.close()
    per_call = {k: (v - loop) / args.calls * 1e9 for k, v in timings.items()}
    calls = table(f"Progress calls in a tight loop ({args.calls:,} calls each)",
          ["call", "ns per call (loop overhead removed)", "total s"],
          [(f"ctx.{k}()", f"{per_call[k]:.0f}", f"{timings[k]:.2f}") for k in timings])
    store = table("What reached the store", ["progress writes", "final step", "state"],
          [(writes, f"{done.progress.current_step:,}", done.state.value)])
    if args.docs:
        write_sections(args.docs, {"progress": calls + "\n\n" + store})


if __name__ == "__main__":
    main()
