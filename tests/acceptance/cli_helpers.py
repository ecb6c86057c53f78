"""Helpers for the command-line acceptance tests: run the real entry point, in-process or not.

In-process runs go through Typer's ``CliRunner`` on :data:`conveyor.cli.cli`, the same object
the ``conveyor`` script calls, so they cover the error handling of ``ConveyorGroup`` too.
Subprocess runs use ``python -m conveyor`` or the installed ``conveyor`` script, from the
repository root so that ``--app tests.acceptance.apps.sample:app`` imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner, Result

from conveyor import Conveyor
from conveyor.cli import cli
from conveyor.worker import Worker

REPO = Path(__file__).resolve().parents[2]
SAMPLE_APP = "tests.acceptance.apps.sample:app"
# the variables a developer's shell may set that would change what the tests see
_CLEARED = ("CONVEYOR_STORE", "CONVEYOR_APP", "FORCE_COLOR", "TTY_COMPATIBLE",
            "SAMPLE_APP_STORE")
CLEAN_ENV: dict[str, str | None] = {**dict.fromkeys(_CLEARED), "NO_COLOR": "1",
                                    "COLUMNS": "200"}


def run_cli(*args: str, env: dict[str, str | None] | None = None,
            input: str | None = None) -> Result:  # noqa: A002 - CliRunner.invoke's name
    """Run ``conveyor ARGS`` in this process (``input``: what is typed on stdin); a bug (not an
    exit) fails the test loudly."""
    saved_path = list(sys.path)  # --app puts the working folder on sys.path
    try:
        result = CliRunner().invoke(cli, list(args), env={**CLEAN_ENV, **(env or {})},
                                    input=input)
    finally:
        sys.path[:] = saved_path
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def cli_on(db_url: str, *args: str) -> Result:
    """``conveyor --store DB_URL ARGS`` in this process."""
    return run_cli("--store", db_url, *args)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def conveyor_command(script: bool = False) -> list[str]:
    """The installed console script, or ``python -m conveyor``."""
    if script:
        return [str(Path(sys.executable).parent / "conveyor")]
    return [sys.executable, "-m", "conveyor"]


def run_process(*args: str, script: bool = False, timeout: float = 60,
                **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command line as a real process and wait for it."""
    return subprocess.run([*conveyor_command(script), *args], cwd=REPO, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=timeout, check=False)


class LineReader:
    """Collects a process's stdout lines in a thread, so a test can wait for one."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._stream = process.stdout
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 15) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: any(text in ln for ln in self.lines),
                                          timeout):
                raise AssertionError(f"{text!r} never appeared in: {self.text}")

    def finish(self) -> str:
        self._thread.join(timeout=10)
        return self.text

    @property
    def text(self) -> str:
        return "".join(self.lines)


@contextmanager
def started_process(*args: str, **env: str) -> Iterator[tuple[subprocess.Popen[str],
                                                              LineReader]]:
    """Start the command line as a process, its stdout read line by line; killed if still
    running at the end, and its pipes closed."""
    with subprocess.Popen([*conveyor_command(), *args], cwd=REPO, env=subprocess_env(**env),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        reader = LineReader(process)
        try:
            yield process, reader
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            reader.finish()


@contextmanager
def running_worker(app: Conveyor, concurrency: int = 2) -> Iterator[Worker]:
    """A worker with short timings in a background thread of the test, stopped afterwards."""
    worker = app.worker(concurrency=concurrency, handle_signals=False, poll_interval=0.05,
                        progress_interval=0.05, heartbeat_interval=1.0, lease_seconds=10.0)
    thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=15)


def wait_until(condition: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
    """Poll ``condition``; the store lives in another thread or process, so there is no event
    to wait on from here."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def assert_one_error_line(stderr: str, fragment: str) -> None:
    """A user mistake: exactly one ``error:`` line naming the problem, and no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert fragment in lines[0], stderr
    assert "Traceback" not in stderr
