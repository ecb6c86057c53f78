"""``conveyor demo``: the whole lifecycle in about fifteen seconds, on a throwaway SQLite file.

A worker runs in a background thread of this process while the script plays operator: it
enqueues a handful of jobs of the seed's three kinds (a batch of files, a flaky API sync, a
report), pauses a file batch half-way and resumes it from its checkpoint, cancels another one
while it runs, and lets the flaky sync fail once and be retried automatically. Every transition
is printed as it happens (from the app's events), with live progress bars under them; at the end
come a summary of every job, the full history of the paused-and-resumed job, and a check that
each job ended as the script expects. The exit code says whether it did, so ``make demo`` can
run in CI.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from conveyor.app import Conveyor, EnqueueRequest
from conveyor.cli import render
from conveyor.context import JobContext
from conveyor.errors import ConveyorError
from conveyor.events import JobEvent, JobProgressed
from conveyor.ids import short_id
from conveyor.lifecycle import JobState
from conveyor.model import Job
from conveyor.retry import Backoff
from conveyor.worker import Worker

PACE = 1.0  # multiplies every delay: slow enough to watch, quick enough for CI (tests lower it)
FILE_SECONDS = 0.3
PAUSE_AT_FILE = 5
PAUSED_FOR = 3.0
TIMEOUT = 45.0


class DemoFailure(Exception):
    """Something did not happen as the script expects; the message says what."""


# -- the sample job types ------------------------------------------------------------------------
def process_files(ctx: JobContext, count: int) -> dict[str, Any]:
    """Process ``count`` files, checkpointing after each so a pause or retry loses nothing."""
    start = int(ctx.checkpoint_data.get("next", 0))
    ctx.progress(start, count)
    for index in range(start, count):
        time.sleep(FILE_SECONDS * PACE)  # "process" file number `index`
        ctx.progress(index + 1, count)
        ctx.checkpoint({"next": index + 1})
    return {"files": count, "resumed_from": start}


def sync_api(ctx: JobContext, pages: int, fail_attempts: int = 1) -> dict[str, Any]:
    """Pull ``pages`` pages from a remote API that is down for the first attempt(s)."""
    start = int(ctx.checkpoint_data.get("page", 0))
    ctx.progress(start, pages)
    for page in range(start, pages):
        time.sleep(0.15 * PACE)
        if ctx.job.attempt < fail_attempts and page >= 2:
            raise ConnectionError(f"api.example.com: connection reset while fetching page "
                                  f"{page + 1} (simulated outage, attempt {ctx.job.attempt})")
        ctx.progress(page + 1, pages)
        ctx.checkpoint({"page": page + 1})
    return {"pages": pages, "records": pages * 50, "runs": ctx.job.attempt + 1}


def generate_report(ctx: JobContext, month: str) -> dict[str, Any]:
    """Build a monthly report in named steps, reporting progress after each."""
    steps = ["query", "aggregate", "chart", "render", "upload"]
    for number, step in enumerate(steps, start=1):
        time.sleep(0.4 * PACE)
        ctx.progress(number, len(steps))
        ctx.checkpoint({"done": step})
    return {"month": month, "rows": 1284, "url": f"https://reports.example.com/{month}.pdf"}


def build_app(url: str) -> Conveyor:
    """The demo's app: three job types, the flaky one with a short retry backoff."""
    app = Conveyor(url)
    app.job("files.process")(process_files)
    app.job("api.sync", max_attempts=3, backoff=Backoff(base=0.5, max_delay=2))(sync_api)
    app.job("reports.generate")(generate_report)
    return app


# -- the script ----------------------------------------------------------------------------------
@dataclass
class Cast:
    """The demo's jobs, by the role each plays in the story."""

    paused: Job
    cancelled: Job
    flaky: Job
    reports: list[Job] = field(default_factory=list)

    @property
    def all(self) -> list[Job]:
        return [self.paused, self.cancelled, self.flaky, *self.reports]


