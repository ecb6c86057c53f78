"""Per-job timeouts: a job that runs too long fails "timed out" and is retried per policy."""

from __future__ import annotations

import asyncio
import threading
import time

from conveyor import AsyncJobContext, JobContext, JobState
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


def _spin_until(seconds: float) -> int:
    """Pure Python work that never checkpoints (bounded, so a broken test cannot hang)."""
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n += 1
    return n


def test_a_sync_job_past_its_timeout_fails_timed_out(make_app: AppFactory) -> None:
    app = make_app()
    began: list[float] = []
    interrupted: list[str] = []

    @app.job("spin", timeout=0.3, max_attempts=0)
    def spin(ctx: JobContext) -> int:
        began.append(time.monotonic())
        try:
            return _spin_until(60)
        except BaseException as exc:
            interrupted.append(type(exc).__name__)
            raise

    recorder = Recorder(app)
    job = app.enqueue("spin")
    assert job.timeout == 0.3
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    ended = time.monotonic()
    failed = app.get(job.id)
    assert failed.state is S.FAILED
    assert failed.is_terminal
    assert failed.error is not None
    assert failed.error.type == "TimeoutError"
    assert "0.3" in failed.error.message
    assert 0.25 <= ended - began[0] < 10  # stopped at the timeout, not after the 60 s spin
    assert interrupted == ["TimeoutInterrupt"]
    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "fail"]
    assert history[-1].reason == "timed out"
    assert history[-1].actor == runner.worker.worker_id
    failed_event = recorder.wait_for("JobFailed", job.id)
    assert failed_event.reason == "timed out"


def test_a_timed_out_job_is_retried_per_its_policy(make_app: AppFactory) -> None:
    app = make_app()
    runs: list[int] = []

    @app.job("slow", timeout=0.2, max_attempts=1, backoff=TINY)
    def slow(ctx: JobContext) -> int:
        runs.append(ctx.job.attempt)
        return _spin_until(10)

    job = app.enqueue("slow")
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    failed = app.get(job.id)
    assert failed.state is S.FAILED
    assert failed.attempt == 1
    assert runs == [0, 1]
    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "fail", "retry", "start", "fail"]
    assert [h.reason for h in history if h.action == "fail"] == ["timed out", "timed out"]


def test_a_retry_after_a_timeout_can_succeed(make_app: AppFactory) -> None:
    app = make_app()

    @app.job("sometimes-slow", timeout=0.2, max_attempts=2, backoff=TINY)
    def sometimes_slow(ctx: JobContext) -> str:
        if ctx.job.attempt == 0:
            _spin_until(10)
        return f"attempt {ctx.job.attempt}"

    job = app.enqueue("sometimes-slow")
    WorkerThread(app, burst=True).start().join()
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.result == "attempt 1"
    assert done.error is None


def test_an_async_job_past_its_timeout_fails_timed_out(make_app: AppFactory) -> None:
    app = make_app()
    task_cancelled = threading.Event()

    @app.job("await-forever", max_attempts=0)
    async def await_forever(ctx: AsyncJobContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            task_cancelled.set()
            raise

    job = app.enqueue("await-forever", timeout=0.3)
    began = time.monotonic()
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    elapsed = time.monotonic() - began
    failed = app.get(job.id)
    assert failed.state is S.FAILED
    assert failed.error is not None
    assert failed.error.type == "TimeoutError"
    assert 0.25 <= elapsed < 10  # cancelled at the timeout, not after the hour-long sleep
    assert task_cancelled.wait(WAIT)
    assert app.history(job.id)[-1].reason == "timed out"


def test_a_job_within_its_timeout_completes(make_app: AppFactory) -> None:
    app = make_app()

    @app.job("fast", timeout=5)
    async def fast(ctx: AsyncJobContext) -> str:
        await asyncio.sleep(0.01)
        return "in time"

    job = app.enqueue("fast")
    WorkerThread(app, burst=True).start().join()
    assert app.get(job.id).result == "in time"


def test_a_job_blocked_in_c_past_its_timeout_is_abandoned(make_app: AppFactory) -> None:
    """The interrupt cannot land in a blocking C call: the worker records the failure itself
    after the grace, frees the slot, and fences out the thread's late result."""
    app = make_app()
    gate = Gate()
    returned = threading.Event()

    @app.job("blocked", timeout=0.2, max_attempts=0)
    def blocked(ctx: JobContext) -> str:
        try:
            gate.wait(10)
        finally:
            returned.set()
        return "late"

    job = app.enqueue("blocked")
    with running_worker(app, cancel_grace=0.3) as worker:
        failed = app.wait(job.id, timeout=WAIT)
        assert failed.state is S.FAILED
        assert failed.error is not None
        assert failed.error.type == "TimeoutError"
        wait_until(lambda: worker.active == 0, what="the slot to be freed")
        gate.open()
        assert returned.wait(WAIT)
        wait_until(lambda: worker.stats.lost == 1, what="the late result to be dropped")
    final = app.get(job.id)
    assert final.state is S.FAILED
    assert final.result is None
    assert actions(app.history(job.id)) == ["create", "start", "fail"]
    assert app.history(job.id)[-1].reason == "timed out"
