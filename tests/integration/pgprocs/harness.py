"""The test side of the chaos tests: worker processes and private PostgreSQL servers.

Everything started here is stopped by ``close()``, which the tests call from fixtures, so no
worker process or server outlives a test whatever happens in it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from conveyor import Conveyor, JobState
from tests.integration import subprocs
from tests.integration.pgprocs.jobs import NOOP
from tests.integration.subprocs import PROBLEM_LINE, ROOT

PG_USER = "conveyor-pg"


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               interval: float = 0.05) -> None:
    """:func:`subprocs.wait_until`, polling less often: a check here is often a query."""
    subprocs.wait_until(condition, timeout, what, interval)


def admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def drop_schema(url: str, schema: str) -> None:
    with admin(url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- worker processes ----------------------------------------------------------------------

class WorkerProc(subprocs.Proc):
    """A chaos worker process."""

    def problems(self, since_line: int = 0) -> list[str]:
        """WARNING/ERROR log lines and uncaught tracebacks, from line ``since_line`` on."""
        return [line for line in self.lines()[since_line:]
                if PROBLEM_LINE.match(line) or line.startswith(("Traceback", "Exception in"))]


@dataclass
class Fleet:
    """Worker processes of one test, each a ``tests.integration.pgprocs.worker``."""

    url: str
    schema: str
    folder: Path
    options: dict[str, object] = field(default_factory=dict)
    procs: dict[str, WorkerProc] = field(default_factory=dict)
    retired: list[WorkerProc] = field(default_factory=list)

    def start(self, name: str, **overrides: object) -> WorkerProc:
        if name in self.procs:
            self.retired.append(self.procs.pop(name))
        args = ["-m", "tests.integration.pgprocs.worker", "--url", self.url,
                "--schema", self.schema, "--name", name,
                *subprocs.option_args({**self.options, **overrides})]
        generation = sum(p.name == name for p in self.retired)
        proc = subprocs.spawn(WorkerProc, name, f"{name}.{generation}", self.folder, args)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> WorkerProc:
        """SIGKILL: the process dies on the spot, holding its jobs' leases."""
        proc = self.procs[name]
        proc.popen.kill()
        proc.popen.wait(10)
        return proc

    def terminate_all(self, timeout: float) -> dict[str, tuple[int | None, float]]:
        """SIGTERM every live worker; returns each one's exit code and seconds to exit."""
        return self.terminate(list(self.procs), timeout)

    def terminate(self, names: list[str],
                  timeout: float) -> dict[str, tuple[int | None, float]]:
        """SIGTERM these workers (those alive); each one's exit code and seconds to exit."""
        live = [self.procs[name] for name in names if self.procs[name].alive()]
        sent = time.monotonic()
        for proc in live:
            proc.popen.send_signal(signal.SIGTERM)
        results: dict[str, tuple[int | None, float]] = {}
        while True:
            now = time.monotonic()
            for proc in live:
                if proc.name not in results and not proc.alive():
                    results[proc.name] = (proc.popen.returncode, now - sent)
            if len(results) == len(live) or now - sent > timeout:
                break
            time.sleep(0.02)
        for proc in live:  # still running: hung
            results.setdefault(proc.name, (None, time.monotonic() - sent))
        return results

    def close(self) -> None:
        """Kill whatever is still running (the end of every test, passed or failed)."""
        for proc in [*self.procs.values(), *self.retired]:
            proc.kill()

    def report(self) -> str:
        """The tail of every worker's stderr, for assertion messages."""
        return subprocs.report([*self.retired, *self.procs.values()], tail=15)


def listeners(conn: psycopg.Connection[Any], prefix: str = "chaos-") -> set[str]:
    """The application names (``chaos-<worker>``) with a LISTEN connection open right now."""
    rows = conn.execute(
        "SELECT DISTINCT application_name FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN %%' "
        "AND application_name LIKE %s", (prefix + "%",)).fetchall()
    return {row[0] for row in rows}


