"""The app and job types of the crash and race tests' processes.

Every job records its side effects in the events file named by ``$CONVEYOR_TEST_EVENTS``, one
line per event, written with a single ``write()`` on an ``O_APPEND`` descriptor: lines from
concurrent processes never interleave, and a line survives its writer being SIGKILLed the
moment after. A line is ``<kind> <job id> <attempt> <pid> <value>``:

- ``start``: a run began; ``value`` is the step it starts from (0, or the saved checkpoint);
- ``step``: a run finished step ``value`` and is about to checkpoint it (only with ``trace``);
- ``done``: a run reached the end of the job function; ``value`` is the step it started from;
- ``run``: ``crash.suicide`` began a run (and is about to kill its own process).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import Backoff, Conveyor, JobContext
from tests.integration.subprocs import append_line, open_append, read_records

EVENTS_ENV = "CONVEYOR_TEST_EVENTS"
STEPS = "crash.steps"
SUICIDE = "crash.suicide"
QUICK = "crash.quick"
#: Retries come back almost at once, so a retried job runs again within the test's time.
FAST_BACKOFF = Backoff(base=0.05, factor=1.0, max_delay=0.05, jitter=0.5)


@dataclass(frozen=True)
class Event:
    """One line of the events file."""

    kind: str
    job_id: str
    attempt: int
    pid: int
    value: int

    @classmethod
    def parse(cls, line: str) -> Event:
        kind, job_id, attempt, pid, value = line.split()
        return cls(kind, job_id, int(attempt), int(pid), int(value))


def read_events(path: Path, job_id: str | None = None, kind: str | None = None) -> list[Event]:
    """The events recorded so far, oldest first, optionally of one job and one kind."""
    return [e for e in read_records(path, Event.parse)
            if (job_id is None or e.job_id == job_id) and (kind is None or e.kind == kind)]


class _Recorder:
    """Appends event lines to ``$CONVEYOR_TEST_EVENTS`` (opened on first use)."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def __call__(self, kind: str, ctx: JobContext, value: int) -> None:
        if self._fd is None:
            path = os.environ.get(EVENTS_ENV)
            if not path:
                return
            self._fd = open_append(path)
        append_line(self._fd, kind, ctx.job.id, ctx.job.attempt, os.getpid(), value)


def build_app(url: str) -> Conveyor:
    """The test app on ``url``: the same job types in the test process and in every worker."""
    app = Conveyor(url)
    record = _Recorder()

    @app.job(STEPS, max_attempts=3, backoff=FAST_BACKOFF)
    def steps(ctx: JobContext, steps: int, step_s: float = 0.05, checkpoint: bool = True,
              trace: bool = False) -> dict[str, Any]:
        """``steps`` steps of ``step_s`` seconds, checkpointing each (unless told not to)."""
        start = int(ctx.checkpoint_data.get("i", 0))
        record("start", ctx, start)
        ctx.progress(start, steps)
        for i in range(start, steps):
            time.sleep(step_s)
            ctx.progress(i + 1)
            if trace:
                record("step", ctx, i + 1)
            if checkpoint:
                ctx.checkpoint({"i": i + 1, "pid": os.getpid()})
        record("done", ctx, start)
        return {"pid": os.getpid(), "worker": ctx.job.worker_id, "attempt": ctx.job.attempt,
                "start": start}

    @app.job(SUICIDE, max_attempts=2, backoff=FAST_BACKOFF)
    def suicide(ctx: JobContext) -> None:
        """Kills the process running it, every time: a poison job."""
        record("run", ctx, 0)
        os.kill(os.getpid(), signal.SIGKILL)

    @app.job(QUICK, max_attempts=5, backoff=FAST_BACKOFF)
    def quick(ctx: JobContext, seconds: float) -> dict[str, Any]:
        """Sleeps ``seconds`` without a checkpoint, then returns who ran it."""
        time.sleep(seconds)
        record("done", ctx, 0)
        return {"pid": os.getpid(), "worker": ctx.job.worker_id, "attempt": ctx.job.attempt}

    return app
