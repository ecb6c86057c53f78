"""Every user mistake: the documented exit code, one ``error:`` line on stderr, no traceback.

Exit codes: 1 refused (illegal transition), 2 usage error, 3 not found, 4 store unavailable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import drain
from tests.acceptance.apps.sample import register
from tests.acceptance.cli_helpers import (
    SAMPLE_APP,
    assert_one_error_line,
    cli_on,
    run_cli,
    run_process,
)

APP = ("--app", SAMPLE_APP)
MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def jobs(make_app: Callable[..., Conveyor]) -> dict[str, str]:
    """One job per interesting state: pending, completed, failed for good."""
    app = register(make_app())
    completed = app.enqueue("math.add", {"a": 1, "b": 2}).id
    failed = app.enqueue("always.fails").id
    drain(app)
    pending = app.enqueue("math.add", {"a": 1, "b": 2}).id
    assert app.get(failed).state is JobState.FAILED
    return {"pending": pending, "completed": completed, "failed": failed}


REFUSED = [
    (["resume", "{completed}"], "Cannot transition from completed to running"),
    (["pause", "{pending}"], "Cannot transition from pending to paused"),
    (["cancel", "{completed}"], "Cannot transition from completed to cancelled"),
    (["retry", "{failed}"], "attempts exhausted"),
    (["retry", "{pending}"], "Cannot transition from pending to pending"),
    (["requeue", *APP, "{pending}"], "Cannot requeue job"),
]
USAGE = [
    (["ls", "--before", "not an id"], "before must be a job id"),
    (["ls", "--bogus"], "No such option: --bogus"),
    (["ls", "--state", "nope"], "'nope' is not one of"),
    (["ls", "--limit", "0"], "--limit"),
    (["show"], "Missing argument"),
    (["enqueue", "math.add"], "CONVEYOR_APP"),
    (["worker"], "CONVEYOR_APP"),
    (["enqueue", *APP, "no.such.type"], "Unknown job type 'no.such.type'"),
    (["enqueue", *APP, "math.add", "-p", "a=1"], "params do not fit math.add"),
    (["enqueue", *APP, "math.add", "--params", "{bad"], "--params is not valid JSON"),
    (["enqueue", *APP, "math.add", "--params", "[1, 2]"], "--params must be a JSON object"),
    (["enqueue", *APP, "math.add", "-p", "novalue"], "must look like key=value"),
    (["enqueue", *APP, "math.add", "-p", "a=1", "-p", "b=2", "--delay", "-1"],
     "delay must be >= 0"),
    (["enqueue", *APP, "math.add", "-p", "a=1", "-p", "b=2", "--priority", "99999999999"],
     "priority must be a 32-bit integer"),
    (["enqueue", *APP, "echo.params", "-p", "x=" + "y" * (1 << 21)], "params"),
    (["enqueue", "--app", "nocolon", "math.add"], "Malformed --app 'nocolon'"),
    (["enqueue", "--app", "no_such_module_xyz:app", "math.add"],
     "Cannot import 'no_such_module_xyz'"),
    (["enqueue", "--app", "tests.acceptance.apps.sample:nothing", "math.add"],
     "has no attribute 'nothing'"),
    (["enqueue", "--app", "tests.acceptance.apps.sample:not_an_app", "math.add"],
     "not a conveyor.Conveyor app"),
    (["worker", *APP, "--concurrency", "0"], "--concurrency"),
    (["dashboard", "--host", "0.0.0.0", "--insecure-no-auth"],
     "refusing to serve without authentication on 0.0.0.0"),
    (["worker", *APP, "--heartbeat-interval", "60", "--lease-seconds", "30"],
     "heartbeat_interval must be > 0 and shorter than the lease"),
]
NOT_FOUND = [
    (["show", MISSING], f"No job with id '{MISSING}'"),
    (["history", MISSING], "No job with id"),
    (["pause", MISSING], "No job with id"),
    (["ls", "--before", MISSING], "No job with id"),
    (["requeue", *APP, MISSING], "No job with id"),
    (["watch", MISSING], "No job with id"),
]


def fill(args: list[str], jobs: dict[str, str]) -> list[str]:
    """Put the ids of ``jobs`` in place of ``{pending}``, ``{completed}``, ``{failed}``."""
    return [jobs.get(arg[1:-1], arg) for arg in args]


@pytest.mark.parametrize(("args", "fragment"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_illegal_transitions_exit_1(db_url: str, jobs: dict[str, str], args: list[str],
                                    fragment: str) -> None:
    result = cli_on(db_url, *fill(args, jobs))
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, fragment)


@pytest.mark.parametrize(("args", "fragment"), USAGE,
                         ids=[f"{i}-{a[-1][:20]}" for i, (a, _) in enumerate(USAGE)])
def test_usage_errors_exit_2(db_url: str, jobs: dict[str, str], args: list[str],
                             fragment: str) -> None:
    result = cli_on(db_url, *fill(args, jobs))
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, fragment)


@pytest.mark.parametrize(("args", "fragment"), NOT_FOUND, ids=[a[0] for a, _ in NOT_FOUND])
def test_unknown_ids_exit_3(db_url: str, jobs: dict[str, str], args: list[str],
                            fragment: str) -> None:
    result = cli_on(db_url, *args)
    assert result.exit_code == 3
    assert_one_error_line(result.stderr, fragment)


@pytest.mark.parametrize(("url", "fragment"), [
    ("nonsense", "Malformed store URL 'nonsense'"),
    ("mysql://db/jobs", "Unknown store scheme 'mysql'"),
])
def test_malformed_store_urls_exit_2(url: str, fragment: str) -> None:
    result = run_cli("--store", url, "ls")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, fragment)


def corrupt_file(path: Path) -> None:
    path.write_bytes(b"this is not a database, just some bytes " * 100)


def foreign_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.close()


@pytest.mark.parametrize(("prepare", "fragment"), [
    (corrupt_file, "not a SQLite database or is corrupt"),
    (foreign_database, "not a conveyor database (it holds invoices)"),
    (None, "does not exist"),
], ids=["corrupt", "foreign", "missing-folder"])
@pytest.mark.parametrize("command", [["ls"], ["show", MISSING], ["migrate"],
                                     ["worker", *APP, "--burst"]], ids=lambda c: c[0])
def test_an_unusable_store_exits_4(tmp_path: Path, prepare: Callable[[Path], None] | None,
                                   fragment: str, command: list[str]) -> None:
    path = tmp_path / "jobs.db"
    if prepare is None:
        path = tmp_path / "no-such-folder" / "jobs.db"
    else:
        prepare(path)
    before = path.read_bytes() if path.exists() else None
    result = run_cli("--store", f"sqlite:///{path}", *command)
    assert result.exit_code == 4
    assert_one_error_line(result.stderr, fragment)
    assert (path.read_bytes() if path.exists() else None) == before  # nothing was touched


def test_an_unreachable_postgres_exits_4() -> None:
    pytest.importorskip("psycopg")
    result = run_cli("--store", "postgresql://nobody@127.0.0.1:1/jobs", "ls")
    assert result.exit_code == 4
    assert_one_error_line(result.stderr, "Cannot connect to PostgreSQL")


def test_several_ids_exit_with_the_worst_code(db_url: str, jobs: dict[str, str],
                                              make_app: Callable[..., Conveyor]) -> None:
    result = cli_on(db_url, "cancel", jobs["pending"], jobs["completed"], MISSING)
    assert result.exit_code == 3
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    assert "Cannot transition from completed to cancelled" in errors[0]
    assert "No job with id" in errors[1]
    assert "cancel: " in result.stdout
    assert make_app().get(jobs["pending"]).state is JobState.CANCELLED


def test_an_error_in_the_apps_module_is_one_line(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_app_mod.py").write_text("x = 1\nraise ZeroDivisionError('oops')\n")
    monkeypatch.chdir(tmp_path)
    result = run_cli("--store", f"sqlite:///{tmp_path / 'j.db'}", "enqueue", "--app",
                     "broken_app_mod:app", "math.add")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "ZeroDivisionError: oops")
    assert "broken_app_mod.py:2" in result.stderr


# -- the same through a real process: what a shell sees ------------------------------------------
@pytest.mark.parametrize(("args", "code", "fragment"), [
    (["resume", "{completed}"], 1, "error: Cannot transition from completed to running"),
    (["ls", "--bogus"], 2, "No such option"),
    (["enqueue", "math.add"], 2, "CONVEYOR_APP"),
    (["show", MISSING], 3, "No job with id"),
], ids=["refused", "bad-option", "no-app", "not-found"])
def test_errors_in_a_real_process(db_url: str, jobs: dict[str, str], args: list[str], code: int,
                                  fragment: str) -> None:
    result = run_process("--store", db_url, *fill(args, jobs))
    assert result.returncode == code
    assert_one_error_line(result.stderr, fragment)
    assert result.stdout == ""


def test_a_corrupt_store_in_a_real_process_exits_4(tmp_path: Path) -> None:
    corrupt_file(tmp_path / "bad.db")
    result = run_process("--store", f"sqlite:///{tmp_path / 'bad.db'}", "ls", script=True)
    assert result.returncode == 4
    assert_one_error_line(result.stderr, "corrupt")
