"""The command line doing its job: enqueue, list, show, history, control verbs, stores, help.

Most runs are in-process through the real entry point; a few are true subprocesses, to check
what a user's shell sees (the installed script, ``python -m conveyor``, signals).
"""

from __future__ import annotations

import getpass
import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, JobState
from conveyor.cli import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STORE,
    EXIT_USAGE,
)
from conveyor.stores.sqlite.store import LATEST_VERSION as SQLITE_LATEST
from conveyor.testing import drain
from tests.acceptance.apps.sample import register
from tests.acceptance.cli_helpers import (
    REPO,
    SAMPLE_APP,
    cli_on,
    run_cli,
    run_process,
    running_worker,
    started_process,
    wait_until,
)

COMMANDS = ["worker", "enqueue", "ls", "show", "history", "pause", "resume", "cancel", "retry",
            "requeue", "watch", "dashboard", "migrate", "demo"]


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    """The sample app on the test's database, for setting up and checking jobs."""
    return register(make_app())


def enqueue_json(db_url: str, *args: str) -> dict[str, Any]:
    result = cli_on(db_url, "enqueue", "--app", SAMPLE_APP, *args, "--json")
    assert result.exit_code == 0, result.output
    job: dict[str, Any] = json.loads(result.stdout)
    return job


def me() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


# -- help ---------------------------------------------------------------------------------------
def test_help_lists_every_command_the_exit_codes_and_the_environment() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
    for text in ("Exit codes", "3 job not found", "4 store unavailable", "CONVEYOR_STORE",
                 "CONVEYOR_APP", "--install-completion"):
        assert text in result.stdout


