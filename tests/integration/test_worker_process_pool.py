"""The process pool through a real worker: job processes are started, reused, replaced, killed.

Each job runs in a child process of its slot (``pool="process"``); the children import the job
functions from ``tests/integration/procpool/jobs.py`` by its path. Jobs tell the test where they
are with marker files; the test waits on those and on the stored job, never on a fixed sleep.
Starting a child costs a few tenths of a second, so each test starts as few as it can.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor import Backoff, JobState
from conveyor.errors import ConfigurationError
from tests.conftest import AppFactory
from tests.integration.procpool import jobs
from tests.integration.test_worker_helpers import (
    TINY,
    WAIT,
    WorkerThread,
    actions,
    assert_history_chain,
    running_worker,
    wait_state,
    wait_until,
)

S = JobState
POOL: dict[str, Any] = {"pool": "process", "app_path": jobs.PATH, "concurrency": 1}
#: A child's start (a fresh interpreter, then the app's import) on a loaded machine.
START = 30.0


def marker(folder: Path, name: str) -> str:
    path = folder / name
    wait_until(path.exists, START, f"marker {name}")
    return path.read_text()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_forced_cancel_timeout_and_shutdown_kill_their_processes(
        make_app: AppFactory, tmp_path: Path) -> None:
    """A CPU-bound loop that ignores its cancel, and a call stuck in C past its timeout: no
    thread could be stopped there, a process is; the slot's next job gets a fresh one, and a
    job that will not pause at shutdown is released and its process killed."""
    app = jobs.register(make_app())
    folder = {"folder": str(tmp_path)}
    later = Backoff(base=60)  # a failed run is retried a minute later: after this test
    spinning = app.enqueue("spin", folder, max_attempts=1)
    stuck = app.enqueue("stuck", folder, timeout=1, backoff=later)
    with running_worker(app, **{**POOL, "concurrency": 2}) as worker:
        spinner, sleeper = int(marker(tmp_path, "spin")), int(marker(tmp_path, "stuck"))
        assert os.getpid() not in (spinner, sleeper)
        app.cancel(spinning.id)
        cancelled = wait_state(app, spinning.id, S.CANCELLED, WAIT)
        wait_state(app, stuck.id, S.PENDING, WAIT, attempt=1)
        wait_until(lambda: gone(spinner) and gone(sleeper), WAIT, "both processes to be gone")
        held = app.enqueue("stuck", {**folder, "name": "held"}, backoff=later)
        fresh = int(marker(tmp_path, "held"))
    assert fresh not in (spinner, sleeper, os.getpid())
    wait_until(lambda: gone(fresh), WAIT, "the held job's process to be gone")
    assert assert_history_chain(app, spinning.id)[-1].reason == (
        "stopped after the cancel grace period")
    assert cancelled.finished_at is not None
    history = assert_history_chain(app, stuck.id)
    assert actions(history) == ["create", "start", "fail", "retry"]
    assert history[2].reason == "timed out"
    released = assert_history_chain(app, held.id)
    assert [h.reason for h in released if h.action == "fail"] == ["worker lost (shutdown)"]
    assert app.get(held.id).state is S.PENDING
    assert (worker.stats.cancelled, worker.stats.retried, worker.stats.released) == (1, 1, 1)


def test_a_segfault_fails_only_its_job_which_is_retried(make_app: AppFactory,
                                                         tmp_path: Path) -> None:
    app = jobs.register(make_app())
    folder = {"folder": str(tmp_path)}
    other = app.enqueue("other", folder)
    crasher = app.enqueue("segv", folder, max_attempts=2, backoff=TINY)
    with running_worker(app, **{**POOL, "concurrency": 2}) as worker:
        survived = wait_state(app, crasher.id, S.COMPLETED, START * 2)
        assert app.get(other.id).state is S.RUNNING  # its slot never stopped
        (tmp_path / "segv-done").touch()
        finished = wait_state(app, other.id, S.COMPLETED, WAIT)
    assert survived.result == "survived attempt 1"
    history = assert_history_chain(app, crasher.id)
    assert actions(history) == ["create", "start", "fail", "retry", "start", "complete"]
    assert history[2].reason == "its process was killed by SIGSEGV"
    assert (finished.attempt, survived.attempt) == (0, 1)  # only the crasher was retried
    assert finished.progress.last_checkpoint == {"after": "crash"}
    assert worker.stats.retried == 1
    assert worker.stats.completed == 2


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_progress_checkpoint_pause_and_resume_in_a_child(store: str, tmp_path: Path) -> None:
    from tests.conftest import app_on

    with app_on(store, tmp_path, "procpool") as app:
        jobs.register(app)
        job = app.enqueue("steps", {"folder": str(tmp_path)})
        with running_worker(app, **POOL):
            child = int(marker(tmp_path, "at-step-2"))
            # ctx.progress() alone, no checkpoint: the worker wrote what the child sent
            wait_until(lambda: app.get(job.id).progress.current_step == 2, WAIT, "progress 2")
            app.pause(job.id)
            paused = wait_state(app, job.id, S.PAUSED, WAIT)
            app.resume(job.id)
            done = wait_state(app, job.id, S.COMPLETED, WAIT)
    assert paused.progress.last_checkpoint == {"next": 2, "pid": child}
    assert (paused.progress.current_step, paused.progress.total_steps) == (2, 4)
    assert done.result == {"resumed_from": 2, "pid": child}  # the same child, reused
    assert (done.progress.current_step, done.progress.last_checkpoint["next"]) == (4, 4)


def test_children_are_reused_and_replaced_after_max_jobs(
        make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    app = jobs.register(make_app())
    ids = [app.enqueue("pid").id for _ in range(2)]
    ids.append(app.enqueue("async_steps", {"n": 2}).id)
    runner = WorkerThread(app, burst=True, **POOL, max_jobs_per_child=2).start()
    runner.join(START * 3)
    done = [app.get(i) for i in ids]
    pids = [j.result for j in done]
    assert [j.state for j in done] == [S.COMPLETED] * 3
    assert pids[0] == pids[1] != pids[2]  # reused for two jobs, then replaced
    assert os.getpid() not in pids
    assert done[2].progress.last_checkpoint == {"done": 2}  # an async job, in its own loop
    assert done[2].progress.current_step == 2
    # the job's log record, logged in its child, reached the worker's logging
    assert [r.getMessage() for r in caplog.records if r.name == "procpool.jobs"] == [
        "async job ran 2 steps"]
    # ... and is kept with its job, as is what the job wrote with ctx.log()
    assert [line.message for line in app.logs(ids[2])] == ["async job ran 2 steps"]
    assert [(line.level, line.message) for line in app.logs(ids[0])] == [
        ("WARNING", f"ran in {pids[0]}")]


def test_process_pool_options_are_checked(make_app: AppFactory) -> None:
    app = make_app()

    @app.job("local")
    def local(ctx: object) -> None:
        return None

    with pytest.raises(ConfigurationError, match=r"app_path='package\.module:attribute'"):
        app.worker(pool="process")  # this app is in no importable module
    with pytest.raises(ConfigurationError, match="does not register job type"):
        app.worker(pool="process", app_path=jobs.PATH)
    with pytest.raises(ConfigurationError, match="'thread' or 'process'"):
        app.worker(pool="processes")
    with pytest.raises(ConfigurationError, match="pool='process' only"):
        app.worker(max_jobs_per_child=3)
    with pytest.raises(ConfigurationError, match="cannot import"):
        app.worker(pool="process", app_path="no_such_module_here:app")
    found = jobs.app.worker(pool="process")  # found among the imported modules
    assert found.app_path == jobs.PATH
    assert "tests.integration.procpool.jobs" in sys.modules
