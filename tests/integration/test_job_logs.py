"""Job logs: what a job logs while it runs is kept per attempt, bounded, on both stores."""

from __future__ import annotations

import asyncio
import logging
import threading

from conveyor import (
    AsyncConveyor,
    Backoff,
    Conveyor,
    JobContext,
    JobLogLimits,
    JobState,
    LogLine,
)
from conveyor.joblogs import JobLog, write
from conveyor.testing import drain

log = logging.getLogger("tests.joblogs")


def test_a_worker_keeps_each_attempts_lines(any_app: Conveyor) -> None:
    @any_app.job("talk")
    def talk(ctx: JobContext) -> str:
        log.info("attempt %d starting", ctx.job.attempt)
        log.debug("too detailed to keep")
        ctx.log("said through ctx", level="warning")
        other = threading.Thread(target=log.warning, args=("from a thread of its own",))
        other.start()
        other.join()
        if ctx.job.attempt == 0:
            log.exception("about to fail", exc_info=ValueError("boom"))
            raise ValueError("boom")
        return "ok"

    job = any_app.enqueue("talk", max_attempts=2, backoff=Backoff(base=0, jitter=0))
    quiet = any_app.enqueue("talk", max_attempts=2, backoff=Backoff(base=0, jitter=0))
    drain(any_app)
    assert any_app.get(job.id).state is JobState.COMPLETED
    lines = any_app.logs(job.id)
    assert [(ln.attempt, ln.seq, ln.level) for ln in lines] == [
        (0, 1, "INFO"), (0, 2, "WARNING"), (0, 3, "ERROR"), (1, 1, "INFO"), (1, 2, "WARNING")]
    assert lines[0].message == "attempt 0 starting"
    assert lines[1].message == "said through ctx"
    assert lines[2].message.startswith("about to fail\n") and "ValueError: boom" in \
        lines[2].message
    assert [ln.message for ln in any_app.logs(job.id, attempt=1)] == [
        "attempt 1 starting", "said through ctx"]
    assert [ln.seq for ln in any_app.logs(job.id, after=lines[2].id)] == [1, 2]
    assert asyncio.run(_read_async(any_app, job.id)) == lines
    theirs = any_app.logs(quiet.id)
    assert {ln.job_id for ln in theirs} == {quiet.id}
    assert [(ln.attempt, ln.seq) for ln in theirs] == [(ln.attempt, ln.seq) for ln in lines]


async def _read_async(app: Conveyor, job_id: str) -> list[LogLine]:
    async with AsyncConveyor(app) as client:
        return await client.logs(job_id)


def test_each_attempt_keeps_its_last_lines_within_the_limits(any_app: Conveyor) -> None:
    @any_app.job("chatty")
    def chatty(ctx: JobContext, lines: int, width: int) -> None:
        for n in range(lines):
            log.info("%d %s", n, "x" * width)

    many = any_app.enqueue("chatty", {"lines": 50, "width": 1})
    wide = any_app.enqueue("chatty", {"lines": 10, "width": 400})
    any_app.worker(handle_signals=False, poll_interval=0.02,
                   job_logs=JobLogLimits(lines=5, kib=1)).run(burst=True)
    assert [(ln.seq, ln.message) for ln in any_app.logs(many.id)] == [
        (n + 1, f"{n} x") for n in range(45, 50)]
    assert [ln.seq for ln in any_app.logs(wide.id)] == [9, 10]  # 3 lines would pass 1 KiB


def test_lines_already_written_are_trimmed_and_a_resumed_run_numbers_on(
        any_app: Conveyor) -> None:
    @any_app.job("noop")
    def noop(ctx: JobContext) -> None:
        pass

    stored = any_app.enqueue("noop")
    limits = JobLogLimits(lines=3)
    first = JobLog(stored.id, 0, limits)
    for n in range(2):
        first.add("INFO", f"first run {n}")
    assert write(any_app.store, [first]) == 2
    for n in range(2, 4):
        first.add("INFO", f"first run {n}")
    assert write(any_app.store, [first]) == 2
    assert [ln.seq for ln in any_app.logs(stored.id)] == [2, 3, 4]  # seq 1 deleted
    resumed = JobLog(stored.id, 0, limits)  # the same attempt, run again after a pause
    resumed.add("INFO", "resumed")
    write(any_app.store, [resumed])
    assert [(ln.seq, ln.message) for ln in any_app.logs(stored.id)] == [
        (3, "first run 2"), (4, "first run 3"), (5, "resumed")]
