"""The command line of flow control: unique keys, queues, waiting-job edits, schedules."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from conveyor import Conveyor, JobState
from conveyor.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from tests.acceptance.apps.sample import register
from tests.acceptance.cli_helpers import SAMPLE_APP, cli_on


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return register(make_app())


def test_enqueue_with_a_unique_key_prints_the_holder_or_refuses(db_url: str,
                                                                 app: Conveyor) -> None:
    args = ("enqueue", "--app", SAMPLE_APP, "math.add", "-p", "a=1", "-p", "b=2",
            "--unique-key", "sum:1")
    first = cli_on(db_url, *args, "--json")
    again = cli_on(db_url, *args, "--json")
    assert (first.exit_code, again.exit_code) == (EXIT_OK, EXIT_OK), again.output
    assert json.loads(again.stdout)["id"] == json.loads(first.stdout)["id"]
    assert json.loads(again.stdout)["existing"] is True
    assert "already enqueued" in cli_on(db_url, *args).stdout
    raised = cli_on(db_url, *args, "--on-conflict", "raise")
    assert raised.exit_code == EXIT_REFUSED and "already holds" in raised.stderr
    assert "Traceback" not in raised.output
    bad = cli_on(db_url, *args[:-1], "bad\x1bkey")
    assert bad.exit_code == EXIT_USAGE and "Traceback" not in bad.output
    assert len(app.list()) == 1


def test_enqueue_depends_on_and_show_lists_both_directions(db_url: str,
                                                           app: Conveyor) -> None:
    up = app.enqueue("math.add", {"a": 1, "b": 2})
    made = cli_on(db_url, "enqueue", "--app", SAMPLE_APP, "math.add", "-p", "a=1", "-p", "b=2",
                  "--depends-on", up.id, "--json")
    assert made.exit_code == EXIT_OK, made.output
    down = json.loads(made.stdout)
    assert down["waiting_on"] == 1
    shown = cli_on(db_url, "show", up.id, "--json")
    assert [j["id"] for j in json.loads(shown.stdout)["downstream"]] == [down["id"]]
    assert up.id in cli_on(db_url, "show", down["id"]).stdout
    missing = cli_on(db_url, "enqueue", "--app", SAMPLE_APP, "math.add", "-p", "a=1",
                     "-p", "b=2", "--depends-on", "00000000-0000-4000-8000-000000000000")
    assert missing.exit_code != EXIT_OK and "names no stored job" in missing.stderr
    assert "Traceback" not in missing.output and len(app.list()) == 2


def test_queue_pause_resume_and_list(db_url: str, app: Conveyor) -> None:
    app.enqueue("math.add", {"a": 1, "b": 2}, queue="mail")
    paused = cli_on(db_url, "queue", "pause", "mail", "-r", "smtp down")
    assert paused.exit_code == EXIT_OK and "paused" in paused.stdout
    listed = [json.loads(line) for line in cli_on(db_url, "queues", "--json").stdout.split("\n")
              if line]
    assert [(q["name"], q["paused"], q["reason"], q["counts"]) for q in listed] == [
        ("mail", True, "smtp down", {"pending": 1})]
    assert listed[0]["actor"].startswith("cli:")
    assert "mail" in cli_on(db_url, "queues").stdout
    assert cli_on(db_url, "queue", "resume", "mail").exit_code == EXIT_OK
    assert not app.queues()[0].paused
    assert cli_on(db_url, "queue", "pause", "").exit_code == EXIT_USAGE


def test_run_now_and_reschedule_a_waiting_job(db_url: str, app: Conveyor) -> None:
    job = app.enqueue("math.add", {"a": 1, "b": 2}, delay=3600)
    moved = cli_on(db_url, "reschedule", job.id, "--priority", "5", "--delay", "7200")
    assert moved.exit_code == EXIT_OK, moved.output
    assert app.get(job.id).priority == 5 and app.get(job.id).run_at > job.run_at
    assert cli_on(db_url, "run-now", job.id).exit_code == EXIT_OK
    assert app.get(job.id).run_at < job.run_at
    assert [h.action for h in app.history(job.id)][-2:] == ["reschedule", "run_now"]
    assert cli_on(db_url, "reschedule", job.id, "--run-at", "soon").exit_code == EXIT_USAGE
    app.cancel(job.id)
    refused = cli_on(db_url, "run-now", job.id)
    assert refused.exit_code == EXIT_REFUSED and "not pending" in refused.stderr
    assert app.get(job.id).state is JobState.CANCELLED


def test_schedules_lists_the_apps_schedules_with_their_next_run(db_url: str) -> None:
    listed = cli_on(db_url, "schedules", "--app", "tests.acceptance.apps.scheduled:app",
                    "--json")
    assert listed.exit_code == EXIT_OK, listed.output
    (schedule,) = [json.loads(line) for line in listed.stdout.split("\n") if line]
    assert (schedule["name"], schedule["cron"], schedule["timezone"]) == (
        "nightly", "0 3 * * *", "Europe/Paris")
    assert schedule["next_run"] is not None and schedule["last_tick"] is None
    assert "nightly" in cli_on(db_url, "schedules", "--app",
                               "tests.acceptance.apps.scheduled:app").stdout


def test_queue_limit_sets_lists_and_shows_why_a_job_is_held(db_url: str,
                                                            app: Conveyor) -> None:
    jobs = [app.enqueue("math.add", {"a": n, "b": 0}, queue="mail") for n in range(2)]
    for bad in (("--rate", "5/d"), ("--max-running", "0")):
        refused = cli_on(db_url, "queue", "limit", "mail", *bad)
        assert refused.exit_code == EXIT_USAGE and "Traceback" not in refused.output
    assert app.limits() == []
    done = cli_on(db_url, "queue", "limit", "mail", "--max-running", "1", "-r", "quota")
    assert done.exit_code == EXIT_OK and "1 running" in done.stdout, done.output
    (queue,) = [json.loads(line)
                for line in cli_on(db_url, "queues", "--json").stdout.splitlines() if line]
    assert (queue["max_running"], queue["limit_reason"]) == (1, "quota")
    assert queue["limit_actor"].startswith("cli:")
    assert "mail" in cli_on(db_url, "limits").stdout
    (claimed,) = app.store.claim("w", queues=[], job_types=["math.add"], limit=5,
                                 lease_seconds=60)
    other = next(j for j in jobs if j.id != claimed.id)
    shown = json.loads(cli_on(db_url, "show", other.id, "--json").stdout)
    assert shown["held"] == "held: 1/1 running for queue:mail"
    assert "held: 1/1 running for queue:mail" in cli_on(db_url, "show", other.id).stdout
    assert cli_on(db_url, "queue", "limit", "mail").exit_code == EXIT_OK
    assert app.limits() == []
