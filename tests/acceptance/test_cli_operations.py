"""Operations from a shell: ``prune``, ``workers`` (a real worker process registering, stopped
on request, another killed and shown gone), ``check`` exit codes, JSON log lines."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import drain

from .apps.sample import register
from .cli_helpers import (
    SAMPLE_APP,
    assert_one_error_line,
    cli_on,
    started_process,
    wait_until,
)


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return register(make_app())


def _workers(db_url: str) -> dict[str, dict[str, Any]]:
    result = cli_on(db_url, "workers", "--json")
    assert result.exit_code == 0, result.output
    return {w["id"]: w for w in map(json.loads, result.stdout.splitlines())}


def test_prune_counts_then_deletes_old_finished_jobs(db_url: str, app: Conveyor,
                                                     tmp_path: Path) -> None:
    for i in range(3):
        app.enqueue("math.add", {"a": i, "b": 1})
    app.cancel(app.enqueue("math.add", {"a": 0, "b": 0}).id)
    drain(app)
    fresh = app.enqueue("math.add", {"a": 9, "b": 9})
    drain(app)
    with sqlite3.connect(tmp_path / "jobs.db") as conn:  # the first four finished 8 days ago
        conn.execute("UPDATE jobs SET finished_at = finished_at - 8 * 86400 WHERE id <> ?",
                     (fresh.id,))

    dry = cli_on(db_url, "prune", "--older-than", "7d", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would delete 4 jobs (3 completed, 0 failed, 1 cancelled)" in dry.stdout
    assert len(app.list(limit=10)) == 5

    done = cli_on(db_url, "prune", "--older-than", "7d", "--state", "completed", "--json")
    assert json.loads(done.stdout) == {"dry_run": False, "total": 3,
                                       "by_state": {"completed": 3}}
    assert {j.state for j in app.list(limit=10)} == {JobState.COMPLETED, JobState.CANCELLED}
    assert_one_error_line(cli_on(db_url, "prune", "--state", "running").stderr, "running")
    assert cli_on(db_url, "prune", "--older-than", "soon").exit_code == 2


def test_check_exit_codes_and_no_password_shown(db_url: str, tmp_path: Path) -> None:
    assert cli_on(db_url, "migrate").exit_code == 0
    ready = cli_on(db_url, "check")
    assert (ready.exit_code, "ready (schema version" in ready.stdout) == (0, True)

    behind = cli_on(f"sqlite:///{tmp_path / 'empty.db'}", "check")  # never migrated
    assert behind.exit_code == 1
    assert_one_error_line(behind.stderr, "run 'conveyor migrate'")

    gone = cli_on("postgresql://ops:hunter2secret@127.0.0.1:1/jobs", "check")
    assert gone.exit_code == 4
    assert_one_error_line(gone.stderr, "not")
    assert "hunter2secret" not in gone.stderr + gone.stdout
    assert cli_on("nonsense", "check").exit_code == 2


def test_a_worker_process_registers_logs_json_and_stops_on_request(
        db_url: str, app: Conveyor) -> None:
    args = ("--store", db_url, "worker", "--app", SAMPLE_APP, "--poll-interval", "0.05",
            "--heartbeat-interval", "0.2", "--lease-seconds", "1.5", "--log-format", "json")
    with started_process(*args) as (worker, _), started_process(*args) as (victim, _):
        wait_until(lambda: len(_workers(db_url)) == 2, what="both workers registered")
        seen = _workers(db_url)
        assert {w["status"] for w in seen.values()} == {"running"}
        assert {w["pid"] for w in seen.values()} == {worker.pid, victim.pid}
        listing = cli_on(db_url, "workers")
        assert all(worker_id in listing.stdout for worker_id in seen)

        victim.send_signal(signal.SIGKILL)  # its heartbeat stops: gone after its lease (1.5 s)
        victim.wait(timeout=10)
        job = app.enqueue("always.fails", {})  # run by the worker left
        wait_until(lambda: app.get(job.id).state is JobState.FAILED, what="the job")
        (stopped,) = [w for w in seen.values() if w["pid"] == worker.pid]
        asked = cli_on(db_url, "workers", "stop", stopped["id"])
        assert asked.exit_code == 0, asked.output
        worker.wait(timeout=20)
        assert worker.stderr is not None
        stderr = worker.stderr.read()
        assert worker.returncode == 0, stderr
        wait_until(lambda: {w["status"] for w in _workers(db_url).values()} == {
            "stopped", "gone"}, what="one worker stopped, the killed one gone")

    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is JSON
    assert all({"ts", "level", "message", "worker"} <= set(line) for line in lines)
    assert all(line["worker"] == stopped["id"] for line in lines)
    assert any("stop requested by an operator" in line["message"] for line in lines)
    failed = next(line for line in lines if line.get("event") == "JobFailed")
    assert (failed["job_id"], failed["job_type"], failed["attempt"], failed["state"],
            failed["level"]) == (job.id, "always.fails", 0, "failed", "info")
    assert failed["duration"] >= 0
    assert_one_error_line(cli_on(db_url, "workers", "stop", stopped["id"]).stderr,
                          "stopped")
    assert cli_on(db_url, "workers", "stop", "nobody").exit_code == 3
