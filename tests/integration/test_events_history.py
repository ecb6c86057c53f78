"""Events (the observer) and the per-job history, through real workers on SQLite."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from typing import Any

import pytest

from conveyor import (
    Backoff,
    Conveyor,
    ConveyorError,
    JobContext,
    JobEvent,
    JobState,
    transitions,
)
from conveyor.changes import ChangeRefused, Lease
from conveyor.model import JobError
from tests.conftest import AppFactory
from tests.integration.test_worker_helpers import (
    TINY,
    WAIT,
    Gate,
    Recorder,
    WorkerThread,
    actions,
    assert_history_chain,
    running_worker,
    wait_until,
)

S = JobState
ACTION_OF_EVENT = {
    "JobCreated": "create", "JobStarted": "start", "JobResumed": "resume",
    "JobPaused": "pause", "JobCompleted": "complete", "JobFailed": "fail",
    "JobRetried": "retry", "JobCancelled": "cancel",
}


def _db_path(app: Conveyor) -> str:
    prefix = "sqlite:///"
    assert app.url.startswith(prefix)
    return app.url[len(prefix):]


def _history_rows(app: Conveyor) -> int:
    with contextlib.closing(sqlite3.connect(_db_path(app))) as conn:
        (count,) = conn.execute("SELECT count(*) FROM job_history").fetchone()
    return int(count)


# --------------------------------------------------------------------------------------------
# subscribers


def test_a_failing_subscriber_is_logged_and_breaks_nothing(
        make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    calls: list[str] = []

    def broken(event: JobEvent) -> None:
        calls.append(event.name)
        raise RuntimeError("subscriber bug")

    app.subscribe(broken)
    recorder = Recorder(app)

    @app.job("work", max_attempts=1, backoff=TINY)
    def work(ctx: JobContext, fail: bool) -> str:
        ctx.progress(1, 2)
        ctx.checkpoint({"half": True})
        if fail and ctx.job.attempt == 0:
            raise ValueError("first attempt fails")
        return "ok"

    caplog.set_level(logging.ERROR, logger="conveyor.events")
    job = app.enqueue("work", {"fail": True})
    cancelled = app.cancel(app.enqueue("work", {"fail": False}).id)
    assert cancelled.state is S.CANCELLED
    WorkerThread(app, burst=True).start().join()
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.result == "ok"
    recorder.wait_for("JobCompleted", job.id)
    assert recorder.names(job.id) == [
        "JobCreated", "JobStarted", "JobFailed", "JobRetried", "JobStarted", "JobCompleted"]
    assert "JobCompleted" in calls
    assert calls.count("JobCreated") == 2
    failures = [r for r in caplog.records if r.name == "conveyor.events"]
    assert len(failures) == len(calls)
    assert all(r.exc_info is not None for r in failures)
    assert all("subscriber" in r.getMessage() for r in failures)


def test_unsubscribe_stops_delivery(make_app: AppFactory) -> None:
    app = make_app()
    app.job("noop")(lambda ctx: None)
    seen: list[str] = []
    unsubscribe = app.subscribe(lambda e: seen.append(e.name))
    app.enqueue("noop")
    unsubscribe()
    app.enqueue("noop")
    assert seen == ["JobCreated"]


def test_events_arrive_in_order_and_match_the_history(make_app: AppFactory) -> None:
    app = make_app()
    reached = threading.Event()
    gate = Gate()

    @app.job("story", max_attempts=1, backoff=TINY)
    def story(ctx: JobContext) -> str:
        start = int(ctx.checkpoint_data.get("next", 0))
        for step in range(start, 6):
            if step == 2 and not gate.is_open():
                reached.set()
                gate.wait()
            ctx.progress(step + 1, 6)
            ctx.checkpoint({"next": step + 1})
            if step == 4 and ctx.job.attempt == 0:
                raise ValueError("one failure")
        return "the end"

    recorder = Recorder(app)
    job = app.enqueue("story")
    with running_worker(app):
        assert reached.wait(WAIT)
        app.pause(job.id)
        gate.open()
        assert app.wait(job.id, timeout=WAIT).state is S.PAUSED
        app.resume(job.id)
        assert app.wait(job.id, timeout=WAIT).state is S.COMPLETED
        recorder.wait_for("JobCompleted", job.id)

    events = recorder.of(job.id)
    moves = [e for e in events if e.name not in ("JobProgressed", "JobRequested")]
    assert [e.name for e in moves] == [
        "JobCreated", "JobStarted", "JobPaused", "JobResumed", "JobFailed", "JobRetried",
        "JobStarted", "JobCompleted"]
    state = None
    for event in moves:  # each move starts where the previous one left the job
        assert event.from_state is state, f"{event.name} from {event.from_state}, not {state}"
        state = event.job.state
    assert state is S.COMPLETED

    history = assert_history_chain(app, job.id)
    non_progress = [e for e in events if e.name != "JobProgressed"]
    assert [ACTION_OF_EVENT.get(e.name, "request") for e in non_progress] == [
        "request" if a.startswith(("request_", "withdraw_")) else a for a in actions(history)]
    for event, row in zip(non_progress, history, strict=True):
        assert event.actor == row.actor
        assert event.job.state is row.to_state


def test_progress_events_are_emitted_while_the_job_runs(make_app: AppFactory) -> None:
    app = make_app()
    gate = Gate()

    @app.job("halfway")
    def halfway(ctx: JobContext) -> None:
        ctx.progress(5, 10)
        gate.wait()
        ctx.progress(10, 10)

    recorder = Recorder(app)
    job = app.enqueue("halfway")
    with running_worker(app) as worker:
        progressed = recorder.wait_for("JobProgressed", job.id)
        assert progressed.job.state is S.RUNNING
        assert progressed.job.progress.current_step == 5
        assert progressed.job.progress.total_steps == 10
        assert progressed.job.progress.percent == 50.0
        assert progressed.actor == worker.worker_id
        shown = progressed.to_dict()["progress"]
        assert isinstance(shown, dict)
        assert shown["percent"] == 50.0
        gate.open()
        app.wait(job.id, timeout=WAIT)
        recorder.wait_for("JobCompleted", job.id)
    assert not [h for h in app.history(job.id) if "progress" in h.action]


def test_no_event_follows_a_jobs_final_event(make_app: AppFactory,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress is written by the worker's monitor thread while the job finishes in its own
    thread. A JobProgressed (showing the job running) must never be delivered after its
    JobCompleted. The race is made certain by holding the monitor back for a moment right
    after its progress write, as an OS scheduler may."""
    app = make_app()
    written = threading.Event()
    store = app.store
    original = store.save_progress

    def slow_monitor(*args: Any, **kwargs: Any) -> Any:
        signals = original(*args, **kwargs)
        if threading.current_thread().name == "conveyor-monitor" and not written.is_set():
            written.set()
            time.sleep(0.3)  # the monitor is descheduled between its write and its event
        return signals

    monkeypatch.setattr(store, "save_progress", slow_monitor)

    @app.job("quick")
    def quick(ctx: JobContext) -> str:
        ctx.progress(1, 1)
        assert written.wait(WAIT)  # the monitor has written the progress...
        return "done"  # ...and the job finishes before the monitor emits its event

    recorder = Recorder(app)
    job = app.enqueue("quick")
    WorkerThread(app, burst=True).start().join()  # run() returns after its monitor ended
    recorder.wait_for("JobCompleted", job.id)
    names = recorder.names(job.id)
    assert names[-1] == "JobCompleted", names
    assert recorder.of(job.id)[-1].job.state is S.COMPLETED


