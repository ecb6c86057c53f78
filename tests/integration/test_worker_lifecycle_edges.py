"""Lifecycle edges through a real worker (issue 8, items 15, 16, 17, 20 and 25).

The store-level halves of these run on both stores in tests/contract; here the worker, the
reaper and the executor are driven on SQLite, with the fake clock wherever time must pass.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

import pytest

from conveyor import AsyncJobContext, Backoff, Conveyor, Job, JobContext, JobState, transitions
from conveyor.changes import Change, Lease
from conveyor.context import Execution
from conveyor.model import JobProgress
from conveyor.worker import reap
from conveyor.worker.worker import _Slot
from tests.conftest import AppFactory, FakeClock
from tests.integration.test_worker_helpers import (
    WAIT,
    Gate,
    WorkerThread,
    actions,
    assert_history_chain,
    running_worker,
    wait_state,
)

S = JobState
TOTAL = 5


def _lease(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job.id, job.lease_token, job.attempt)


def _steps(app: Conveyor, name: str = "steps", **options: Any) -> None:
    """A resumable sync job: one checkpoint per step; returns the step it started from."""

    @app.job(name, **options)
    def steps(ctx: JobContext) -> dict[str, int]:
        start = int(ctx.checkpoint_data.get("next", 0))
        for step in range(start, TOTAL):
            ctx.checkpoint({"next": step + 1})
        return {"from": start}


# -- 15 -----------------------------------------------------------------------------------------

def test_a_resumed_job_waiting_for_a_slot_outlives_its_pause_timeout(
        make_app: AppFactory, fake_clock: FakeClock) -> None:
    """Concurrency 1: A paused, B takes the slot, A resumed, A's pause_timeout passes."""
    app = make_app(clock=fake_clock)
    parked, gate_a, b_running, gate_b = threading.Event(), Gate(), threading.Event(), Gate()

    @app.job("a", pause_timeout=10)
    def a(ctx: JobContext) -> dict[str, int]:
        start = int(ctx.checkpoint_data.get("next", 0))
        for step in range(start, 3):
            if step == 1 and not gate_a.is_open():
                parked.set()
                gate_a.wait()
            ctx.checkpoint({"next": step + 1})
        return {"from": start}

    @app.job("b")
    def b(ctx: JobContext) -> None:
        b_running.set()
        gate_b.wait()

    job_a = app.enqueue("a")
    with running_worker(app, concurrency=1, lease_seconds=600, heartbeat_interval=0.5):
        assert parked.wait(WAIT)
        app.pause(job_a.id)
        gate_a.open()
        wait_state(app, job_a.id, S.PAUSED)
        app.enqueue("b")
        assert b_running.wait(WAIT)
        assert app.resume(job_a.id).resume_requested
        fake_clock.advance(11)  # past A's pause_timeout, while B holds the only slot
        assert reap(app).pause_timeouts == 0
        waiting = app.get(job_a.id)
        assert (waiting.state, waiting.resume_requested) == (S.PAUSED, True)
        gate_b.open()
        done = app.wait(job_a.id, timeout=WAIT)
    assert done.state is S.COMPLETED, actions(app.history(job_a.id))
    assert done.result == {"from": 2}


# -- 16 -----------------------------------------------------------------------------------------

