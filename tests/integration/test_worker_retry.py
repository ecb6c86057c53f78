"""Failures, automatic and manual retries, the attempt counter, exhaustion and requeue."""

from __future__ import annotations

import threading

import pytest

from conveyor import Backoff, InvalidStateError, JobContext, JobState, transitions
from conveyor.changes import Lease
from conveyor.model import JobError
from tests.conftest import AppFactory, FakeClock
from tests.integration.test_worker_helpers import (
    TINY,
    Gate,
    Recorder,
    WorkerThread,
    actions,
    assert_history_chain,
    running_worker,
    wait_state,
)

S = JobState


class Boom(RuntimeError):
    pass


def test_a_job_that_fails_twice_then_succeeds(make_app: AppFactory) -> None:
    app = make_app()
    attempts: list[int] = []

    @app.job("flaky", max_attempts=3, backoff=TINY)
    def flaky(ctx: JobContext, fail_times: int) -> dict[str, int]:
        attempts.append(ctx.job.attempt)
        if ctx.job.attempt < fail_times:
            raise Boom(f"attempt {ctx.job.attempt} failed")
        return {"attempt": ctx.job.attempt}

    recorder = Recorder(app)
    job = app.enqueue("flaky", {"fail_times": 2})
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.result == {"attempt": 2}
    assert done.attempt == 2
    assert done.error is None  # cleared by the retry, not set again
    assert attempts == [0, 1, 2]

    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "fail", "retry", "start", "fail", "retry",
                                "start", "complete"]
    assert [h.attempt for h in history] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    fails = [h for h in history if h.action == "fail"]
    assert all(h.reason.startswith("raised Boom: attempt") for h in fails)
    assert all(h.actor == runner.worker.worker_id for h in history[1:])
    retries = [h for h in history if h.action == "retry"]
    assert all("automatic retry" in h.reason for h in retries)

    recorder.wait_for("JobCompleted", job.id)
    assert recorder.names(job.id) == [
        "JobCreated", "JobStarted", "JobFailed", "JobRetried", "JobStarted", "JobFailed",
        "JobRetried", "JobStarted", "JobCompleted"]
    failed_event = recorder.wait_for("JobFailed", job.id)
    assert failed_event.job.state is S.FAILED
    assert failed_event.reason == "raised Boom: attempt 0 failed"
    stats = runner.worker.stats
    assert (stats.claimed, stats.retried, stats.completed, stats.failed) == (3, 2, 1, 0)


def test_an_exhausted_job_stays_failed_with_its_error(make_app: AppFactory) -> None:
    app = make_app()
    runs: list[int] = []

    @app.job("doomed", max_attempts=2, backoff=TINY)
    def doomed(ctx: JobContext) -> None:
        runs.append(ctx.job.attempt)
        raise Boom(f"no luck on attempt {ctx.job.attempt}")

    job = app.enqueue("doomed")
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    failed = app.get(job.id)
    assert failed.state is S.FAILED
    assert failed.attempt == 2
    assert failed.max_attempts == 2
    assert runs == [0, 1, 2]  # 1 + max_attempts runs
    assert failed.is_terminal
    assert not failed.can_retry
    assert failed.finished_at is not None
    assert failed.error is not None
    assert failed.error.type == "Boom"
    assert failed.error.message == "no luck on attempt 2"
    assert "Traceback" in failed.error.traceback
    assert "in doomed" in failed.error.traceback
    assert "no luck on attempt 2" in failed.error.traceback
    assert "retry" not in failed.legal_actions
    assert "requeue" in failed.legal_actions
    assert runner.worker.stats.failed == 1
    assert runner.worker.stats.retried == 2
    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "fail", "retry", "start", "fail", "retry",
                                "start", "fail"]
    assert history[-1].to_state is S.FAILED
    assert history[-1].attempt == 2

    before = app.history(job.id)
    with pytest.raises(InvalidStateError) as caught:
        app.retry(job.id)
    message = str(caught.value)
    assert "failed" in message
    assert "pending" in message
    assert "requeue" in message
    assert app.get(job.id).state is S.FAILED
    assert app.history(job.id) == before

    copy = app.requeue(job.id, actor="ops")
    assert copy.id != job.id
    assert copy.requeued_from == job.id
    assert copy.state is S.PENDING
    assert copy.attempt == 0
    assert copy.max_attempts == 2
    assert copy.error is None
    assert copy.params == failed.params
    assert copy.job_type == "doomed"
    assert app.get(job.id).state is S.FAILED  # the original is left as it was
    assert app.history(job.id) == before
    create = app.history(copy.id)[0]
    assert (create.action, create.actor) == ("create", "ops")


def test_an_automatic_retry_waits_for_its_backoff(make_app: AppFactory) -> None:
    app = make_app()
    runs: list[int] = []

    @app.job("once", max_attempts=0)
    def once(ctx: JobContext) -> str:
        runs.append(ctx.job.attempt)
        if len(runs) == 1:
            raise Boom("first")
        return "second"

    # max_attempts=0 on the type; the job itself may be retried once
    job = app.enqueue("once", max_attempts=1, backoff=Backoff(base=60))
    with running_worker(app):
        # with a 60 s backoff the automatic retry leaves the job pending, not yet runnable
        pending = wait_state(app, job.id, S.PENDING, attempt=1)
        assert pending.error is None
        assert pending.finished_at is None
    assert runs == [0]
    history = app.history(job.id)
    assert actions(history) == ["create", "start", "fail", "retry"]
    assert history[2].from_state is S.RUNNING
    assert history[3].to_state is S.PENDING