def test_a_failed_event_shows_the_failed_run(make_app: AppFactory) -> None:
    """A failure followed by an automatic retry emits JobFailed then JobRetried; JobFailed's
    job must show the failure (its error, the attempt that failed), not the retried job."""
    app = make_app()

    @app.job("flaky", max_attempts=1, backoff=TINY)
    def flaky(ctx: JobContext) -> str:
        if ctx.job.attempt == 0:
            raise ValueError("first attempt fails")
        return "ok"

    recorder = Recorder(app)
    job = app.enqueue("flaky")
    WorkerThread(app, burst=True).start().join()
    failed = recorder.wait_for("JobFailed", job.id)
    retried = recorder.wait_for("JobRetried", job.id)
    assert failed.job.state is S.FAILED
    assert retried.job.state is S.PENDING
    assert retried.job.attempt == 1
    assert retried.job.error is None
    assert failed.job.attempt == 0
    assert failed.job.error is not None
    assert failed.job.error.type == "ValueError"
    assert failed.job.finished_at is not None


# --------------------------------------------------------------------------------------------
# history


def test_control_calls_record_actor_and_reason(make_app: AppFactory) -> None:
    app = make_app()
    reached = threading.Event()
    gate = Gate()

    @app.job("parked")
    def parked(ctx: JobContext) -> None:
        reached.set()
        gate.wait()
        ctx.checkpoint({"x": 1})

    job = app.enqueue("parked", actor="cron")
    with running_worker(app):
        assert reached.wait(WAIT)
        app.pause(job.id, actor="alice", reason="maintenance")
        gate.open()
        assert app.wait(job.id, timeout=WAIT).state is S.PAUSED
    app.cancel(job.id, actor="bob", reason="no longer needed")
    rows = [(h.action, h.from_state, h.to_state, h.actor, h.reason)
            for h in assert_history_chain(app, job.id)]
    assert rows[0] == ("create", None, S.PENDING, "cron", "")
    assert rows[2] == ("request_pause", S.RUNNING, S.RUNNING, "alice", "maintenance")
    assert rows[3][:3] == ("pause", S.RUNNING, S.PAUSED)
    assert rows[3][4] == "paused at checkpoint"
    assert rows[4] == ("cancel", S.PAUSED, S.CANCELLED, "bob", "no longer needed")
    assert len(rows) == 5
    for entry in app.history(job.id):
        assert entry.to_dict()["job_id"] == job.id


