"""Graceful shutdown: running jobs pause at their checkpoint and go back to be resumed; jobs
that cannot are released like a lost worker's; nothing is left running."""

from __future__ import annotations

import threading
import time
from typing import Any

from conveyor import Conveyor, JobContext, JobState
from tests.conftest import AppFactory
from tests.integration.test_worker_helpers import (
    WAIT,
    Gate,
    Recorder,
    WorkerThread,
    actions,
    assert_history_chain,
    wait_state,
)

S = JobState
TOTAL = 40


class Looper:
    """Checkpoints every 10 ms from where it left off; tells the test when it is under way."""

    def __init__(self, app: Conveyor) -> None:
        self.under_way = threading.Event()
        self.runs: list[dict[str, object]] = []
        app.job("loop")(self.run)

    def run(self, ctx: JobContext, total: int = TOTAL) -> int:
        start = int(ctx.checkpoint_data.get("next", 0))
        self.runs.append({"checkpoint": ctx.checkpoint_data, "attempt": ctx.job.attempt,
                          "step": ctx.job.progress.current_step})
        for step in range(start, total):
            if step - start >= 3:
                self.under_way.set()
            time.sleep(0.01)
            ctx.progress(step + 1, total)
            ctx.checkpoint({"next": step + 1})
        return total


def test_stop_pauses_a_checkpointing_job_for_another_worker(make_app: AppFactory) -> None:
    app = make_app()
    looper = Looper(app)
    recorder = Recorder(app)
    job = app.enqueue("loop")
    runner = WorkerThread(app, shutdown_grace=30).start()
    assert looper.under_way.wait(WAIT)
    began = time.monotonic()
    runner.stop(timeout=60)
    assert time.monotonic() - began < 10, "stop() waited out the grace instead of pausing"
    assert not app.list(state=S.RUNNING)

    paused = app.get(job.id)
    assert paused.state is S.PAUSED
    assert paused.resume_requested
    assert paused.attempt == 0
    assert paused.worker_id is None
    saved = paused.progress.last_checkpoint
    assert 3 <= int(saved["next"]) < TOTAL
    assert paused.progress.current_step == saved["next"]
    assert runner.worker.stats.paused == 1
    last = app.history(job.id)[-1]
    assert (last.action, last.reason) == ("pause", "worker shutdown")
    assert last.actor == runner.worker.worker_id

    second = WorkerThread(app, burst=True).start()
    second.join()
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.result == TOTAL
    assert done.attempt == 0  # no attempt was spent on the shutdown
    assert looper.runs[1] == {"checkpoint": saved, "attempt": 0, "step": saved["next"]}
    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "pause", "resume", "complete"]
    assert history[3].actor == second.worker.worker_id
    recorder.wait_for("JobResumed", job.id)


def test_stop_keeps_an_operator_pause_as_a_pause(make_app: AppFactory) -> None:
    app = make_app()
    reached = threading.Event()
    gate = Gate()

    @app.job("parked")
    def parked(ctx: JobContext) -> None:
        reached.set()
        gate.wait()
        ctx.checkpoint({"at": 1})

    job = app.enqueue("parked")
    runner = WorkerThread(app, shutdown_grace=5).start()
    assert reached.wait(WAIT)
    app.pause(job.id, actor="ops")
    runner.worker.stop()
    gate.open()
    runner.join()
    paused = app.get(job.id)
    assert paused.state is S.PAUSED
    assert not paused.resume_requested  # the operator's pause stands
    assert app.history(job.id)[-1].reason == "paused at checkpoint"


def test_a_job_finishing_within_the_grace_completes(make_app: AppFactory) -> None:
    app = make_app()
    reached = threading.Event()
    gate = Gate()

    @app.job("finisher")
    def finisher(ctx: JobContext) -> str:
        reached.set()
        gate.wait()
        return "finished during shutdown"

    job = app.enqueue("finisher")
    runner = WorkerThread(app, shutdown_grace=5).start()
    assert reached.wait(WAIT)
    runner.worker.stop()
    gate.open()
    runner.join()
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.result == "finished during shutdown"
    assert runner.worker.stats.completed == 1


