"""The reaper and lease fencing, with a fake clock: lost workers, over-long pauses, races."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest

from conveyor import Backoff, Conveyor, Job, JobContext, JobState, WaitTimeout, transitions
from conveyor.changes import ChangeRefused, Lease
from conveyor.errors import LeaseLost
from conveyor.model import JobError, JobProgress
from conveyor.worker import ReapResult, reap
from tests.conftest import AppFactory, FakeClock
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
NOTHING = ReapResult(0, 0)


def _app(make_app: AppFactory, clock: FakeClock, **job_options: Any) -> Conveyor:
    app = make_app(clock=clock, rand=lambda: 0.0)
    options: dict[str, Any] = {"max_attempts": 3, "backoff": Backoff(base=5, max_delay=5),
                               **job_options}

    @app.job("t", **options)
    def t(ctx: JobContext) -> dict[str, object]:
        return {"attempt": ctx.job.attempt, "checkpoint": ctx.checkpoint_data}

    return app


def _claim(app: Conveyor, lease_seconds: float = 2.0, worker: str = "dead-worker") -> Job:
    """Claim the next job directly, as a worker that then dies would have."""
    (job,) = app.store.claim(worker, queues=[], job_types=["t"], limit=1,
                             lease_seconds=lease_seconds)
    assert job.state is S.RUNNING
    return job


def _lease(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job.id, job.lease_token, job.attempt)


def test_a_lost_job_is_failed_worker_lost_and_retried(make_app: AppFactory,
                                                      fake_clock: FakeClock) -> None:
    app = _app(make_app, fake_clock)
    recorder = Recorder(app)
    job = app.enqueue("t")
    claimed = _claim(app)
    app.store.save_progress(_lease(claimed), JobProgress(3, 10, {"next": 3}), checkpoint=True)

    assert reap(app) == NOTHING
    fake_clock.advance(1.9)
    assert reap(app) == NOTHING  # the lease still holds
    assert app.get(job.id).state is S.RUNNING
    fake_clock.advance(0.2)
    assert reap(app) == ReapResult(lost=1)

    retried = app.get(job.id)
    assert retried.state is S.PENDING
    assert retried.attempt == 1
    assert retried.error is None
    assert retried.worker_id is None
    assert retried.lease_token is None
    assert retried.progress.last_checkpoint == {"next": 3}
    assert (retried.run_at - app.store.now()).total_seconds() == pytest.approx(5)
    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "fail", "retry"]
    assert history[1].actor == "dead-worker"
    assert (history[2].actor, history[2].reason) == ("reaper", "worker lost")
    assert history[2].attempt == 0
    assert history[3].attempt == 1
    assert recorder.names(job.id) == ["JobCreated", "JobFailed", "JobRetried"]
    assert recorder.of(job.id)[1].reason == "worker lost"
    assert reap(app) == NOTHING  # nothing left to reap

    # the retry is not runnable before its backoff, then resumes from the checkpoint
    assert app.store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=2) == []
    fake_clock.advance(5.1)
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.result == {"attempt": 1, "checkpoint": {"next": 3}}


def test_a_lost_job_with_no_attempts_left_stays_failed(make_app: AppFactory,
                                                       fake_clock: FakeClock) -> None:
    app = _app(make_app, fake_clock, max_attempts=0)
    job = app.enqueue("t")
    _claim(app)
    fake_clock.advance(2.5)
    assert reap(app) == ReapResult(lost=1)
    failed = app.get(job.id)
    assert failed.state is S.FAILED
    assert failed.is_terminal
    assert failed.attempt == 0
    assert failed.error is not None
    assert failed.error.type == "WorkerLost"
    assert "dead-worker" in failed.error.message
    assert failed.finished_at is not None
    assert actions(app.history(job.id)) == ["create", "start", "fail"]
    assert reap(app) == NOTHING


def test_a_lost_job_exhausts_its_attempts_one_crash_at_a_time(
        make_app: AppFactory, fake_clock: FakeClock) -> None:
    app = _app(make_app, fake_clock, max_attempts=2)
    job = app.enqueue("t")
    for attempt in range(3):
        claimed = _claim(app)
        assert claimed.attempt == attempt
        fake_clock.advance(3)  # past the lease
        assert reap(app) == ReapResult(lost=1)
        fake_clock.advance(100)  # past the retry's backoff
    final = app.get(job.id)
    assert final.state is S.FAILED
    assert final.attempt == 2
    assert final.is_terminal
    assert app.store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=2) == []


def test_a_heartbeat_keeps_the_lease(make_app: AppFactory, fake_clock: FakeClock) -> None:
    app = _app(make_app, fake_clock)
    job = app.enqueue("t")
    lease = _lease(_claim(app))
    fake_clock.advance(1.5)
    assert set(app.store.heartbeat([lease], 2.0)) == {lease.token}
    fake_clock.advance(1.5)
    assert reap(app) == NOTHING
    assert app.get(job.id).state is S.RUNNING
    fake_clock.advance(1.0)
    assert reap(app) == ReapResult(lost=1)


def test_a_lost_job_asked_to_cancel_is_cancelled(make_app: AppFactory,
                                                 fake_clock: FakeClock) -> None:
    app = _app(make_app, fake_clock)
    job = app.enqueue("t")
    _claim(app)
    app.cancel(job.id)
    fake_clock.advance(3)
    assert reap(app) == ReapResult(lost=1)
    cancelled = app.get(job.id)
    assert cancelled.state is S.CANCELLED
    assert cancelled.attempt == 0
    assert app.history(job.id)[-1].reason == "worker lost while cancelling"


def test_a_pause_past_its_timeout_is_cancelled(make_app: AppFactory,
                                               fake_clock: FakeClock) -> None:
    app = _app(make_app, fake_clock)
    recorder = Recorder(app)
    job = app.enqueue("t", pause_timeout=10)
    other = app.enqueue("t", pause_timeout=100)
    for _ in range(2):
        claimed = _claim(app)
        app.apply([transitions.pause_at_checkpoint(_lease(claimed), JobProgress(1, 2), "w")])
    assert app.get(job.id).state is S.PAUSED
    assert reap(app) == NOTHING
    fake_clock.advance(9.9)
    assert reap(app) == NOTHING
    fake_clock.advance(0.2)
    assert reap(app) == ReapResult(pause_timeouts=1)

    cancelled = app.get(job.id)
    assert cancelled.state is S.CANCELLED
    assert cancelled.finished_at is not None
    assert cancelled.progress.current_step == 1
    last = assert_history_chain(app, job.id)[-1]
    assert (last.action, last.from_state, last.actor) == ("cancel", S.PAUSED, "reaper")
    assert "pause timeout" in last.reason
    event = recorder.wait_for("JobCancelled", job.id)
    assert "pause timeout" in event.reason
    assert app.get(other.id).state is S.PAUSED  # its own, longer timeout has not passed
    assert reap(app) == NOTHING


def test_the_reaper_leaves_a_job_that_completed_alone(make_app: AppFactory,
                                                      fake_clock: FakeClock) -> None:
    app = _app(make_app, fake_clock)
    job = app.enqueue("t")
    lease = _lease(_claim(app))
    app.apply([transitions.complete(lease, {"ok": True}, "w")])
    before = app.history(job.id)
    fake_clock.advance(100)
    assert reap(app) == NOTHING
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.result == {"ok": True}
    assert app.history(job.id) == before


def test_a_reaped_worker_cannot_write_any_more(make_app: AppFactory,
                                              fake_clock: FakeClock) -> None:
    app = _app(make_app, fake_clock)
    job = app.enqueue("t")
    stale = _lease(_claim(app))
    fake_clock.advance(3)
    assert reap(app) == ReapResult(lost=1)
    before = app.history(job.id)

    with pytest.raises(ChangeRefused):
        app.apply([transitions.complete(stale, {"late": True}, "dead-worker")])
    with pytest.raises(ChangeRefused):
        app.apply([transitions.fail(stale, job.id, JobError("E", "late"), "raised",
                                    "dead-worker")])
    with pytest.raises(ChangeRefused):
        app.apply([transitions.pause_at_checkpoint(stale, JobProgress(9, 9), "dead-worker")])
    with pytest.raises(LeaseLost):
        app.store.save_progress(stale, JobProgress(9, 9, {"late": 1}), checkpoint=True)
    assert app.store.heartbeat([stale], 2.0) == {}
    after = app.get(job.id)
    assert after.state is S.PENDING
    assert after.result is None
    assert after.progress.current_step == 0
    assert app.history(job.id) == before

    # still refused once the job runs again under a new lease
    fake_clock.advance(10)
    fresh = _claim(app, worker="new-worker")
    assert fresh.attempt == 1
    with pytest.raises(ChangeRefused):
        app.apply([transitions.complete(stale, {"late": True}, "dead-worker")])
    with pytest.raises(LeaseLost):
        app.store.save_progress(stale, JobProgress(9, 9))
    app.apply([transitions.complete(_lease(fresh), {"fresh": True}, "new-worker")])
    assert app.get(job.id).result == {"fresh": True}


def test_two_reapers_racing_move_a_lost_job_once(make_app: AppFactory,
                                                 fake_clock: FakeClock) -> None:
    apps = [_app(make_app, fake_clock) for _ in range(3)]
    jobs = [apps[0].enqueue("t") for _ in range(10)]
    for _ in jobs:
        _claim(apps[0])
    fake_clock.advance(3)
    barrier = threading.Barrier(len(apps))
    results: list[ReapResult] = []
    lock = threading.Lock()

    def run(app: Conveyor) -> None:
        barrier.wait(WAIT)
        result = reap(app)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sum(r.lost for r in results) == 10
    for job in jobs:
        history = apps[0].history(job.id)
        assert actions(history) == ["create", "start", "fail", "retry"]
        assert apps[0].get(job.id).attempt == 1


def test_a_worker_whose_lease_was_reaped_has_its_outcome_dropped(
        make_app: AppFactory, fake_clock: FakeClock) -> None:
    """A real worker stalls (say, a long GC pause) past its lease; the job is reaped, retried
    and completed by a new run; the stalled run's late result is refused."""
    app = make_app(clock=fake_clock, rand=lambda: 0.0)
    gate = Gate()
    first_running = threading.Event()
    recorder = Recorder(app)

    @app.job("stall", max_attempts=2, backoff=Backoff(base=1, max_delay=1))
    def stall(ctx: JobContext) -> dict[str, int]:
        if ctx.job.attempt == 0:
            first_running.set()
            gate.wait()
        return {"attempt": ctx.job.attempt}

    job = app.enqueue("stall")
    # heartbeats and the worker's own reaper are far apart: the test moves time
    with running_worker(app, lease_seconds=1000, heartbeat_interval=500) as worker:
        assert first_running.wait(WAIT)
        fake_clock.advance(2000)
        assert reap(app) == ReapResult(lost=1)
        fake_clock.advance(10)  # past the retry's backoff
        recorder.wait_for("JobStarted", job.id, count=2)
        done = app.wait(job.id, timeout=WAIT)
        assert done.state is S.COMPLETED
        assert done.result == {"attempt": 1}
        gate.open()  # the stalled first run now returns its result
        wait_until(lambda: worker.stats.lost == 1, what="the stale outcome to be dropped")
    final = app.get(job.id)
    assert final.result == {"attempt": 1}
    history = assert_history_chain(app, job.id)
    assert actions(history) == ["create", "start", "fail", "retry", "start", "complete"]
    assert history[2].reason == "worker lost"