def test_each_control_call_writes_one_history_row_and_a_refused_one_none(
        make_app: AppFactory) -> None:
    app = make_app()
    app.job("t", max_attempts=2)(lambda ctx: None)
    job = app.enqueue("t")
    assert _history_rows(app) == 1
    (claimed,) = app.store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=30)
    assert _history_rows(app) == 2
    app.pause(job.id)
    assert _history_rows(app) == 3
    app.pause(job.id)  # already requested: nothing to record
    assert _history_rows(app) == 3
    app.resume(job.id)  # withdraws the request
    assert _history_rows(app) == 4
    assert claimed.lease_token is not None
    lease = Lease(job.id, claimed.lease_token, claimed.attempt)
    app.apply([transitions.fail(lease, job.id, JobError("E", "boom"), "raised", "w")])
    assert _history_rows(app) == 5
    with pytest.raises(ConveyorError):
        app.pause(job.id)
    with pytest.raises(ChangeRefused):  # a stale write: refused, nothing recorded
        app.apply([transitions.complete(lease, 1, "w")])
    assert _history_rows(app) == 5
    app.retry(job.id, actor="ops")
    assert _history_rows(app) == 6
    assert app.history(job.id)[-1].reason == "manual retry"
    app.cancel(job.id)
    assert _history_rows(app) == 7
    with pytest.raises(ConveyorError):
        app.cancel(job.id)
    assert _history_rows(app) == 7
    assert_history_chain(app, job.id)


def test_a_transition_is_not_committed_without_its_history_row(make_app: AppFactory) -> None:
    """The history row is written in the transition's own transaction: when it cannot be
    written, the state does not move either."""
    app = make_app()
    app.job("t")(lambda ctx: None)
    job = app.enqueue("t")
    with contextlib.closing(sqlite3.connect(_db_path(app))) as conn:
        conn.execute("CREATE TRIGGER no_cancel_rows BEFORE INSERT ON job_history "
                     "WHEN NEW.action = 'cancel' BEGIN SELECT RAISE(ABORT, 'no'); END")
        conn.commit()
    with pytest.raises((sqlite3.DatabaseError, ConveyorError)):
        app.cancel(job.id)
    still = app.get(job.id)
    assert still.state is S.PENDING
    assert still.finished_at is None
    assert actions(app.history(job.id)) == ["create"]
    with contextlib.closing(sqlite3.connect(_db_path(app))) as conn:
        conn.execute("DROP TRIGGER no_cancel_rows")
        conn.commit()
    assert app.cancel(job.id).state is S.CANCELLED
    assert actions(app.history(job.id)) == ["create", "cancel"]


def test_a_failure_and_its_retry_are_two_rows_of_one_transaction(
        make_app: AppFactory) -> None:
    app = make_app()

    @app.job("flaky", max_attempts=1, backoff=Backoff(base=60))
    def flaky(ctx: JobContext) -> None:
        raise ValueError("boom")

    job = app.enqueue("flaky")
    with running_worker(app):
        wait_until(lambda: app.get(job.id).attempt == 1, what="the automatic retry")
    history = app.history(job.id)
    assert actions(history) == ["create", "start", "fail", "retry"]
    fail, retry = history[2], history[3]
    assert fail.at == retry.at  # one transaction: one database time
    assert (fail.from_state, fail.to_state, fail.attempt) == (S.RUNNING, S.FAILED, 0)
    assert (retry.from_state, retry.to_state, retry.attempt) == (S.FAILED, S.PENDING, 1)
    assert fail.reason == "raised ValueError: boom"
    assert retry.reason.startswith("automatic retry in ")


def test_history_of_a_missing_job_is_refused(make_app: AppFactory) -> None:
    app = make_app()
    app.job("t")(lambda ctx: None)
    app.enqueue("t")
    with pytest.raises(ConveyorError, match="nope"):
        app.history("nope")