def test_manual_retry_of_a_failed_job_with_attempts_left(make_app: AppFactory) -> None:
    """A worker retries at once in the same transaction, so a failed job with attempts left
    is built here with the store's own transitions (a failure recorded without its retry)."""
    app = make_app()
    ran = threading.Event()

    @app.job("again", max_attempts=2)
    def again(ctx: JobContext) -> str:
        ran.set()
        return f"attempt {ctx.job.attempt}"

    job = app.enqueue("again")
    (claimed,) = app.store.claim("w", queues=[], job_types=["again"], limit=1,
                                 lease_seconds=30)
    assert claimed.lease_token is not None
    lease = Lease(job.id, claimed.lease_token, claimed.attempt)
    failed = app.apply([transitions.fail(lease, job.id, JobError("E", "boom"), "raised", "w")])
    assert failed.state is S.FAILED
    assert failed.can_retry
    assert not failed.is_terminal
    assert failed.error == JobError("E", "boom")

    recorder = Recorder(app)
    retried = app.retry(job.id, actor="dave", reason="fixed upstream")
    assert retried.state is S.PENDING
    assert retried.attempt == 1
    assert retried.error is None
    assert retried.finished_at is None
    last = app.history(job.id)[-1]
    assert (last.action, last.actor, last.reason, last.attempt) == (
        "retry", "dave", "fixed upstream", 1)
    assert recorder.names(job.id) == ["JobRetried"]

    runner = WorkerThread(app, burst=True).start()
    runner.join()
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.result == "attempt 1"
    assert ran.is_set()


def test_the_checkpoint_survives_a_retry(make_app: AppFactory) -> None:
    app = make_app()
    seen: list[tuple[int, dict[str, int], int]] = []

    @app.job("resumable", max_attempts=2, backoff=TINY)
    def resumable(ctx: JobContext, total: int) -> int:
        seen.append((ctx.job.attempt, ctx.checkpoint_data, ctx.job.progress.current_step))
        start = ctx.checkpoint_data.get("next", 0)
        for step in range(start, total):
            ctx.progress(step + 1, total)
            ctx.checkpoint({"next": step + 1})
            if step == 4 and ctx.job.attempt == 0:
                raise Boom("crashed half way")
        return total

    job = app.enqueue("resumable", {"total": 8})
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.result == 8
    assert done.attempt == 1
    assert seen == [(0, {}, 0), (1, {"next": 5}, 5)]
    assert done.progress.current_step == 8


def test_cancelling_a_job_waiting_for_its_backoff_stops_retries(
        make_app: AppFactory, fake_clock: FakeClock) -> None:
    app = make_app(clock=fake_clock, rand=lambda: 0.0)
    runs: list[int] = []

    @app.job("fails", max_attempts=5, backoff=Backoff(base=60, max_delay=60))
    def fails(ctx: JobContext) -> None:
        runs.append(ctx.job.attempt)
        raise Boom("always")

    recorder = Recorder(app)
    job = app.enqueue("fails")
    with running_worker(app):
        recorder.wait_for("JobRetried", job.id)
        waiting = app.get(job.id)
        assert waiting.state is S.PENDING
        assert waiting.attempt == 1
        assert waiting.error is None
        assert (waiting.run_at - app.store.now()).total_seconds() == pytest.approx(60, abs=1)
        cancelled = app.cancel(job.id, actor="erin", reason="stop trying")
        assert cancelled.state is S.CANCELLED
    fake_clock.advance(3600)  # far past the backoff
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    assert runs == [0]
    final = app.get(job.id)
    assert final.state is S.CANCELLED
    assert final.attempt == 1
    assert app.store.claim("w", queues=[], job_types=["fails"], limit=5,
                           lease_seconds=30) == []
    last = app.history(job.id)[-1]
    assert (last.action, last.from_state, last.actor, last.reason) == (
        "cancel", S.PENDING, "erin", "stop trying")


def test_max_attempts_zero_runs_once_and_stays_failed(make_app: AppFactory) -> None:
    app = make_app()
    runs: list[int] = []

    @app.job("one-shot", max_attempts=0)
    def one_shot(ctx: JobContext) -> None:
        runs.append(ctx.job.attempt)
        raise Boom("once")

    job = app.enqueue("one-shot")
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    failed = app.get(job.id)
    assert runs == [0]
    assert failed.state is S.FAILED
    assert failed.is_terminal
    assert actions(app.history(job.id)) == ["create", "start", "fail"]


def test_requeue_with_keep_checkpoint_resumes_the_copy(make_app: AppFactory) -> None:
    app = make_app()
    seen: list[dict[str, int]] = []
    gate = Gate()

    @app.job("stubborn", max_attempts=0)
    def stubborn(ctx: JobContext) -> str:
        seen.append(ctx.checkpoint_data)
        ctx.checkpoint({"next": 3})
        if not gate.is_open():
            raise Boom("not yet")
        return "done"

    job = app.enqueue("stubborn")
    WorkerThread(app, burst=True).start().join()
    assert app.get(job.id).state is S.FAILED
    gate.open()
    copy = app.requeue(job.id, keep_checkpoint=True)
    assert copy.progress.last_checkpoint == {"next": 3}
    plain = app.requeue(job.id)
    assert plain.progress.last_checkpoint == {}
    WorkerThread(app, burst=True).start().join()
    assert app.get(copy.id).state is S.COMPLETED
    assert app.get(plain.id).state is S.COMPLETED
    assert sorted(map(str, seen)) == sorted(map(str, [{}, {"next": 3}, {}]))
    with pytest.raises(InvalidStateError, match="requeue"):
        app.requeue(app.enqueue("stubborn").id)
