"""Cancel through a real worker: at once when idle, at the checkpoint, or by force after the
grace period (sync loops that never checkpoint, async jobs stuck in an await)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conveyor import AsyncJobContext, Backoff, Conveyor, InvalidStateError, JobContext, JobState
from tests.conftest import AppFactory
from tests.integration.test_worker_helpers import (
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


def test_cancel_pending_is_immediate(make_app: AppFactory) -> None:
    app = make_app()
    ran = threading.Event()

    @app.job("never")
    def never(ctx: JobContext) -> None:
        ran.set()

    recorder = Recorder(app)
    job = app.enqueue("never")
    cancelled = app.cancel(job.id, actor="frank", reason="not needed")
    assert cancelled.state is S.CANCELLED
    assert cancelled.finished_at is not None
    assert cancelled.started_at is None
    assert cancelled.is_terminal
    assert app.get(job.id).state is S.CANCELLED
    last = assert_history_chain(app, job.id)[-1]
    assert (last.action, last.from_state, last.to_state, last.actor, last.reason) == (
        "cancel", S.PENDING, S.CANCELLED, "frank", "not needed")
    event = recorder.wait_for("JobCancelled", job.id)
    assert event.from_state is S.PENDING
    assert event.actor == "frank"
    assert event.reason == "not needed"

    runner = WorkerThread(app, burst=True).start()
    runner.join()
    assert runner.worker.stats.claimed == 0
    assert not ran.is_set()


def _register_parked(app: Conveyor) -> tuple[threading.Event, Gate, list[int]]:
    """Job type ``parked``: it signals it runs, waits at the gate, then checkpoints (so a
    pause asked meanwhile lands there); each run appends to the list."""
    reached = threading.Event()
    gate = Gate()
    runs: list[int] = []

    @app.job("parked")
    def parked(ctx: JobContext) -> None:
        runs.append(1)
        reached.set()
        gate.wait()
        ctx.checkpoint({"at": 1})

    return reached, gate, runs


def test_cancel_paused_is_immediate(make_app: AppFactory) -> None:
    app = make_app()
    reached, gate, runs = _register_parked(app)
    recorder = Recorder(app)
    job = app.enqueue("parked")
    with running_worker(app):
        assert reached.wait(WAIT)
        app.pause(job.id)
        gate.open()
        assert app.wait(job.id, timeout=WAIT).state is S.PAUSED
        cancelled = app.cancel(job.id)
    assert cancelled.state is S.CANCELLED
    assert cancelled.finished_at is not None
    assert not cancelled.resume_requested
    assert cancelled.progress.last_checkpoint == {"at": 1}
    assert runs == [1]
    history = assert_history_chain(app, job.id)
    assert history[-1].from_state is S.PAUSED
    assert history[-1].reason == "cancelled"
    assert recorder.wait_for("JobCancelled", job.id).from_state is S.PAUSED


def test_cancel_a_paused_job_waiting_to_be_resumed(make_app: AppFactory) -> None:
    app = make_app()
    reached, gate, runs = _register_parked(app)
    job = app.enqueue("parked")
    with running_worker(app):
        assert reached.wait(WAIT)
        app.pause(job.id)
        gate.open()
        assert app.wait(job.id, timeout=WAIT).state is S.PAUSED
    assert app.resume(job.id).resume_requested
    cancelled = app.cancel(job.id)
    assert cancelled.state is S.CANCELLED
    assert not cancelled.resume_requested
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    assert runner.worker.stats.claimed == 0
    assert runs == [1]


def test_cancel_running_takes_effect_at_the_next_checkpoint(make_app: AppFactory) -> None:
    app = make_app()
    reached = threading.Event()
    gate = Gate()
    after_checkpoint: list[str] = []

    @app.job("steps")
    def steps(ctx: JobContext) -> str:
        ctx.progress(1, 3)
        reached.set()
        gate.wait()
        ctx.progress(2, 3)
        ctx.checkpoint({"next": 2})
        after_checkpoint.append("ran on")
        return "finished"

    recorder = Recorder(app)
    job = app.enqueue("steps")
    with running_worker(app) as worker:
        assert reached.wait(WAIT)
        asked = app.cancel(job.id, actor="gina", reason="wrong input")
        assert asked.state is S.RUNNING
        assert asked.cancel_requested
        assert app.get(job.id).state is S.RUNNING
        assert app.cancel(job.id).cancel_requested  # asking twice is a no-op
        requested = recorder.wait_for("JobRequested", job.id)
        assert requested.job.cancel_requested
        assert requested.reason == "wrong input"
        gate.open()
        done = app.wait(job.id, timeout=WAIT)
        recorder.wait_for("JobCancelled", job.id)
        wait_until(lambda: worker.active == 0)
        assert worker.stats.cancelled == 1
    assert done.state is S.CANCELLED
    assert done.result is None
    assert done.finished_at is not None
    assert done.progress.current_step == 2
    assert done.progress.last_checkpoint == {"next": 2}
    assert done.lease_token is None
    assert after_checkpoint == []
    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "request_cancel", "cancel"]
    assert (history[2].actor, history[2].reason) == ("gina", "wrong input")
    assert history[3].actor == worker.worker_id
    assert history[3].reason == "cancelled at checkpoint"
    assert recorder.names(job.id)[-1] == "JobCancelled"


def test_a_job_that_finishes_before_its_checkpoint_completes(make_app: AppFactory) -> None:
    app = make_app()
    reached = threading.Event()
    gate = Gate()

    @app.job("quick")
    def quick(ctx: JobContext) -> str:
        reached.set()
        gate.wait()
        return "made it"

    job = app.enqueue("quick")
    with running_worker(app, cancel_grace=5):
        assert reached.wait(WAIT)
        assert app.cancel(job.id).cancel_requested
        gate.open()
        done = app.wait(job.id, timeout=WAIT)
    assert done.state is S.COMPLETED
    assert done.result == "made it"
    assert not done.cancel_requested


def _raiser_app(make_app: AppFactory, *, wait_for_the_worker: bool) -> tuple[
        Conveyor, threading.Event, Gate, list[int]]:
    app = make_app()
    reached = threading.Event()
    gate = Gate()
    runs: list[int] = []

    @app.job("raiser", max_attempts=1, backoff=Backoff(base=0.01, max_delay=0.01))
    def raiser(ctx: JobContext) -> None:
        runs.append(ctx.job.attempt)
        reached.set()
        gate.wait()
        if wait_for_the_worker:
            wait_until(lambda: ctx.cancel_requested, what="the worker to see the cancel")
        raise RuntimeError("broke while being cancelled")

    return app, reached, gate, runs


def test_a_job_that_raises_after_a_cancel_request_ends_cancelled(make_app: AppFactory) -> None:
    """The operator asked to cancel; the job then raised. The request must not be lost to a
    failure and an automatic retry, however soon after the request the job raised."""
    app, reached, gate, runs = _raiser_app(make_app, wait_for_the_worker=False)
    job = app.enqueue("raiser")
    with running_worker(app, cancel_grace=5):
        assert reached.wait(WAIT)
        app.cancel(job.id)
        gate.open()  # raise at once, before the worker's monitor polls the request
        done = app.wait(job.id, timeout=WAIT)
    assert done.state is S.CANCELLED, actions(app.history(job.id))
    assert runs == [0]  # not retried
    assert "RuntimeError" in app.history(job.id)[-1].reason


def test_a_job_that_raises_once_the_worker_saw_the_cancel_ends_cancelled(
        make_app: AppFactory) -> None:
    app, reached, gate, runs = _raiser_app(make_app, wait_for_the_worker=True)
    job = app.enqueue("raiser")
    with running_worker(app, cancel_grace=5):
        assert reached.wait(WAIT)
        app.cancel(job.id)
        gate.open()
        done = app.wait(job.id, timeout=WAIT)
    assert done.state is S.CANCELLED
    assert runs == [0]
    assert "RuntimeError" in app.history(job.id)[-1].reason


def test_a_sync_job_that_never_checkpoints_is_stopped_after_the_grace(
        make_app: AppFactory) -> None:
    app = make_app()
    spinning = threading.Event()
    stopped_by: list[str] = []
    counter = [0]

    @app.job("spin")
    def spin(ctx: JobContext, seconds: float) -> int:
        spinning.set()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:  # pure Python arithmetic, no checkpoint
                counter[0] += 1
        except BaseException as exc:
            stopped_by.append(type(exc).__name__)
            raise
        return counter[0]

    recorder = Recorder(app)
    job = app.enqueue("spin", {"seconds": 60.0})
    with running_worker(app, cancel_grace=0.5) as worker:
        assert spinning.wait(WAIT)
        asked_at = time.monotonic()
        assert app.cancel(job.id).cancel_requested
        done = app.wait(job.id, timeout=WAIT)
        ended_at = time.monotonic()
        recorder.wait_for("JobCancelled", job.id)
        wait_until(lambda: worker.active == 0, what="the slot to be freed")
    assert done.state is S.CANCELLED
    assert ended_at - asked_at >= 0.45  # the grace period was given
    assert ended_at - asked_at < 10  # forced after the grace, not after the 60 s spin
    assert stopped_by == ["ForcedCancelInterrupt"]  # a CancelInterrupt raised by the worker
    frozen = counter[0]
    time.sleep(0.05)
    assert counter[0] == frozen  # the loop really stopped
    last = app.history(job.id)[-1]
    assert last.action == "cancel"
    assert last.from_state is S.RUNNING


def test_a_forced_sync_cancel_is_not_recorded_as_a_checkpoint(make_app: AppFactory) -> None:
    """The history must tell a job stopped by force from one that stopped at a checkpoint
    (the async path says "stopped after the cancel grace period")."""
    app = make_app()
    spinning = threading.Event()

    @app.job("spin")
    def spin(ctx: JobContext, seconds: float) -> None:
        spinning.set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pass

    job = app.enqueue("spin", {"seconds": 10.0})
    with running_worker(app, cancel_grace=0.3):
        assert spinning.wait(WAIT)
        app.cancel(job.id)
        assert app.wait(job.id, timeout=WAIT).state is S.CANCELLED
    last = app.history(job.id)[-1]
    assert last.action == "cancel"
    assert "checkpoint" not in last.reason
    assert "grace" in last.reason


def test_an_async_job_stuck_in_an_await_is_cancelled_after_the_grace(
        make_app: AppFactory) -> None:
    app = make_app()
    sleeping = threading.Event()
    task_cancelled = threading.Event()

    @app.job("forever")
    async def forever(ctx: AsyncJobContext) -> None:
        sleeping.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            task_cancelled.set()
            raise

    recorder = Recorder(app)
    job = app.enqueue("forever")
    with running_worker(app, cancel_grace=0.5) as worker:
        assert sleeping.wait(WAIT)
        asked_at = time.monotonic()
        app.cancel(job.id, reason="too slow")
        done = app.wait(job.id, timeout=WAIT)
        ended_at = time.monotonic()
        assert task_cancelled.wait(WAIT)
        recorder.wait_for("JobCancelled", job.id)
        wait_until(lambda: worker.active == 0)
        assert worker.stats.cancelled == 1
    assert done.state is S.CANCELLED
    assert done.finished_at is not None
    assert ended_at - asked_at >= 0.45
    last = app.history(job.id)[-1]
    assert last.action == "cancel"
    assert "grace" in last.reason


def test_a_sync_job_blocked_in_c_code_is_abandoned_and_fenced_out(
        make_app: AppFactory) -> None:
    """An interrupt cannot land while a thread blocks in C; after the grace the worker records
    the cancel itself, frees the slot, and the thread's late outcome is dropped."""
    app = make_app()
    blocked = threading.Event()
    gate = Gate()
    returned = threading.Event()

    @app.job("stuck")
    def stuck(ctx: JobContext) -> str:
        blocked.set()
        try:
            gate.wait(10)
        finally:
            returned.set()
        return "too late"

    job = app.enqueue("stuck")
    with running_worker(app, cancel_grace=0.3) as worker:
        assert blocked.wait(WAIT)
        app.cancel(job.id)
        done = app.wait(job.id, timeout=WAIT)
        assert done.state is S.CANCELLED
        wait_until(lambda: worker.active == 0, what="the slot to be freed")
        assert not returned.is_set()
        gate.open()
        assert returned.wait(WAIT)
        wait_until(lambda: worker.stats.lost == 1, what="the late outcome to be dropped")
    final = app.get(job.id)
    assert final.state is S.CANCELLED
    assert final.result is None
    assert actions(app.history(job.id)) == ["create", "start", "request_cancel", "cancel"]
    assert "grace" in app.history(job.id)[-1].reason


def test_cancel_a_finished_job_is_refused(make_app: AppFactory) -> None:
    app = make_app()

    @app.job("fine")
    def fine(ctx: JobContext) -> int:
        return 1

    job = app.enqueue("fine")
    WorkerThread(app, burst=True).start().join()
    assert app.get(job.id).state is S.COMPLETED
    before = app.history(job.id)
    with pytest.raises(InvalidStateError, match="from completed to cancelled"):
        app.cancel(job.id)
    assert app.get(job.id).state is S.COMPLETED
    assert app.history(job.id) == before
    cancelled = app.enqueue("fine")
    app.cancel(cancelled.id)
    with pytest.raises(InvalidStateError, match="from cancelled to cancelled"):
        app.cancel(cancelled.id)
