"""What the SQLite (``procs``) and PostgreSQL (``pgprocs``) process tests share.

A test process starts workers as real child processes (``python -m ...`` from the project root,
so ``tests`` is importable in them), each with its stderr in a file of the test's folder, and
reads what they did from files they append to. Only the store-specific parts (the job types,
the worker's options, the servers) live in ``procs`` and ``pgprocs``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from conveyor import Conveyor
from conveyor.worker import WorkerStats

ROOT = Path(__file__).resolve().parents[2]
#: The start of a log record, as the worker processes format them ...
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ ")
#: ... and of one at WARNING or above.
PROBLEM_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (WARNING|ERROR|CRITICAL) ")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

T = TypeVar("T")
P = TypeVar("P", bound="Proc")


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               interval: float = 0.02, report: Callable[[], str] | None = None) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            extra = f"\n{report()}" if report is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


# -- the files the job functions append to ----------------------------------------------------

def open_append(path: Path | str) -> int:
    """A descriptor for one-``write()``-per-line appends: lines from concurrent processes never
    interleave, and a line survives its writer being SIGKILLed the moment after."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def append_line(fd: int, *fields: object) -> None:
    os.write(fd, (" ".join(str(f) for f in fields) + "\n").encode())


def read_records(path: Path, parse: Callable[[str], T]) -> list[T]:
    """Every non-blank line of ``path`` parsed, oldest first (none while it does not exist)."""
    if not path.exists():
        return []
    return [parse(line) for line in path.read_text().splitlines() if line.strip()]


# -- child processes ----------------------------------------------------------------------------

@dataclass
class Proc:
    """One child process and the files its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    stderr: Path
    stdout: Path | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def worker_id(self) -> str:
        return f"{self.name}:{self.pid}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def err(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def out(self) -> str:
        exists = self.stdout is not None and self.stdout.exists()
        return self.stdout.read_text(errors="replace") if exists and self.stdout else ""

    def lines(self) -> list[str]:
        return self.err().splitlines()

    def send(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout`` seconds."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.popen.wait(timeout)
        return None

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM; the exit code (None: still running) and how long it took to exit."""
        sent = time.monotonic()
        self.send(signal.SIGTERM)
        code = self.wait_exit(timeout)
        return code, time.monotonic() - sent

    def kill(self) -> None:
        """SIGKILL (and SIGCONT, should it be stopped), then reap it."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
                os.kill(self.pid, signal.SIGCONT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def tracebacks(self) -> list[str]:
        """Every uncaught exception the process printed, each with its traceback."""
        found: list[list[str]] = []
        inside = False
        for line in self.lines():
            if line.startswith(("Traceback", "Exception in")):
                if not inside:
                    found.append([])
                inside = True
            elif LOG_LINE.match(line):
                inside = False
            if inside:
                found[-1].append(line)
        return ["\n".join(block) for block in found]


def spawn(kind: type[P], name: str, stem: str, folder: Path, argv: Sequence[str], *,
          env: dict[str, str] | None = None, keep_stdout: bool = False) -> P:
    """Start ``python ARGV`` from the project root, its stderr (and stdout) in ``folder``."""
    stderr = folder / f"{stem}.err"
    stdout = folder / f"{stem}.out" if keep_stdout else None
    with stderr.open("wb") as err, (stdout or Path(os.devnull)).open("wb") as out:
        popen = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return kind(name, popen, stderr, stdout)


def option_args(options: dict[str, object]) -> list[str]:
    """``{"shutdown_grace": 5}`` as ``["--shutdown-grace", "5"]``."""
    args: list[str] = []
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def report(procs: Iterable[Proc], tail: int) -> str:
    """The tail of every process's stderr, for assertion messages."""
    parts = []
    for proc in procs:
        last = "\n    ".join(proc.lines()[-tail:])
        parts.append(f"--- {proc.stderr.name} (pid {proc.pid}, exit {proc.popen.poll()}):"
                     f"\n    {last}")
    return "\n".join(parts)


# -- the worker process's side ------------------------------------------------------------------

def worker_parser(doc: str | None, *, concurrency: int, lease: float, heartbeat: float,
                  reap: float, poll: float) -> argparse.ArgumentParser:
    """The options every test worker process takes, with this store's defaults."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--concurrency", type=int, default=concurrency)
    parser.add_argument("--lease", type=float, default=lease)
    parser.add_argument("--heartbeat", type=float, default=heartbeat)
    parser.add_argument("--reap", type=float, default=reap)
    parser.add_argument("--poll", type=float, default=poll)
    parser.add_argument("--progress", type=float, default=0.05)
    parser.add_argument("--shutdown-grace", type=float, default=5.0)
    parser.add_argument("--cancel-grace", type=float, default=2.0)
    parser.add_argument("--batch-wait", type=float, default=0.0)
    return parser


def run_worker(app: Conveyor, args: argparse.Namespace, log: logging.Logger, *,
               burst: bool = False) -> WorkerStats:
    """Run a worker of ``app`` with ``args``' timings (id ``<name>:<pid>``) and close the app."""
    worker = app.worker(
        concurrency=args.concurrency, lease_seconds=args.lease,
        heartbeat_interval=args.heartbeat, reap_interval=args.reap,
        poll_interval=args.poll, progress_interval=args.progress,
        shutdown_grace=args.shutdown_grace, cancel_grace=args.cancel_grace,
        batch_wait=args.batch_wait, worker_id=f"{args.name}:{os.getpid()}")
    log.info("worker %s ready", worker.worker_id)
    try:
        stats = worker.run(burst=burst)
    finally:
        app.close()
    log.info("worker %s exits: %s", worker.worker_id, stats)
    return stats


def log_to_stderr() -> None:
    """One line per record, so the tests can count and match them."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