def enqueue_cast(app: Conveyor) -> Cast:
    """Five jobs in one transaction: four run at once, the fifth waits for a free slot."""
    jobs = app.enqueue_many([
        EnqueueRequest("files.process", {"count": 24}),
        EnqueueRequest("files.process", {"count": 40}),
        EnqueueRequest("api.sync", {"pages": 8}),
        EnqueueRequest("reports.generate", {"month": "2026-10"}),
        EnqueueRequest("reports.generate", {"month": "2026-11"}),
    ], actor="demo")
    return Cast(paused=jobs[0], cancelled=jobs[1], flaky=jobs[2], reports=jobs[3:])


def wait_for(app: Conveyor, job_id: str, what: str, test: Callable[[Job], bool]) -> Job:
    """Poll until ``test(job)`` holds; a demo that hangs is a failed demo."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        job = app.get(job_id)
        if test(job):
            return job
        time.sleep(0.05)
    raise DemoFailure(f"timed out waiting for job {short_id(job_id)} {what}")


def play(app: Conveyor, cast: Cast, say: Callable[[str], None]) -> int:
    """Pause, show, resume; cancel; then wait for the end. Returns the checkpoint paused at."""
    batch = cast.paused.id
    wait_for(app, batch, f"to reach file {PAUSE_AT_FILE}",
             lambda j: j.progress.current_step >= PAUSE_AT_FILE)
    say(f"pausing files.process {short_id(batch)}: it stops at its next checkpoint")
    app.pause(batch, actor="demo", reason="operator needs the disk for a while")
    paused = wait_for(app, batch, "to pause", lambda j: j.state is JobState.PAUSED)
    at = int(paused.progress.last_checkpoint.get("next", 0))
    say(f"paused at file {paused.progress.current_step} of {paused.progress.total_steps} "
        f"({paused.progress.percent:.0f}%), checkpoint "
        f"{json.dumps(paused.progress.last_checkpoint)}; its worker slot is free for other jobs")

    victim = cast.cancelled.id
    say(f"cancelling files.process {short_id(victim)} while it runs: "
        "it stops at its next checkpoint")
    app.cancel(victim, actor="demo", reason="batch no longer needed")
    time.sleep(PAUSED_FOR * PACE)

    say(f"resuming files.process {short_id(batch)}: "
        f"a worker picks it up from file {at}, not from 0")
    app.resume(batch, actor="demo", reason="disk is free again")
    resumed = wait_for(app, batch, "to be resumed", lambda j: j.state is not JobState.PAUSED)
    say(f"files.process {short_id(batch)} is {resumed.state.value} again at file "
        f"{resumed.progress.current_step} of {resumed.progress.total_steps}")
    for job in cast.all:
        app.wait(job.id, timeout=TIMEOUT, until_paused=False)
    return at


def start_worker(app: Conveyor) -> tuple[Worker, threading.Thread, list[BaseException]]:
    """A 4-slot worker with short timings, in a background thread (no signal handlers)."""
    worker = app.worker(concurrency=4, handle_signals=False, lease_seconds=5.0,
                        heartbeat_interval=1.0, poll_interval=0.1, progress_interval=0.1,
                        cancel_grace=3.0, shutdown_grace=3.0, worker_id="demo-worker")
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the script, not lost
            crashed.append(exc)

    thread = threading.Thread(target=run, name="conveyor-demo-worker", daemon=True)
    thread.start()
    return worker, thread, crashed


# -- the checks -----------------------------------------------------------------------------------
def check(app: Conveyor, cast: Cast, paused_at: int) -> list[tuple[bool, str]]:
    """Each expectation of the script, and whether it was met."""
    batch, victim, flaky = (app.get(j.id) for j in (cast.paused, cast.cancelled, cast.flaky))
    batch_actions = [e.action for e in app.history(batch.id)]
    flaky_moves = [(e.from_state, e.to_state) for e in app.history(flaky.id)]
    resumed_from = batch.result.get("resumed_from") if isinstance(batch.result, dict) else None
    reports = [app.get(j.id) for j in cast.reports]
    return [
        (batch.state is JobState.COMPLETED and "pause" in batch_actions
         and "resume" in batch_actions,
         f"the paused job was resumed and completed ({batch.state.value})"),
        (paused_at > 0 and resumed_from == paused_at,
         f"it continued from its checkpoint: file {resumed_from}, paused at {paused_at}"),
        (victim.state is JobState.CANCELLED,
         f"the cancelled job is cancelled ({victim.state.value})"),
        (flaky.state is JobState.COMPLETED and flaky.attempt >= 1
         and (JobState.FAILED, JobState.PENDING) in flaky_moves,
         f"the flaky sync failed, was retried and completed ({flaky.state.value}, "
         f"{flaky.attempt} retry)"),
        (all(r.state is JobState.COMPLETED for r in reports),
         f"the reports completed ({render.count_states(reports)})"),
    ]


# -- putting it together ---------------------------------------------------------------------------
def run_demo(console: Console | None = None) -> int:
    """Run the demo; 0 if every job ended as expected, 1 otherwise."""
    out = console or render.make_console()
    folder = Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    url = f"sqlite:///{folder / 'demo.db'}"
    out.rule("conveyor demo")
    out.print(Text(f"store: {url}  (a fresh SQLite file)"))
    app = build_app(url)
    began = time.monotonic()
    try:
        return _run(app, out, url, began)
    finally:
        app.close()


def _run(app: Conveyor, out: Console, url: str, began: float) -> int:
    board = render.LiveBoard(out, transient=True)  # the summary table replaces the bars

    def say(message: str) -> None:
        board.print(Text(f">> {message}", style="bold"))

    def on_event(event: JobEvent) -> None:
        if isinstance(event, JobProgressed):
            board.update_progress(event.job)
        else:
            board.update(event.job)
            board.print(render.event_line(event))

    unsubscribe = app.subscribe(on_event)
    stop = threading.Event()
    with board:
        cast = enqueue_cast(app)  # before the worker starts, so "created" prints first
        follow_progress(app, board, [job.id for job in cast.all], stop)
        worker, thread, crashed = start_worker(app)
        problem, paused_at = "", 0
        try:
            paused_at = play(app, cast, say)
        except (DemoFailure, ConveyorError) as exc:
            problem = str(exc)
        finally:
            worker.stop()
            thread.join(timeout=10)
            stop.set()
            unsubscribe()
    if crashed:
        problem = problem or f"the worker crashed: {crashed[0]!r}"
    return _report(app, out, cast if not problem else None, paused_at, problem, url, began)


def follow_progress(app: Conveyor, board: render.LiveBoard, job_ids: list[str],
                    stop: threading.Event) -> None:
    """Refresh the bars from the store ten times a second until ``stop``.

    The worker raises ``JobProgressed`` only for progress its monitor writes; progress saved
    by ``ctx.checkpoint()`` (every step of these jobs) reaches the store without an event.
    """

    def loop() -> None:
        while not stop.wait(0.1):
            for job_id in job_ids:
                with contextlib.suppress(ConveyorError):
                    board.update_progress(app.get(job_id))

    threading.Thread(target=loop, name="conveyor-demo-progress", daemon=True).start()


def _report(app: Conveyor, out: Console, cast: Cast | None, paused_at: int, problem: str,
            url: str, began: float) -> int:
    """The summary table, the paused job's history, the checks, and the exit code."""
    now = render.utcnow()
    jobs = app.list(limit=50)
    out.print(render.jobs_table(reversed(jobs), now, ascii_bar=render.ascii_only(out),
                                with_outcome=True, title="All jobs"))
    results = [(False, problem)] if cast is None else check(app, cast, paused_at)
    if cast is not None:
        out.print(render.history_table(app.history(cast.paused.id), now,
                                       title=f"History of the paused-and-resumed job "
                                             f"{cast.paused.id}"))
    for ok, text in results:
        out.print(Text.assemble(("  ok    " if ok else "  FAIL  ", "green" if ok else "red"),
                                text))
    elapsed = time.monotonic() - began
    failed = not all(ok for ok, _ in results)
    out.print(Text(f"demo {'FAILED' if failed else 'finished'} in {elapsed:.1f} s; "
                   f"inspect it with: conveyor --store {url} ls",
                   style="bold red" if failed else "bold"))
    return 1 if failed else 0
