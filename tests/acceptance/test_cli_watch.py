"""``conveyor watch``: live progress and every state change, until the jobs are done.

Events are in-process only, so ``watch`` polls the store; these tests change the jobs from
another process's point of view (a worker thread in the test, ``watch`` as a subprocess) and
check that every step shows up.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from conveyor import Conveyor, JobState
from conveyor.ids import short_id
from conveyor.testing import drain
from tests.acceptance.apps.sample import register
from tests.acceptance.cli_helpers import cli_on, running_worker, started_process, wait_until


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return register(make_app())


def test_watch_shows_a_job_paused_resumed_and_completed(db_url: str, app: Conveyor) -> None:
    job = app.enqueue("steps.run", {"steps": 40, "delay": 0.03})
    with started_process("--store", db_url, "watch", job.id) as (watcher, output):
        output.wait_for("watching")
        with running_worker(app):
            wait_until(lambda: app.get(job.id).progress.current_step >= 3, what="progress")
            app.pause(job.id, actor="test", reason="hold on")
            assert app.wait(job.id, timeout=10).state is JobState.PAUSED
            output.wait_for("running -> paused")
            app.resume(job.id, actor="test")
            done = app.wait(job.id, timeout=20, until_paused=False)
        watcher.wait(timeout=20)
        text = output.finish()
    assert watcher.returncode == 0, text
    assert done.state is JobState.COMPLETED
    order = ["watching", "pending -> running", "pause requested", "running -> paused",
             "resume requested", "paused -> running", "running -> completed",
             "all 1 watched job(s) finished: 1 completed"]
    positions = [text.index(line) for line in order]
    assert positions == sorted(positions), text
    assert "hold on" in text
    assert "100% 40/40" in text  # the board's last frame


def test_ctrl_c_stops_watching_and_leaves_the_job_alone(db_url: str, app: Conveyor) -> None:
    job = app.enqueue("math.add", {"a": 1, "b": 2})
    with started_process("--store", db_url, "watch") as (watcher, output):
        output.wait_for("watching")
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=15)
        assert watcher.stderr is not None
        stderr = watcher.stderr.read()
    assert watcher.returncode == 130
    assert stderr.strip() == "stopped watching; the jobs are left as they are"
    assert app.get(job.id).state is JobState.PENDING
    assert [e.action for e in app.history(job.id)] == ["create"]


def test_watch_without_ids_follows_every_unfinished_job(db_url: str, app: Conveyor) -> None:
    finished = app.enqueue("math.add", {"a": 0, "b": 0})
    drain(app)
    # Long enough (3 s) that the watch has listed them before the worker can finish them.
    jobs = [app.enqueue("steps.run", {"steps": 10, "delay": 0.3}) for _ in range(2)]
    with running_worker(app):
        result = cli_on(db_url, "watch", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    assert "all 2 watched job(s) finished: 2 completed" in result.stdout
    assert short_id(finished.id) not in result.stdout
    for job in jobs:
        assert f"{short_id(job.id)}  steps.run" in result.stdout


def test_watch_returns_at_once_when_the_jobs_are_already_finished(
        db_url: str, app: Conveyor) -> None:
    job = app.enqueue("math.add", {"a": 1, "b": 2})
    drain(app)
    started = time.monotonic()
    result = cli_on(db_url, "watch", "--interval", "30", job.id)
    assert time.monotonic() - started < 10  # did not look again after a 30 s interval
    assert result.exit_code == 0
    assert "all 1 watched job(s) finished: 1 completed" in result.stdout
    assert cli_on(db_url, "watch").stdout.strip() == "nothing to watch: no unfinished jobs"


def test_watch_reports_unknown_ids_and_watches_the_rest(db_url: str, app: Conveyor) -> None:
    job = app.enqueue("math.add", {"a": 1, "b": 2})
    drain(app)
    result = cli_on(db_url, "watch", job.id, "no-such-id")
    assert result.exit_code == 3
    assert result.stderr.strip() == "error: No job with id 'no-such-id'"
    assert "finished: 1 completed" in result.stdout
