"""Job types for the process-pool tests, on an app the job processes import by its path.

The tests' own apps (on their stores) register the same functions with :func:`register`; the
children only need the functions, so ``app`` here never opens its store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from conveyor import AsyncJobContext, Conveyor, JobContext

PATH = "tests.integration.procpool.jobs:app"


def mark(folder: str, name: str, text: str = "") -> None:
    """Tell the test something happened (it waits for the file)."""
    tmp = Path(folder) / f".{name}"
    tmp.write_text(text)
    tmp.rename(Path(folder) / name)


def pid(ctx: JobContext) -> int:
    ctx.log(f"ran in {os.getpid()}", level="warning")
    return os.getpid()


def spin(ctx: JobContext, folder: str) -> None:
    """CPU-bound, never checkpoints, ignores cancel: only a kill stops it."""
    mark(folder, "spin", str(os.getpid()))
    n = 0
    while True:
        n += 1


def stuck(ctx: JobContext, folder: str, name: str = "stuck") -> None:
    """Stuck in C (a sleep no exception can interrupt)."""
    mark(folder, name, str(os.getpid()))
    time.sleep(600)


def segv(ctx: JobContext, folder: str) -> str:
    """Crashes its interpreter on its first run (once the other job runs)."""
    if ctx.job.attempt == 0:
        while not (Path(folder) / "other-running").exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGSEGV)
    return f"survived attempt {ctx.job.attempt}"


def other(ctx: JobContext, folder: str) -> int:
    """Runs beside ``segv``: starts before the crash, checkpoints after the retry."""
    mark(folder, "other-running")
    while not (Path(folder) / "segv-done").exists():
        time.sleep(0.01)
    ctx.checkpoint({"after": "crash"})
    return os.getpid()


def steps(ctx: JobContext, folder: str, total: int = 4) -> dict[str, Any]:
    """Resumes from its checkpoint; at step 2 waits for a pause request, then checkpoints."""
    start = int(ctx.checkpoint_data.get("next", 0))
    for i in range(start, total):
        ctx.progress(i + 1, total)
        if i == 1 and not (Path(folder) / "at-step-2").exists():
            mark(folder, "at-step-2", str(os.getpid()))
            while not ctx.pause_requested:
                time.sleep(0.01)
        ctx.checkpoint({"next": i + 1, "pid": os.getpid()})
    return {"resumed_from": start, "pid": os.getpid()}


async def async_steps(ctx: AsyncJobContext, n: int) -> int:
    for i in range(n):
        ctx.advance()
        await ctx.checkpoint({"done": i + 1})
        await asyncio.sleep(0)
    logging.getLogger("procpool.jobs").warning("async job ran %d steps", n)
    return os.getpid()


def register(app: Conveyor) -> Conveyor:
    for func in (pid, spin, stuck, segv, other, steps, async_steps):
        app.job(func.__name__)(func)
    return app


app = register(Conveyor())