# -- measurements -----------------------------------------------------------------------------

def pickup_latencies(app: Conveyor, count: int, timeout: float = 30.0) -> list[float]:
    """Enqueue ``count`` no-op jobs one at a time, each once the previous one has finished.

    A job's pickup latency is ``started_at - created_at``, both set by the database's clock
    (the insert's and the claim's transaction time), with the workers idle and waiting.
    """
    latencies = []
    for _ in range(count):
        job = app.enqueue(NOOP)
        done = app.wait(job.id, timeout=timeout)
        assert done.state is JobState.COMPLETED, done
        assert done.started_at is not None
        latencies.append((done.started_at - done.created_at).total_seconds())
    return latencies


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


# -- private servers -------------------------------------------------------------------------

def _bindir() -> Path:
    for folder in ("/usr/local/bin", "/usr/lib/postgresql/15/bin"):
        pg_ctl = Path(folder) / "pg_ctl"
        if pg_ctl.exists():
            return pg_ctl.resolve().parent
    found = shutil.which("pg_ctl")
    if found is None:
        raise AssertionError("pg_ctl not found: install PostgreSQL (scripts/pg-test-server)")
    return Path(found).resolve().parent


class PrivateServer:
    """A throwaway PostgreSQL of one test (scripts/pg-test-server), free to restart or reshape.

    It lives in a folder under /tmp that the server's owner can reach (pytest's tmp_path is
    private to root). Since the tests restart it with ``-m immediate``, it runs with
    ``synchronous_commit = on``: the shared test server trades that away for speed, and would
    then lose the last few hundred milliseconds of acknowledged commits in a crash, which is
    the server's durability setting, not something conveyor could make up for.
    """

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="conveyor-chaos-pg-", dir="/tmp"))
        self.folder.chmod(0o755)
        self.data = self.folder / "data"
        self.url = ""

    def start(self) -> str:
        out = subprocess.run([str(ROOT / "scripts" / "pg-test-server"), "start",
                              str(self.folder)], capture_output=True, text=True, check=False,
                             timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"pg-test-server start failed: {out.stderr}")
        self.url = out.stdout.strip().splitlines()[-1]
        self.configure(synchronous_commit="on")
        return self.url

    def configure(self, **settings: object) -> None:
        """ALTER SYSTEM each setting and reload (settings that need a restart need one)."""
        with admin(self.url) as conn:
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")

    def pg_ctl(self, *args: str, timeout: float = 120.0) -> None:
        command = [str(_bindir() / "pg_ctl"), "-D", str(self.data), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_USER, "--", *command]
        # stdout/stderr to a file, never a pipe: the restarted postmaster inherits them.
        with (self.folder / "pg_ctl.out").open("ab") as out:
            done = subprocess.run(command, cwd=self.folder, stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=out, timeout=timeout, check=False)
        if done.returncode != 0:
            log = (self.folder / "server.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"pg_ctl {' '.join(args)} failed ({done.returncode}):\n{log}")

    def restart(self, mode: str) -> None:
        """``pg_ctl restart -m fast|immediate``, waiting until it accepts connections again."""
        self.pg_ctl("-l", str(self.folder / "server.log"), "-w", "-t", "60", "restart",
                    "-m", mode)

    def stop_for(self, seconds: float) -> None:
        """Stop the server (``-m fast``), stay down ``seconds``, start it again."""
        self.pg_ctl("-w", "-t", "60", "stop", "-m", "fast")
        time.sleep(seconds)
        self.pg_ctl("-l", str(self.folder / "server.log"), "-w", "-t", "60", "start")

    def close(self) -> None:
        subprocess.run([str(ROOT / "scripts" / "pg-test-server"), "stop", str(self.folder)],
                       capture_output=True, check=False, timeout=120)
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def private_server() -> Iterator[PrivateServer]:
    server = PrivateServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
