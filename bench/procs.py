"""Worker processes for the benchmarks, and the stores they run on.

A benchmark's workers are separate processes (``python -m bench.procs``), each an ordinary
``app.run_worker()``, so that work crosses a process boundary as it does for users.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor import Conveyor, JobContext, JobState

NOOP = "bench.noop"
ROOT = Path(__file__).resolve().parents[1]


def build_app(url: str, schema: str | None) -> Conveyor:
    options: dict[str, Any] = {"schema": schema} if schema else {}
    app = Conveyor(url, **options)

    @app.job(NOOP)
    def noop(ctx: JobContext) -> None:
        return None

    return app


#: The job functions for a process pool's children, which import them by path (never opened).
CHILD_APP = build_app("sqlite:///unused-by-children.db", None)
CHILD_APP_PATH = "bench.procs:CHILD_APP"


@dataclass
class Target:
    """One store under test; ``fresh()`` gives a new, empty store location each time."""

    name: str
    pg_url: str | None = None
    sqlite_options: str = ""
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="conveyor-b-")))
    schemas: list[str] = field(default_factory=list)

    def fresh(self) -> tuple[str, str | None]:
        if self.pg_url is None:
            name = f"{uuid.uuid4().hex[:8]}.db"
            return f"sqlite:///{self.folder / name}{self.sqlite_options}", None
        return self.pg_url, self.new_schema()

    def new_schema(self) -> str:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.schemas.append(schema)
        return schema

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


@contextlib.contextmanager
def workers(app: Conveyor, count: int, slots: int, *, idle: bool,
            pool: str = "thread", census: Path | None = None) -> Iterator[list[int]]:
    """``count`` worker processes of ``slots`` slots on ``app``'s store; yields their pids.

    With ``idle``, waits until they are idle (on PostgreSQL: until all LISTEN). They are
    stopped with SIGTERM at the end. With ``census`` (one process), it appends its Python
    heap's counts to that file on SIGUSR1 (:func:`_census_on_signal`).
    """
    schema = getattr(app.store, "schema", None)
    folder = Path(tempfile.mkdtemp(prefix="conveyor-bw-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(count):
            args = [sys.executable, "-m", "bench.procs", "--url", app.url,
                    "--ready", str(folder / f"ready-{i}"), "--concurrency", str(slots),
                    "--pool", pool]
            if schema is not None:
                args += ["--schema", schema]
            if census is not None:
                args += ["--census", str(census)]
            procs.append(subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while not all((folder / f"ready-{i}").exists() for i in range(count)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("bench worker processes did not start")
            time.sleep(0.02)
        if idle:
            _wait_idle(app, count)
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
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


def wait_done(app: Conveyor, count: int, timeout: float = 300.0) -> None:
    """Polls the store's counts (a scan of the whole jobs table) four times a second: rates
    come from the jobs' own timestamps, so a coarse poll costs no accuracy, and a fine one
    took a share of the cores the workers are measured on (11 ms a call at 20,000 jobs on
    PostgreSQL)."""
    deadline = time.monotonic() + timeout
    while app.counts()[JobState.COMPLETED] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not done in {timeout}s: {app.counts()}")
        time.sleep(0.25)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _census_on_signal(path: Path) -> None:
    """On SIGUSR1, after a full collection, append what the Python heap holds to ``path``:
    ``sys.getallocatedblocks()`` (every object and buffer the interpreter's allocator holds,
    strings and numbers included) and the objects the collector tracks. Read by
    bench_memory while the worker runs: a worker's RSS also moves with the C allocator and
    SQLite's page cache, these counts only with what Python code keeps."""
    import gc
    import signal

    def census(signum: int, frame: object) -> None:
        gc.collect()
        line = f"{sys.getallocatedblocks()} {len(gc.get_objects())}\n"
        with path.open("a") as out:
            out.write(line)

    signal.signal(signal.SIGUSR1, census)


def main() -> None:
    """A worker process: opens the store, says it is ready, works until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema")
    parser.add_argument("--ready", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pool", choices=["thread", "process"], default="thread")
    parser.add_argument("--census", help="on SIGUSR1, append the live Python heap to this file")
    args = parser.parse_args()
    if args.census:
        _census_on_signal(Path(args.census))
    app = build_app(args.url, args.schema)
    _ = app.store
    Path(args.ready).touch()
    pooling: dict[str, Any] = ({"pool": "process", "app_path": CHILD_APP_PATH}
                               if args.pool == "process" else {})
    try:
        app.run_worker(concurrency=args.concurrency, **pooling)
    finally:
        app.close()


if __name__ == "__main__":
    main()