def test_the_docs_and_the_help_give_the_same_exit_codes() -> None:
    doc = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    documented = {int(line.split("|")[1]) for line in doc.splitlines()
                  if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert documented == {EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_STORE,
                          EXIT_INTERRUPTED}
    for code in documented:
        assert f"{code} " in EXIT_CODES


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert "Traceback" not in result.output


def test_no_arguments_prints_the_help() -> None:
    result = run_cli()
    assert result.exit_code == 2
    assert "Usage" in result.stdout
    assert "enqueue" in result.stdout


# -- enqueue and read -----------------------------------------------------------------------------
def test_enqueue_prints_the_job_and_ls_show_find_it(db_url: str) -> None:
    human = cli_on(db_url, "enqueue", "--app", SAMPLE_APP, "math.add", "-p", "a=1", "-p", "b=2")
    assert human.exit_code == 0
    assert "enqueued" in human.stdout
    assert "math.add" in human.stdout
    job = enqueue_json(db_url, "math.add", "--param", "a=3", "--param", "b=4")
    assert job["state"] == "pending"
    assert job["params"] == {"a": 3, "b": 4}

    listed = cli_on(db_url, "ls")
    assert listed.exit_code == 0
    assert job["id"] in listed.stdout
    assert "pending" in listed.stdout
    shown = json.loads(cli_on(db_url, "show", job["id"], "--json").stdout)
    assert shown["id"] == job["id"]
    assert shown["legal_actions"] == ["cancel"]


def test_param_values_are_json_when_they_parse_and_strings_otherwise(db_url: str) -> None:
    job = enqueue_json(
        db_url, "echo.params", "--params", '{"base": 1, "n": 0}', "-p", "n=3", "-p", "s=hello",
        "-p", "l=[1, 2]", "-p", "t=true", "-p", 'q="7"', "-p", "x=NaN", "-p", "e=", "-p",
        "kv=a=b")
    assert job["params"] == {"base": 1, "n": 3, "s": "hello", "l": [1, 2], "t": True,
                             "q": "7", "x": "NaN", "e": "", "kv": "a=b"}


def test_enqueue_options_reach_the_job(db_url: str) -> None:
    job = enqueue_json(db_url, "math.add", "-p", "a=1", "-p", "b=1", "--queue", "slow",
                       "--priority", "5", "--delay", "120", "--max-attempts", "1")
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("slow", 5, 1)
    listed = cli_on(db_url, "ls", "--queue", "slow")
    assert "runs in 1 min" in listed.stdout or "runs in 2 min" in listed.stdout


def test_ls_filters_newest_first_and_pages_with_a_cursor(db_url: str, app: Conveyor) -> None:
    ids = [app.enqueue("math.add", {"a": i, "b": i}).id for i in range(3)]
    ids.append(app.enqueue("steps.run", {"steps": 1}, queue="other").id)
    ids.append(app.enqueue("math.add", {"a": 9, "b": 9}).id)
    app.cancel(ids[0])

    def listed(*args: str) -> dict[str, Any]:
        result = cli_on(db_url, "ls", "--json", *args)
        assert result.exit_code == 0, result.output
        page: dict[str, Any] = json.loads(result.stdout)
        return page

    assert [j["id"] for j in listed()["jobs"]] == ids[::-1]
    assert [j["id"] for j in listed("--state", "cancelled")["jobs"]] == [ids[0]]
    assert [j["id"] for j in listed("-s", "cancelled", "-s", "pending", "-t", "steps.run")[
        "jobs"]] == [ids[3]]
    assert [j["id"] for j in listed("--queue", "other")["jobs"]] == [ids[3]]

    first = listed("--limit", "2")
    assert [j["id"] for j in first["jobs"]] == [ids[4], ids[3]]
    assert first["next_before"] == ids[3]
    second = listed("--limit", "2", "--before", ids[3])
    assert [j["id"] for j in second["jobs"]] == [ids[2], ids[1]]
    last = listed("--limit", "2", "--before", ids[1])
    assert [j["id"] for j in last["jobs"]] == [ids[0]]
    assert last["next_before"] is None

    human = cli_on(db_url, "ls", "--limit", "2", "--type", "math.add")
    assert f"next page: conveyor ls --type math.add --limit 2 --before {ids[2]}" in human.stdout
    assert "no jobs" in cli_on(db_url, "ls", "--state", "running").stdout


def test_show_and_history_describe_a_finished_job(db_url: str, app: Conveyor) -> None:
    done = enqueue_json(db_url, "steps.run", "-p", "steps=3", "-p", "delay=0")
    failed = app.enqueue("always.fails")
    drain(app)

    shown = cli_on(db_url, "show", done["id"], failed.id)
    assert shown.exit_code == 0
    for text in (done["id"], "completed", "100%", '"resumed_from": 0', "requeue",
                 failed.id, "no retry left", "RuntimeError: this job always fails",
                 "Traceback"):  # the job's traceback, shown as data
        assert text in shown.stdout
    lines = cli_on(db_url, "show", done["id"], failed.id, "--json").stdout.splitlines()
    assert [json.loads(line)["state"] for line in lines] == ["completed", "failed"]

    history = json.loads(cli_on(db_url, "history", done["id"], "--json").stdout)
    assert [e["action"] for e in history] == ["create", "start", "complete"]
    assert history[0]["actor"] == me()
    human = cli_on(db_url, "history", done["id"]).stdout
    assert "pending -> running" in human
    assert "running -> completed" in human


# -- control verbs --------------------------------------------------------------------------------
def test_pause_resume_and_cancel_a_running_job(db_url: str, app: Conveyor) -> None:
    job = app.enqueue("steps.run", {"steps": 200, "delay": 0.02})
    with running_worker(app):
        wait_until(lambda: app.get(job.id).progress.current_step >= 2, what="progress")
        paused = cli_on(db_url, "pause", job.id, "--reason", "maintenance")
        assert paused.exit_code == 0, paused.output
        assert "pause requested" in paused.stdout
        wait_until(lambda: app.get(job.id).state is JobState.PAUSED, what="the pause")
        at = app.get(job.id).progress.current_step

        resumed = json.loads(cli_on(db_url, "resume", job.id, "--json").stdout)
        assert resumed["resume_requested"] is True
        wait_until(lambda: app.get(job.id).progress.current_step > at, what="the resume")

        cancelled = cli_on(db_url, "cancel", job.id, "-r", "not needed")
        assert cancelled.exit_code == 0
        assert "cancel requested" in cancelled.stdout
        wait_until(lambda: app.get(job.id).state is JobState.CANCELLED, what="the cancel")

    entries = app.history(job.id)
    requests = [(e.action, e.actor, e.reason) for e in entries if e.actor == me()]
    assert requests == [("request_pause", me(), "maintenance"), ("request_resume", me(), ""),
                        ("request_cancel", me(), "not needed")]
    assert app.get(job.id).result is None


def test_several_ids_are_each_processed(db_url: str, app: Conveyor) -> None:
    jobs = [app.enqueue("math.add", {"a": 1, "b": 2}) for _ in range(3)]
    result = cli_on(db_url, "cancel", *(j.id for j in jobs), "--json")
    assert result.exit_code == 0
    assert [json.loads(line)["state"] for line in result.stdout.splitlines()] == [
        "cancelled"] * 3


def test_requeue_works_on_the_store_alone(db_url: str, app: Conveyor) -> None:
    failed = app.enqueue("always.fails")
    drain(app)
    result = cli_on(db_url, "requeue", failed.id, "--json")
    assert result.exit_code == 0, result.output
    copy = json.loads(result.stdout)
    assert copy["requeued_from"] == failed.id
    assert copy["state"] == "pending" and copy["attempt"] == 0


def test_requeue_makes_a_linked_copy(db_url: str, app: Conveyor) -> None:
    failed = app.enqueue("always.fails")
    drain(app)
    result = cli_on(db_url, "requeue", "--app", SAMPLE_APP, failed.id, "--json")
    assert result.exit_code == 0, result.output
    copy = json.loads(result.stdout)
    assert (copy["state"], copy["requeued_from"], copy["attempt"]) == ("pending", failed.id, 0)
    human = cli_on(db_url, "--app", SAMPLE_APP, "requeue", failed.id, "--keep-checkpoint")
    assert f"requeue {failed.id} ->" in human.stdout


# -- stores and apps ------------------------------------------------------------------------------
def test_migrate_prints_the_schema_version(db_url: str) -> None:
    assert f"schema version {SQLITE_LATEST}" in cli_on(db_url, "migrate").stdout
    assert json.loads(cli_on(db_url, "migrate", "--json").stdout) == {
        "store": db_url, "schema_version": SQLITE_LATEST}


def test_the_default_store_is_conveyor_db_in_the_working_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("ls")
    assert result.exit_code == 0
    assert (tmp_path / "conveyor.db").exists()


def test_the_store_comes_from_the_environment(db_url: str, app: Conveyor) -> None:
    job = app.enqueue("math.add", {"a": 1, "b": 2})
    result = run_cli("show", job.id, env={"CONVEYOR_STORE": db_url})
    assert result.exit_code == 0
    assert job.id in result.stdout


def test_the_apps_own_store_is_used_unless_a_store_is_given(tmp_path: Path) -> None:
    own, other = f"sqlite:///{tmp_path / 'own.db'}", f"sqlite:///{tmp_path / 'other.db'}"
    args = ("enqueue", "--app", SAMPLE_APP, "math.add", "-p", "a=1", "-p", "b=2")
    assert run_process(*args, SAMPLE_APP_STORE=own).returncode == 0
    assert run_process("--store", other, *args, SAMPLE_APP_STORE=own).returncode == 0
    assert run_process(*args, SAMPLE_APP_STORE=own, CONVEYOR_STORE=other).returncode == 0
    counts = [len(json.loads(run_process("--store", url, "ls", "--json").stdout)["jobs"])
              for url in (own, other)]
    assert counts == [1, 2]


# -- the worker and the real entry points ---------------------------------------------------------
def test_worker_burst_runs_the_jobs_then_exits(db_url: str, app: Conveyor) -> None:
    jobs = [app.enqueue("math.add", {"a": i, "b": 1}) for i in range(3)]
    result = cli_on(db_url, "worker", "--app", SAMPLE_APP, "--burst", "-c", "2",
                    "--poll-interval", "0.05", "--heartbeat-interval", "1")
    assert result.exit_code == 0, result.output
    assert [app.get(j.id).result for j in jobs] == [1, 2, 3]
    assert "pending -> running" in result.stderr
    assert "stopped" in result.stderr


def test_a_worker_process_stops_cleanly_on_sigterm(db_url: str, app: Conveyor) -> None:
    job = app.enqueue("math.add", {"a": 2, "b": 2})
    with started_process("--store", db_url, "worker", "--app", SAMPLE_APP, "--poll-interval",
                         "0.1", "--heartbeat-interval", "1") as (worker, _):
        wait_until(lambda: app.get(job.id).state is JobState.COMPLETED, what="the job")
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
        assert worker.stderr is not None
        stderr = worker.stderr.read()
    assert worker.returncode == 0, stderr
    assert "received SIGTERM" in stderr
    assert "Traceback" not in stderr


def test_the_dashboard_command_serves_until_interrupted(db_url: str) -> None:
    pytest.importorskip("uvicorn")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with started_process("--store", db_url, "dashboard", "--port", str(port),
                         CONVEYOR_TOKEN="t" * 32) as (server, output):
        output.wait_for(f"conveyor dashboard on http://127.0.0.1:{port}/")
        wait_until(lambda: _answers(port), what="the dashboard to answer")
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)
        assert server.stderr is not None
        stderr = server.stderr.read()
    assert server.returncode == 130  # interrupted, as documented
    assert "Traceback" not in stderr


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("script", [True, False], ids=["conveyor-script", "python-m"])
def test_the_real_entry_points_run(db_url: str, app: Conveyor, script: bool) -> None:
    job = app.enqueue("math.add", {"a": 1, "b": 2})
    result = run_process("--store", db_url, "show", job.id, "--json", script=script)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == job.id
    assert result.stderr == ""
