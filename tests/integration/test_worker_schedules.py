"""A worker runs the app's schedules and its claims skip paused queues, end to end (SQLite)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from conveyor import JobContext, JobState
from conveyor.schedules import Scheduler
from tests.conftest import AppFactory


def test_a_worker_enqueues_a_due_tick_and_runs_it_but_not_from_a_paused_queue(
        make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    ran = threading.Event()

    @app.periodic("* * * * *", queue="cron")
    @app.job("cron.tick")
    def tick(ctx: JobContext) -> str:
        ran.set()
        return "ticked"

    @app.job("mail.send")
    def send(ctx: JobContext) -> None:
        return None

    Scheduler(app.engine, "setup").register()
    with sqlite3.connect(tmp_path / "jobs.db") as conn:  # long registered: a tick is due
        conn.execute("UPDATE schedules SET first_seen = first_seen - 3600")
    held = app.enqueue("mail.send", queue="mail")
    app.pause_queue("mail", reason="test")
    worker = app.worker(concurrency=2, poll_interval=0.05, handle_signals=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert ran.wait(30), "the worker's scheduler never enqueued the due tick"
        job = app.list(job_type="cron.tick")[-1]  # the first (a minute may turn meanwhile)
        assert app.wait(job.id, timeout=30).state is JobState.COMPLETED
        assert job.queue == "cron"
        assert app.history(job.id)[0].actor == f"scheduler@{worker.worker_id}"
        assert app.get(held.id).state is JobState.PENDING  # its queue is paused
        app.resume_queue("mail")
        assert app.wait(held.id, timeout=30).state is JobState.COMPLETED
    finally:
        worker.stop()
        thread.join(30)
    ticks = app.list(job_type="cron.tick")
    assert len(ticks) <= 2  # the due tick, and the next one if a minute turned meanwhile