def test_a_cancel_landing_between_the_flag_read_and_the_failure_write_wins(
        make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(rand=lambda: 0.0)
    runs: list[int] = []

    @app.job("raiser", max_attempts=3, backoff=Backoff(base=0))
    def raiser(ctx: JobContext) -> None:
        runs.append(ctx.job.attempt)
        raise RuntimeError("broke")

    job = app.enqueue("raiser")
    store = app.store
    real_apply = store.apply

    def cancel_first(changes: list[Change]) -> list[Job]:
        if changes[0].action == "fail":  # the worker has read the flags: no cancel yet
            real_apply([transitions.request(job.id, "cancel_requested", True,
                                            frozenset({S.RUNNING}), "op", "late cancel")])
        return real_apply(changes)

    monkeypatch.setattr(store, "apply", cancel_first)
    runner = WorkerThread(app, burst=True, cancel_grace=30).start()
    runner.join()
    done = app.get(job.id)
    assert done.state is S.CANCELLED, actions(app.history(job.id))
    assert runs == [0]  # never retried
    assert "RuntimeError" in app.history(job.id)[-1].reason
    assert runner.worker.stats.cancelled == 1 and runner.worker.stats.retried == 0


# -- 17 -----------------------------------------------------------------------------------------

def test_a_zombie_run_sharing_a_worker_with_the_new_run_gets_no_signals(
        make_app: AppFactory) -> None:
    app = make_app()
    _steps(app)
    job = app.enqueue("steps")
    (first,) = app.store.claim("w", queues=[], job_types=["steps"], limit=1, lease_seconds=30)
    app.store.apply([transitions.pause_at_checkpoint(_lease(first), None, "w")])
    app.resume(job.id)
    (second,) = app.store.claim("w", queues=[], job_types=["steps"], limit=1, lease_seconds=30)
    assert second.attempt == first.attempt

    worker = app.worker(handle_signals=False)
    zombie = _Slot(Execution(first, _lease(first), app.store))
    current = _Slot(Execution(second, _lease(second), app.store))
    worker._slots = {_lease(first).token: zombie, _lease(second).token: current}
    app.pause(job.id)
    worker._heartbeat()
    assert zombie.execution.lost and not zombie.execution.db_pause
    assert current.execution.db_pause and not current.execution.lost


def test_the_monitor_reads_flags_a_claim_read_in_this_round_in_the_next_one(
        make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slot claimed after the monitor's previous round began had its flags read by its
    claim: this round reads nothing for it (no query at all when it is the only one), the
    next round does; a slot whose flags are older (built by hand: never read) is read now."""
    app = make_app()
    _steps(app)
    older, newer = app.enqueue("steps"), app.enqueue("steps")
    claimed = app.store.claim("w", queues=[], job_types=["steps"], limit=2, lease_seconds=30)
    by_id = {job.id: job for job in claimed}
    worker = app.worker(handle_signals=False)
    reads: list[list[str]] = []
    get_jobs = app.store.get_jobs

    def counted(ids: Iterable[str]) -> list[Job]:
        asked = list(ids)
        reads.append(asked)
        return get_jobs(asked)

    def paused(slot: _Slot) -> bool:  # read anew each time (mypy would narrow the attribute)
        return slot.execution.db_pause

    monkeypatch.setattr(app.store, "get_jobs", counted)
    fresh = worker._slot_for(by_id[newer.id])  # claimed now: its flags are as fresh as a read
    worker._read_round = fresh.signals_read - 1.0  # the previous round began before the claim
    app.pause(newer.id)
    worker._tick_progress()
    assert reads == [] and not paused(fresh), "this round reads nothing"
    worker._tick_progress()
    assert reads == [[newer.id]] and paused(fresh), "the next round reads it"

    stale = _Slot(Execution(by_id[older.id], _lease(by_id[older.id]), app.store))
    worker._slots[_lease(by_id[older.id]).token] = stale
    worker._read_round = 0.0
    fresh.signals_read = 1.0  # read after the previous round began: not read again
    app.pause(older.id)
    worker._tick_progress()
    assert reads[-1] == [older.id] and paused(stale)
    assert stale.signals_read > 1.0, "a read flag's time is kept for the next round"


# -- 20 -----------------------------------------------------------------------------------------

def test_a_pause_requested_before_the_worker_died_holds_for_the_retried_run(
        make_app: AppFactory, fake_clock: FakeClock) -> None:
    app = make_app(clock=fake_clock, rand=lambda: 0.0)
    _steps(app, backoff=Backoff(base=0))
    job = app.enqueue("steps")
    (claimed,) = app.store.claim("dead-worker", queues=[], job_types=["steps"], limit=1,
                                 lease_seconds=2)
    app.store.save_progress(_lease(claimed), JobProgress(2, TOTAL, {"next": 2}), checkpoint=True)
    app.pause(job.id, actor="alice")
    fake_clock.advance(3)  # the worker died: its lease runs out
    assert reap(app).lost == 1
    retried = app.get(job.id)
    assert (retried.state, retried.attempt, retried.pause_requested) == (S.PENDING, 1, True)

    WorkerThread(app, burst=True).start().join()
    paused = app.get(job.id)
    assert paused.state is S.PAUSED, actions(app.history(job.id))
    assert not paused.resume_requested and not paused.pause_requested
    assert paused.progress.last_checkpoint == {"next": 3}  # paused at its first checkpoint

    app.resume(job.id)
    WorkerThread(app, burst=True).start().join()
    done = app.get(job.id)
    assert done.state is S.COMPLETED and done.result == {"from": 3}
    assert actions(assert_history_chain(app, job.id)) == [
        "create", "start", "request_pause", "fail", "retry", "start", "pause",
        "request_resume", "resume", "complete"]


# -- 25 (b): an async job honours pause and cancel at its checkpoint ---------------------------

class AsyncPages:
    """An ``async def`` job that parks before step 2 and checkpoints after every step."""

    def __init__(self, app: Conveyor) -> None:
        self.parked = threading.Event()
        self.gate = Gate()
        self.starts: list[int] = []
        app.job("pages")(self.run)

    async def run(self, ctx: AsyncJobContext) -> dict[str, int]:
        start = int(ctx.checkpoint_data.get("next", 0))
        self.starts.append(start)
        for step in range(start, TOTAL):
            if step == 2 and not self.gate.is_open():
                self.parked.set()
                await asyncio.to_thread(self.gate.wait)
            ctx.progress(step + 1, TOTAL)
            await ctx.checkpoint({"next": step + 1})
        return {"from": start}


def test_an_async_job_pauses_at_its_checkpoint_and_resumes_from_it(
        make_app: AppFactory) -> None:
    app = make_app()
    pages = AsyncPages(app)
    job = app.enqueue("pages")
    with running_worker(app, cancel_grace=30):
        assert pages.parked.wait(WAIT)
        app.pause(job.id)
        pages.gate.open()
        paused = wait_state(app, job.id, S.PAUSED)
        assert paused.progress.last_checkpoint == {"next": 3}
        assert app.history(job.id)[-1].reason == "paused at checkpoint"
        app.resume(job.id)
        done = app.wait(job.id, timeout=WAIT)
    assert done.state is S.COMPLETED
    assert done.result == {"from": 3}
    assert pages.starts == [0, 3]


def test_an_async_job_is_cancelled_at_its_checkpoint_with_the_checkpoint_saved(
        make_app: AppFactory) -> None:
    app = make_app()
    pages = AsyncPages(app)
    job = app.enqueue("pages")
    with running_worker(app, cancel_grace=30):  # the graceful path, never the forced one
        assert pages.parked.wait(WAIT)
        app.cancel(job.id)
        pages.gate.open()
        cancelled = app.wait(job.id, timeout=WAIT)
        assert cancelled.state is S.CANCELLED
        assert cancelled.progress.last_checkpoint == {"next": 3}
        assert app.history(job.id)[-1].reason == "cancelled at checkpoint"
        copy = app.requeue(job.id, keep_checkpoint=True)
        done = app.wait(copy.id, timeout=WAIT)
    assert done.state is S.COMPLETED and done.result == {"from": 3}
    assert pages.starts == [0, 3]
