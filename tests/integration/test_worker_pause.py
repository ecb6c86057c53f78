"""Pause and resume through a real worker: requests, checkpoints, freed slots, saved progress."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from conveyor import Conveyor, InvalidStateError, JobContext, JobState, transitions
from conveyor.changes import ChangeRefused, Lease
from tests.conftest import AppFactory
from tests.integration.test_worker_helpers import (
    WAIT,
    Gate,
    Recorder,
    WorkerThread,
    actions,
    assert_history_chain,
    running_worker,
    wait_state,
    wait_until,
)

S = JobState
TOTAL = 10


class Steps:
    """A resumable job of TOTAL steps that parks at step ``hold`` until the test lets it go."""

    def __init__(self, app: Conveyor, hold: int = 3, name: str = "steps") -> None:
        self.hold = hold
        self.reached = threading.Event()
        self.gate = Gate()
        self.runs: list[dict[str, Any]] = []  # per run: checkpoint seen, first progress
        self.name = name
        app.job(name)(self.run)

    def run(self, ctx: JobContext, total: int = TOTAL) -> dict[str, int]:
        start = int(ctx.checkpoint_data.get("next", 0))
        self.runs.append({"checkpoint": ctx.checkpoint_data, "attempt": ctx.job.attempt,
                          "step": ctx.job.progress.current_step})
        for step in range(start, total):
            if step == self.hold and not self.gate.is_open():
                self.reached.set()
                self.gate.wait()
            ctx.progress(step + 1, total)
            ctx.checkpoint({"next": step + 1})
        return {"done": total}


def _pause_while_parked(app: Conveyor, steps: Steps, job_id: str) -> Any:
    """Park the job at its hold step, ask for a pause, check the request, then release it."""
    assert steps.reached.wait(WAIT)
    asked = app.pause(job_id, actor="alice", reason="maintenance")
    assert asked.state is S.RUNNING
    assert asked.pause_requested
    assert app.get(job_id).state is S.RUNNING  # nothing happens before the checkpoint
    steps.gate.open()
    return app.wait(job_id, timeout=WAIT)


def test_pause_takes_effect_at_the_checkpoint_and_resume_continues(
        make_app: AppFactory) -> None:
    app = make_app()
    steps = Steps(app)
    recorder = Recorder(app)
    job = app.enqueue(steps.name)

    with running_worker(app) as worker:
        paused = _pause_while_parked(app, steps, job.id)
        assert paused.state is S.PAUSED
        assert not paused.pause_requested
        assert not paused.resume_requested
        assert paused.paused_at is not None
        assert paused.finished_at is None
        assert paused.worker_id is None
        assert paused.lease_token is None
        assert paused.progress.current_step == 4  # the step done just before the checkpoint
        assert paused.progress.total_steps == TOTAL
        assert paused.progress.last_checkpoint == {"next": 4}
        assert paused.attempt == 0
        assert not paused.is_terminal
        recorder.wait_for("JobPaused", job.id)
        wait_until(lambda: worker.active == 0, what="the paused job's slot to be freed")
    started_at = paused.started_at

    resumed = app.resume(job.id, actor="bob", reason="back on")
    assert resumed.state is S.PAUSED
    assert resumed.resume_requested
    assert app.get(job.id).progress.last_checkpoint == {"next": 4}

    with running_worker(app) as worker2:
        done = app.wait(job.id, timeout=WAIT)
        recorder.wait_for("JobCompleted", job.id)
    assert done.state is S.COMPLETED
    assert done.result == {"done": TOTAL}
    assert done.progress.current_step == TOTAL
    assert done.attempt == 0
    assert done.started_at == started_at  # set on the first start only
    assert not done.resume_requested
    assert len(steps.runs) == 2
    assert steps.runs[1] == {"checkpoint": {"next": 4}, "attempt": 0, "step": 4}

    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "request_pause", "pause", "request_resume",
                                "resume", "complete"]
    request_pause, pause = history[2], history[3]
    assert (request_pause.actor, request_pause.reason) == ("alice", "maintenance")
    assert request_pause.from_state is S.RUNNING
    assert request_pause.to_state is S.RUNNING
    assert pause.actor == worker.worker_id
    assert (history[4].actor, history[4].reason) == ("bob", "back on")
    assert history[5].actor == worker2.worker_id
    assert history[5].from_state is S.PAUSED

    names = recorder.names(job.id)
    assert [n for n in names if n != "JobProgressed"] == [
        "JobCreated", "JobStarted", "JobRequested", "JobPaused", "JobRequested", "JobResumed",
        "JobCompleted"]
    resumed_event = recorder.wait_for("JobResumed", job.id)
    assert resumed_event.from_state is S.PAUSED
    assert resumed_event.actor == worker2.worker_id
    paused_event = recorder.wait_for("JobPaused", job.id)
    assert paused_event.job.state is S.PAUSED
    assert paused_event.job.progress.last_checkpoint == {"next": 4}


def test_a_paused_job_frees_its_slot_for_other_work(make_app: AppFactory) -> None:
    app = make_app()
    steps = Steps(app)
    ran = threading.Event()

    @app.job("other")
    def other(ctx: JobContext) -> None:
        ran.set()

    job = app.enqueue(steps.name)
    with running_worker(app, concurrency=1):
        assert steps.reached.wait(WAIT)
        queued = app.enqueue("other")
        assert not ran.wait(0.2)  # the only slot is busy
        assert app.get(queued.id).state is S.PENDING
        app.pause(job.id)
        steps.gate.open()
        assert ran.wait(WAIT)
        assert app.wait(queued.id, timeout=WAIT).state is S.COMPLETED
        assert app.get(job.id).state is S.PAUSED


def test_resume_waits_for_a_free_slot(make_app: AppFactory) -> None:
    app = make_app()
    steps = Steps(app)
    blocker_gate = Gate()
    blocking = threading.Event()

    @app.job("blocker")
    def blocker(ctx: JobContext) -> None:
        blocking.set()
        blocker_gate.wait()

    job = app.enqueue(steps.name)
    with running_worker(app, concurrency=1):
        assert _pause_while_parked(app, steps, job.id).state is S.PAUSED
        other = app.enqueue("blocker")
        assert blocking.wait(WAIT)
        app.resume(job.id)
        still = app.get(job.id)
        assert still.state is S.PAUSED
        assert still.resume_requested
        blocker_gate.open()
        assert app.wait(other.id, timeout=WAIT).state is S.COMPLETED
        assert app.wait(job.id, timeout=WAIT).state is S.COMPLETED


def test_a_paused_job_cannot_complete(make_app: AppFactory) -> None:
    app = make_app()
    steps = Steps(app)
    recorder = Recorder(app)
    job = app.enqueue(steps.name)
    with running_worker(app):
        started = recorder.wait_for("JobStarted", job.id)
        assert _pause_while_parked(app, steps, job.id).state is S.PAUSED
    assert started.job.lease_token is not None
    lease = Lease(job.id, started.job.lease_token, started.job.attempt)
    before = app.history(job.id)
    with pytest.raises(ChangeRefused):
        app.apply([transitions.complete(lease, {"sneaky": True}, "late-worker")])
    after = app.get(job.id)
    assert after.state is S.PAUSED
    assert after.result is None
    assert app.history(job.id) == before


def test_resume_on_a_running_job_withdraws_its_pause_request(make_app: AppFactory) -> None:
    app = make_app()
    gate = Gate()
    saw_pause = threading.Event()
    runs: list[int] = []

    @app.job("polling")
    def polling(ctx: JobContext) -> str:
        runs.append(ctx.job.attempt)
        while not gate.is_open():
            if ctx.pause_requested:
                saw_pause.set()  # the worker has learned of the request
            time.sleep(0.01)
        ctx.checkpoint({"at": "end"})  # the withdrawn request must not pause the job here
        return "finished"

    recorder = Recorder(app)
    job = app.enqueue("polling")
    with running_worker(app):
        wait_state(app, job.id, S.RUNNING)
        assert app.pause(job.id).pause_requested
        assert saw_pause.wait(WAIT)
        withdrawn = app.resume(job.id, actor="carol")
        assert withdrawn.state is S.RUNNING
        assert not withdrawn.pause_requested
        gate.open()
        done = app.wait(job.id, timeout=WAIT)
    assert done.state is S.COMPLETED
    assert done.result == "finished"
    assert runs == [0]
    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "request_pause", "withdraw_pause",
                                "complete"]
    assert history[3].actor == "carol"
    assert "JobPaused" not in recorder.names(job.id)


def test_pause_request_is_shown_and_repeated_pause_is_a_no_op(make_app: AppFactory) -> None:
    app = make_app()
    steps = Steps(app)
    job = app.enqueue(steps.name)
    with running_worker(app):
        assert steps.reached.wait(WAIT)
        first = app.pause(job.id)
        second = app.pause(job.id)
        assert first.pause_requested
        assert second.pause_requested
        assert second.state is S.RUNNING
        assert "pause" not in second.legal_actions
        assert "resume" in second.legal_actions
        assert actions(app.history(job.id)).count("request_pause") == 1
        steps.gate.open()
        assert app.wait(job.id, timeout=WAIT).state is S.PAUSED
        with pytest.raises(InvalidStateError, match="from paused to paused"):
            app.pause(job.id)


def test_pause_is_honoured_by_code_that_catches_exception(make_app: AppFactory) -> None:
    app = make_app()
    reached = threading.Event()
    gate = Gate()
    swallowed: list[BaseException] = []

    @app.job("sloppy")
    def sloppy(ctx: JobContext) -> str:
        for step in range(50):
            if step == 2:
                reached.set()
                gate.wait()
            try:
                ctx.checkpoint({"next": step + 1})
            except Exception as exc:
                swallowed.append(exc)
        return "ran to the end"

    job = app.enqueue("sloppy")
    with running_worker(app):
        assert reached.wait(WAIT)
        app.pause(job.id)
        gate.open()
        paused = app.wait(job.id, timeout=WAIT)
    assert paused.state is S.PAUSED
    assert paused.result is None
    assert paused.progress.last_checkpoint == {"next": 3}
    assert swallowed == []


def test_cancel_is_honoured_by_code_that_catches_exception(make_app: AppFactory) -> None:
    app = make_app()
    reached = threading.Event()
    gate = Gate()
    swallowed: list[BaseException] = []

    @app.job("sloppy")
    def sloppy(ctx: JobContext) -> str:
        try:
            reached.set()
            gate.wait()
            ctx.checkpoint({"x": 1})
        except Exception as exc:
            swallowed.append(exc)
        return "swallowed the cancel"

    job = app.enqueue("sloppy")
    with running_worker(app):
        assert reached.wait(WAIT)
        app.cancel(job.id)
        gate.open()
        done = app.wait(job.id, timeout=WAIT)
    assert done.state is S.CANCELLED
    assert done.result is None
    assert swallowed == []


def test_pause_request_seen_by_polling_code(make_app: AppFactory) -> None:
    app = make_app()
    reached = threading.Event()
    noticed = threading.Event()

    @app.job("poller")
    def poller(ctx: JobContext) -> str:
        reached.set()
        for _ in range(500):
            if ctx.pause_requested:
                noticed.set()
                ctx.checkpoint({"polite": True})
            time.sleep(0.01)
        return "never paused"

    job = app.enqueue("poller")
    with running_worker(app):
        assert reached.wait(WAIT)
        app.pause(job.id)
        paused = app.wait(job.id, timeout=WAIT)
    assert noticed.is_set()
    assert paused.state is S.PAUSED
    assert paused.progress.last_checkpoint == {"polite": True}


def test_paused_job_resumes_on_another_worker_from_its_checkpoint(
        make_app: AppFactory) -> None:
    app_a, app_b = make_app(), make_app()
    steps_a = Steps(app_a)
    steps_b = Steps(app_b, hold=-1)
    job = app_a.enqueue(steps_a.name)
    with running_worker(app_a):
        assert _pause_while_parked(app_a, steps_a, job.id).state is S.PAUSED
    app_a.resume(job.id)
    runner = WorkerThread(app_b, burst=True).start()
    runner.join()
    done = app_b.get(job.id)
    assert done.state is S.COMPLETED
    assert steps_b.runs == [{"checkpoint": {"next": 4}, "attempt": 0, "step": 4}]
