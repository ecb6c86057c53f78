"""``conveyor demo`` (what ``make demo`` runs): exit 0 and the story it tells, as a real process;
and exit 1 with the reason when the jobs do not end as the script expects."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from rich.console import Console

from conveyor import JobContext, demo
from tests.acceptance.cli_helpers import run_process

KEY_LINES = [
    "store: sqlite:////",
    "new -> pending",
    "pending -> running",
    "ConnectionError: api.example.com",  # the flaky sync's first attempt
    "failed -> pending",                 # ... retried automatically
    "running: pause requested",
    "running -> paused",
    "paused at file",
    "running: cancel requested",
    "running -> cancelled",
    "paused: resume requested",
    "paused -> running",
    "running -> completed",
    "All jobs",
    "History of the paused-and-resumed job",
    "ok    the paused job was resumed and completed",
    "ok    it continued from its checkpoint",
    "ok    the cancelled job is cancelled",
    "ok    the flaky sync failed, was retried and completed",
    "ok    the reports completed",
    "demo finished in",
]


def test_the_demo_runs_the_whole_lifecycle_and_exits_0() -> None:
    started = time.monotonic()
    result = run_process("demo", timeout=90)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    for line in KEY_LINES:
        assert line in result.stdout, line
    assert "FAIL" not in result.stdout
    assert result.stderr == ""
    assert elapsed < 45


def test_the_demo_exits_1_and_says_why_when_an_expectation_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def never_fails(ctx: JobContext, pages: int, fail_attempts: int = 1) -> dict[str, Any]:
        ctx.progress(pages, pages)
        return {"pages": pages}

    monkeypatch.setattr(demo, "PACE", 0.2)
    monkeypatch.setattr(demo, "sync_api", never_fails)
    out = io.StringIO()
    code = demo.run_demo(Console(file=out, width=120, no_color=True))
    text = out.getvalue()
    assert code == 1, text
    assert "FAIL  the flaky sync failed, was retried and completed" in text
    assert "ok    it continued from its checkpoint" in text
    assert "demo FAILED" in text
