"""Job data that tries to act on the terminal, and input that tried to crash the CLI.

Names cannot hold control characters any more (the core refuses them), but rows written
before that, or by hand, can: they are written straight into the store here. Reasons, params,
results and errors may hold them legitimately. Every command that shows data must print them
as visible escapes, never raw, and never read Rich markup in them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobContext
from conveyor.cli import EXIT_USAGE
from conveyor.payload import MAX_DEPTH
from conveyor.testing import drain
from tests.acceptance.cli_helpers import SAMPLE_APP, cli_on, run_cli
from tests.conftest import pg_test_url

ESC_TITLE = "\x1b]0;pwned\x07"
HOSTILE = f"{ESC_TITLE}\x1b[2K\x9b31m\u202eexe.jpg\u2066[red]x[/red][link=http://evil]y[/link]"
RAW = ["\x1b", "\x07", "\x9b", "\u202e", "\u2066"]
ESCAPED = ["\\x1b]0;pwned\\x07", "\\x9b31m", "\\u202eexe.jpg", "\\u2066", "[red]x[/red]",
           "[link=http://evil]y[/link]"]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    schema = f"hostile_{uuid.uuid4().hex[:12]}"
    base = pg_test_url()
    yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _write(url: str, sql: str, args: tuple[object, ...]) -> None:
    """Write a row the core would refuse, as an older version or a hand edit could."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            conn.execute(sql, args)
            conn.commit()
        return
    import psycopg

    base, _, schema = url.rpartition("schema=")
    with psycopg.connect(base.rstrip("?&"), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(sql.replace("?", "%s"), args)


@pytest.fixture
def hostile(store_url: str) -> tuple[str, list[str]]:
    """A completed, a failed and a pending job whose every shown field is hostile."""
    app = Conveyor(store_url)

    @app.job("ok")
    def ok(ctx: JobContext, data: str = "") -> dict[str, str]:
        return {"echo": HOSTILE}

    @app.job("bad", max_attempts=0)
    def bad(ctx: JobContext, data: str = "") -> None:
        raise RuntimeError(HOSTILE)

    done = app.enqueue("ok", {"data": HOSTILE})
    failed = app.enqueue("bad", {"data": HOSTILE})
    drain(app)
    waiting = app.enqueue("ok", {"data": HOSTILE})
    ids = [done.id, failed.id, waiting.id]
    for job_id in ids:
        _write(store_url, "UPDATE jobs SET queue = ?, job_type = ? WHERE id = ?",
               (HOSTILE, HOSTILE, job_id))
        _write(store_url, "UPDATE job_history SET actor = ?, reason = ? WHERE job_id = ?",
               (HOSTILE, HOSTILE, job_id))
    app.close()
    return store_url, ids


def _assert_safe(output: str) -> None:
    for char in RAW:
        assert char not in output, f"raw {char!r} reached the terminal"


@pytest.mark.parametrize("command", [["ls"], ["show"], ["history"], ["watch"],
                                     ["show", "--json"], ["ls", "--json"]])
def test_hostile_job_data_is_shown_escaped(hostile: tuple[str, list[str]],
                                           command: list[str]) -> None:
    url, ids = hostile
    done, failed, _ = ids
    args = {"ls": [], "show": [done, failed], "history": [failed], "watch": [done, failed]}
    # table cells not wrapped, so the escapes read in one piece
    wide: dict[str, str | None] = {"COLUMNS": "3000"}
    result = run_cli("--store", url, *command, *args[command[0]], env=wide)
    assert result.exit_code == 0, result.output
    _assert_safe(result.output)
    if "--json" in command:
        for line in result.stdout.splitlines():  # escaped, yet the same values once parsed
            document = json.loads(line)
            for job in document.get("jobs", [document]):
                assert job["job_type"] == job["queue"] == HOSTILE
                assert job["params"] == {"data": HOSTILE}
    else:
        for text in ESCAPED:
            assert text in result.stdout, (text, result.stdout)


def test_hostile_reason_in_a_control_verb_and_its_error(hostile: tuple[str, list[str]]) -> None:
    url, ids = hostile
    _, _, waiting = ids
    result = cli_on(url, "cancel", waiting, "--reason", HOSTILE)
    assert result.exit_code == 0, result.output
    _assert_safe(result.output)
    result = run_cli("--store", url, "history", waiting, env={"COLUMNS": "3000"})
    _assert_safe(result.output)
    assert "\\x1b]0;pwned\\x07" in result.stdout
    refused = cli_on(url, "cancel", waiting, "--reason", HOSTILE)  # already cancelled
    assert refused.exit_code == 1
    _assert_safe(refused.output)


def test_params_nested_too_deep_are_one_line(db_url: str) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    for option in (["--params", '{"data": ' + deep + "}"], ["-p", f"data={deep}"]):
        result = run_cli("--store", db_url, "enqueue", "--app", SAMPLE_APP, "echo.params",
                         *option)
        assert result.exit_code == EXIT_USAGE
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"deeper than {MAX_DEPTH} levels" in lines[0]
        assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "named"), [
    (["cancel", "00000000-0000-4000-8000-000000000000", "--reason", "a\udcffb"], "reason"),
    (["ls", "--queue", "q\x1b[2K"], "queue"),
    (["enqueue", "--app", SAMPLE_APP, "echo.params", "--queue", "a\x00b"], "queue"),
])
def test_bad_text_arguments_are_one_line_exit_2(db_url: str, args: list[str],
                                                named: str) -> None:
    result = cli_on(db_url, *args)
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0]
    _assert_safe(result.stderr)


def test_an_id_with_a_nul_is_not_found(db_url: str) -> None:
    result = cli_on(db_url, "show", "abc\x00def")
    assert result.exit_code == 3
    assert "No job with id" in result.stderr


def test_a_store_path_that_is_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = cli_on(f"sqlite:///{tmp_path}", "ls")
    assert result.exit_code == EXIT_USAGE
    assert f"{tmp_path} is a directory" in result.stderr
