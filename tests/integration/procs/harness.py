"""The test side of the crash and race tests: processes on one SQLite file, and what they did.

:class:`Procs` starts worker (and reaper) processes with ``subprocess.Popen`` from the project
root, so ``tests`` is importable in them, each with its stderr in a file of the test's folder;
``close()`` kills whatever is still alive, and the tests call it from a fixture, so no process
outlives a test whatever happens in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from conveyor import Conveyor, HistoryEntry, Job
from tests.integration import subprocs
from tests.integration.procs.jobs import EVENTS_ENV, Event, build_app, read_events
from tests.integration.subprocs import wait_until

__all__ = ["TIMINGS", "Proc", "Procs", "running", "steps_of", "wait_until"]

#: Worker timings of these tests: a lost worker is noticed within about two seconds.
TIMINGS: dict[str, object] = {
    "lease": 1.5, "heartbeat": 0.3, "reap": 0.3, "poll": 0.05, "progress": 0.05,
}


class Proc(subprocs.Proc):
    """A process on the test's SQLite file."""

    def problems(self) -> list[str]:
        """Error lines, tracebacks and lock errors the process printed."""
        return [line for line in self.lines()
                if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
                or "database is locked" in line or "Exception in thread" in line]


@dataclass
class Procs:
    """The processes of one test, the app the test itself uses, and the events file."""

    folder: Path
    url: str = ""
    started: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.db = self.folder / "jobs.db"
        self.url = f"sqlite:///{self.db}"
        self.events_file = self.folder / "events.log"
        self.app: Conveyor = build_app(self.url)
        self.app.store  # noqa: B018 - create the schema before any worker opens the file

    def spawn(self, name: str, module: str, *args: str) -> Proc:
        count = sum(p.name == name for p in self.started)
        stem = f"{name}.{count}" if count else name
        env = {**os.environ, EVENTS_ENV: str(self.events_file), "PYTHONUNBUFFERED": "1"}
        proc = subprocs.spawn(Proc, name, stem, self.folder,
                              ["-m", module, "--url", self.url, *args], env=env,
                              keep_stdout=True)
        self.started.append(proc)
        return proc

    def worker(self, name: str, *, burst: bool = False, **options: object) -> Proc:
        """Start ``tests.integration.procs.worker`` with the short timings (or ``options``)."""
        args = ["--name", name, *subprocs.option_args({**TIMINGS, **options})]
        if burst:
            args.append("--burst")
        return self.spawn(name, "tests.integration.procs.worker", *args)

    def events(self, job_id: str | None = None, kind: str | None = None) -> list[Event]:
        return read_events(self.events_file, job_id, kind)

    def job(self, job_id: str) -> Job:
        return self.app.get(job_id)

    def history(self, job_id: str) -> list[HistoryEntry]:
        return self.app.history(job_id)

    def wait_job(self, job_id: str, condition: Callable[[Job], object], timeout: float,
                 what: str) -> Job:
        """Poll the job until ``condition(job)``; fail with the job and the processes' logs."""
        seen: list[Job] = []

        def check() -> object:
            seen[:] = [self.job(job_id)]
            return condition(seen[0])

        wait_until(check, timeout, what, report=lambda: f"job: {seen}\n{self.report()}")
        return seen[0]

    def freeze(self, proc: Proc, attempts: int = 50) -> None:
        """SIGSTOP ``proc`` at a moment it holds no write lock on the database.

        A process stopped inside a write transaction would block every other writer for as
        long as it is stopped (SQLite has one writer at a time); that is SQLite's nature, not
        what these tests are about, so such a moment is skipped: continue, and stop again.
        """
        for _ in range(attempts):
            proc.send(signal.SIGSTOP)
            conn = sqlite3.connect(self.db, timeout=0.5, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                return
            except sqlite3.OperationalError:
                proc.send(signal.SIGCONT)
                time.sleep(0.005)
            finally:
                conn.close()
        raise AssertionError(f"could not stop {proc.name} outside a write transaction")

    def report(self) -> str:
        """The tail of every process's stderr, for assertion messages."""
        return subprocs.report(self.started, tail=20)

    def close(self) -> None:
        """Kill every process still alive (stopped ones too), then close the app."""
        for proc in self.started:
            proc.kill()
        self.app.close()


@contextlib.contextmanager
def running(folder: Path) -> Iterator[Procs]:
    """A :class:`Procs` for one test, always cleaned up."""
    procs = Procs(folder)
    try:
        yield procs
    finally:
        procs.close()


def steps_of(history: list[HistoryEntry]) -> list[tuple[str, str]]:
    """The history as ``(action, to_state)`` pairs, creation included."""
    return [(h.action, h.to_state.value) for h in history]