def _blocked_app(make_app: AppFactory, **job_options: Any) -> tuple[
        Conveyor, threading.Event, Gate, threading.Event]:
    app = make_app()
    reached = threading.Event()
    gate = Gate()
    returned = threading.Event()

    @app.job("blocked", **job_options)
    def blocked(ctx: JobContext) -> str:
        reached.set()
        try:
            gate.wait()  # blocked in C: no checkpoint, no interrupt can land
        finally:
            returned.set()
        return "late"

    return app, reached, gate, returned


def test_a_job_that_never_checkpoints_is_released_at_the_end_of_the_grace(
        make_app: AppFactory) -> None:
    app, reached, gate, returned = _blocked_app(make_app)
    job = app.enqueue("blocked")
    runner = WorkerThread(app, shutdown_grace=0.3).start()
    try:
        assert reached.wait(WAIT)
        runner.worker.stop()
        released = wait_state(app, job.id, S.PENDING, attempt=1)
        runner.worker.stop()  # no need to wait for the blocked thread
        runner.join()
    finally:
        gate.open()
    assert not app.list(state=S.RUNNING)
    assert released.error is None
    assert released.worker_id is None
    assert runner.worker.stats.released == 1
    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "fail", "retry"]
    assert history[2].reason == "worker lost (shutdown)"
    assert history[2].actor == runner.worker.worker_id
    assert returned.wait(WAIT)
    after = app.get(job.id)
    assert after.state is S.PENDING  # the late result was not written
    assert after.result is None
    assert app.history(job.id) == history


def test_a_released_job_with_no_attempts_left_stays_failed(make_app: AppFactory) -> None:
    app, reached, gate, _returned = _blocked_app(make_app, max_attempts=0)
    job = app.enqueue("blocked")
    runner = WorkerThread(app, shutdown_grace=0.3).start()
    try:
        assert reached.wait(WAIT)
        runner.worker.stop()
        failed = wait_state(app, job.id, S.FAILED)
        runner.worker.stop()
        runner.join()
    finally:
        gate.open()
    assert failed.is_terminal
    assert failed.error is not None
    assert failed.error.type == "WorkerLost"
    assert app.history(job.id)[-1].reason == "worker lost (shutdown)"


def test_a_second_stop_releases_at_once(make_app: AppFactory) -> None:
    app, reached, gate, _returned = _blocked_app(make_app)
    job = app.enqueue("blocked")
    runner = WorkerThread(app, shutdown_grace=30).start()
    try:
        assert reached.wait(WAIT)
        began = time.monotonic()
        runner.worker.stop()
        runner.worker.stop()
        runner.join(timeout=10)
        assert time.monotonic() - began < 10, "the second stop waited for the 30 s grace"
    finally:
        gate.open()
    assert app.get(job.id).state is S.PENDING
    assert app.history(job.id)[-2].reason == "worker lost (shutdown)"


def test_stop_returns_soon_after_the_grace_even_if_a_job_is_stuck(
        make_app: AppFactory) -> None:
    """One stop(): run() should return shortly after shutdown_grace, not linger until the
    stuck thread ends (a supervisor's kill timeout is sized from shutdown_grace)."""
    app, reached, gate, _returned = _blocked_app(make_app)
    app.enqueue("blocked")
    runner = WorkerThread(app, shutdown_grace=0.3).start()
    try:
        assert reached.wait(WAIT)
        began = time.monotonic()
        runner.worker.stop()
        runner.thread.join(10)
        took = time.monotonic() - began
        assert not runner.thread.is_alive(), "run() still running 10s after a 0.3s grace"
        assert took < 10
    finally:
        gate.open()
        runner.stop()