def test_a_worker_tracks_both_runs_of_a_job_it_got_back(make_app: AppFactory,
                                                        fake_clock: FakeClock) -> None:
    """The same worker may hold a stalled run of a job (its lease reaped) and the job's retry.
    Its bookkeeping must keep both: the retry must still be monitored (heartbeats, cancel
    enforcement) after the stalled run ends."""
    app = make_app(clock=fake_clock, rand=lambda: 0.0)
    gates = [Gate(), Gate()]
    running = [threading.Event(), threading.Event()]

    @app.job("stall", max_attempts=2, backoff=Backoff(base=1, max_delay=1))
    def stall(ctx: JobContext) -> dict[str, int]:
        running[ctx.job.attempt].set()
        gates[ctx.job.attempt].wait()
        return {"attempt": ctx.job.attempt}

    job = app.enqueue("stall")
    with running_worker(app, concurrency=3, lease_seconds=1000, heartbeat_interval=500,
                        cancel_grace=0.3) as worker:
        try:
            assert running[0].wait(WAIT)
            fake_clock.advance(2000)
            assert reap(app) == ReapResult(lost=1)
            fake_clock.advance(10)
            assert running[1].wait(WAIT)
            both_running = worker.active
            gates[0].open()  # the stalled run ends; the retry is still running
            wait_until(lambda: worker.stats.lost == 1)
            retry_running = worker.active
            app.cancel(job.id)  # the retry never checkpoints: cancelled after the grace
            with contextlib.suppress(WaitTimeout):
                app.wait(job.id, timeout=3)
            after_cancel = app.get(job.id)
        finally:
            for gate in gates:
                gate.open()
    assert after_cancel.state is S.CANCELLED, "the retry's cancel was never enforced"
    assert both_running == 2, "two runs of the job were executing"
    assert retry_running == 1, "the live retry must still hold its slot"
