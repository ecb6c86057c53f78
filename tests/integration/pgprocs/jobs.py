"""The job types of the chaos tests' worker processes.

``chaos.work`` sleeps a few milliseconds per step and checkpoints after each, resuming from the
last checkpoint when it is run again (after a pause, a lost worker or a retry). When a run
reaches the end it appends one line to the completions file (``O_APPEND``: one ``write()``
per line, so lines from concurrent processes never interleave, and a line survives its writer
being SIGKILLed the moment after). The tests compare that file with the jobs' histories to
prove that no job ran to completion twice except where a worker died in between.

``chaos.noop`` does nothing: the tests enqueue it to measure pickup latency.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import Backoff, Conveyor, JobContext
from tests.integration.subprocs import append_line, open_append, read_records

WORK = "chaos.work"
NOOP = "chaos.noop"
#: Generous: a job may be lost with its worker, or fail on a dropped connection, a few times.
MAX_ATTEMPTS = 20
#: Short retries, so that a retried job is back within the test's time.
BACKOFF = Backoff(base=0.1, factor=2.0, max_delay=1.0, jitter=0.5)


class Flaky(Exception):
    """What a ``fail_once`` job raises on its first attempt."""


@dataclass(frozen=True)
class Completion:
    """One line of the completions file: a run of ``chaos.work`` that reached its end."""

    job_id: str
    attempt: int
    worker_id: str
    pid: int
    resumed_from: int

    @classmethod
    def parse(cls, line: str) -> Completion:
        job_id, attempt, worker_id, pid, resumed_from = line.split()
        return cls(job_id, int(attempt), worker_id, int(pid), int(resumed_from))


def read_completions(path: Path) -> list[Completion]:
    return read_records(path, Completion.parse)


def build_app(url: str, *, completions: Path | None = None, **store_options: Any) -> Conveyor:
    """The chaos app on ``url``; ``store_options`` go to the store (schema, pool sizes)."""
    app = Conveyor(url, **store_options)
    fd = open_append(completions) if completions is not None else None

    @app.job(WORK, max_attempts=MAX_ATTEMPTS, backoff=BACKOFF)
    def work(ctx: JobContext, steps: int, step_ms: float = 2.0,
             fail_once: bool = False) -> dict[str, int]:
        start = int(ctx.checkpoint_data.get("i", 0))
        ctx.progress(start, steps)
        for i in range(start, steps):
            time.sleep(step_ms / 1000)
            ctx.advance()
            ctx.checkpoint({"i": i + 1})
        if fail_once and ctx.job.attempt == 0:
            raise Flaky("fails on its first attempt")
        if fd is not None:
            append_line(fd, ctx.job.id, ctx.job.attempt, ctx.job.worker_id, os.getpid(), start)
        return {"steps": steps}

    @app.job(NOOP)
    def noop(ctx: JobContext) -> None:
        return None

    return app
