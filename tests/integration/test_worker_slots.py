"""A worker's slots are a pool of threads reused across jobs, and a job that will not stop
costs the worker its thread, never a slot."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from conveyor import EnqueueRequest, JobContext, JobState
from conveyor.errors import StoreError
from conveyor.worker.slots import Slot, SlotPool
from tests.conftest import AppFactory
from tests.integration.test_worker_helpers import (
    TINY,
    WAIT,
    Gate,
    WorkerThread,
    running_worker,
    wait_until,
)

S = JobState


def test_jobs_run_on_a_few_reused_threads(make_app: AppFactory) -> None:
    app = make_app()
    threads: set[threading.Thread] = set()
    lock = threading.Lock()

    @app.job("noop")
    def noop(ctx: JobContext) -> None:
        with lock:
            threads.add(threading.current_thread())

    jobs = app.enqueue_many([EnqueueRequest("noop") for _ in range(40)])
    runner = WorkerThread(app, burst=True, concurrency=3).start()
    runner.join(timeout=60)
    assert runner.worker.stats.completed == 40
    assert all(app.get(job.id).state is S.COMPLETED for job in jobs)
    assert 1 <= len(threads) <= 3, f"{len(threads)} threads for 40 jobs on 3 slots"


def test_a_job_stuck_past_its_timeout_does_not_cost_a_slot(make_app: AppFactory) -> None:
    """With one slot, a job blocked in C code past its timeout is abandoned; the next job runs
    on a fresh thread while the stuck one is still blocked, and the stuck thread, once it
    returns, is not used again."""
    app = make_app()
    gate = Gate()
    ran_on: dict[str, threading.Thread] = {}

    @app.job("blocked", timeout=0.2, max_attempts=0)
    def blocked(ctx: JobContext) -> str:
        ran_on["blocked"] = threading.current_thread()
        gate.wait(30)
        return "late"

    @app.job("next")
    def next_job(ctx: JobContext, name: str) -> str:
        ran_on[name] = threading.current_thread()
        return name

    stuck = app.enqueue("blocked")
    with running_worker(app, concurrency=1, cancel_grace=0.3) as worker:
        assert app.wait(stuck.id, timeout=WAIT).state is S.FAILED
        after = app.enqueue("next", {"name": "after"})
        assert app.wait(after.id, timeout=WAIT).result == "after"
        assert ran_on["blocked"].is_alive(), "the stuck job is still blocked"
        assert ran_on["after"] is not ran_on["blocked"]
        gate.open()
        wait_until(lambda: worker.stats.lost == 1, what="the late result to be dropped")
        ran_on["blocked"].join(WAIT)
        assert not ran_on["blocked"].is_alive(), "the written-off thread ends"
        last = app.enqueue("next", {"name": "last"})
        assert app.wait(last.id, timeout=WAIT).result == "last"
        assert ran_on["last"] is ran_on["after"], "the replacement thread is reused"
    assert app.get(stuck.id).result is None


def test_a_one_slot_worker_runs_job_after_job_on_its_slot_thread(
        make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one slot, the slot's thread records each completion and claims the next job itself:
    the loop hands over only the first job, every job still runs alone and is recorded with
    its history, and the worker's counts are the same as the loop's would be."""
    app = make_app()
    seen: list[tuple[threading.Thread, int]] = []
    submitted: list[Slot] = []
    real_submit = SlotPool.submit

    def submit(pool: SlotPool, slot: Slot) -> None:
        submitted.append(slot)
        real_submit(pool, slot)

    monkeypatch.setattr(SlotPool, "submit", submit)
    runner = WorkerThread(app, burst=True, concurrency=1)

    @app.job("noop")
    def noop(ctx: JobContext, n: int) -> int:
        seen.append((threading.current_thread(), runner.worker.active))
        return n

    jobs = app.enqueue_many([EnqueueRequest("noop", {"n": n}) for n in range(25)])
    runner.start().join(timeout=60)
    assert [app.get(job.id).result for job in jobs] == list(range(25))
    assert all(active == 1 for _, active in seen), "never more than the one slot"
    assert len({thread for thread, _ in seen}) == 1
    assert len(submitted) == 1, "the loop handed over only the first job"
    stats = runner.worker.stats
    assert (stats.claimed, stats.completed) == (25, 25)
    for job in jobs:
        assert [h.to_state for h in app.history(job.id)] == [S.PENDING, S.RUNNING, S.COMPLETED]


def test_a_slot_taking_over_from_a_finished_one_drops_only_that_one(
        make_app: AppFactory) -> None:
    """A 1-slot worker's next slot replaces its finished one in one step; a finished slot
    already forgotten (abandoned meanwhile) leaves whatever else is registered alone."""
    app = make_app()

    @app.job("noop")
    def noop(ctx: JobContext) -> None:
        return None

    app.enqueue_many([EnqueueRequest("noop") for _ in range(3)])
    first, second, third = app.store.claim("w", queues=[], job_types=["noop"], limit=3,
                                           lease_seconds=30)
    worker = app.worker(handle_signals=False)
    old = worker._slot_for(first)
    new = worker._slot_for(second, threading.current_thread(), replacing=old)
    assert list(worker._slots.values()) == [new]
    worker._forget(new)  # as an abandon does
    other = worker._slot_for(first)
    last = worker._slot_for(third, threading.current_thread(), replacing=new)
    assert set(map(id, worker._slots.values())) == {id(other), id(last)}


def test_a_one_slot_worker_claims_nothing_more_once_stopping(make_app: AppFactory) -> None:
    """A stop requested while the only slot's job runs: its completion is written, and its
    thread claims no next job (that job stays pending for another worker)."""
    app = make_app()
    gate, started = Gate(), Gate()

    @app.job("wait")
    def wait(ctx: JobContext) -> str:
        started.open()
        gate.wait()
        return "done"

    first = app.enqueue("wait")
    second = app.enqueue("wait")
    runner = WorkerThread(app, concurrency=1).start()
    assert started.wait(WAIT)
    runner.worker.stop()
    gate.open()
    runner.thread.join(WAIT)
    assert not runner.thread.is_alive()
    assert app.get(first.id).state is S.COMPLETED
    assert app.get(second.id).state is S.PENDING
    assert runner.worker.stats.claimed == 1


def test_a_store_error_in_the_slot_threads_claim_loses_nothing(
        make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The slot thread's claim fails (a store outage): the completion it carried is handed
    back and written by the completer, and the loop claims the next jobs."""
    app = make_app()

    @app.job("noop")
    def noop(ctx: JobContext, n: int) -> int:
        return n

    jobs = app.enqueue_many([EnqueueRequest("noop", {"n": n}) for n in range(6)])
    runner = WorkerThread(app, burst=True, concurrency=1)
    engine = runner.worker.engine
    real = engine.finish_and_claim
    failed: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("conveyor-job") and len(failed) < 3:
            failed.append(1)
            raise StoreError("injected outage")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "finish_and_claim", flaky)
    runner.start().join(timeout=60)
    assert len(failed) == 3
    assert [app.get(job.id).result for job in jobs] == list(range(6))
    assert runner.worker.stats.completed == 6
    assert runner.worker.stats.lost == 0


def test_a_one_slot_worker_records_every_kind_of_outcome_between_its_own_claims(
        make_app: AppFactory) -> None:
    """Failures (retried), pauses and completions in a row on the one slot: each is recorded
    as the loop would record it, and the slot's thread goes on claiming after each."""
    app = make_app()

    @app.job("flaky", max_attempts=2, backoff=TINY)
    def flaky(ctx: JobContext, n: int) -> int:
        if ctx.job.attempt == 0:
            raise ValueError(f"first try of {n}")
        return n

    @app.job("pausing")
    def pausing(ctx: JobContext) -> None:
        app.pause(ctx.job.id)
        ctx.checkpoint({"at": 1})

    flakies = app.enqueue_many([EnqueueRequest("flaky", {"n": n}) for n in range(5)])
    paused = app.enqueue("pausing")
    runner = WorkerThread(app, burst=True, concurrency=1).start()
    runner.join(timeout=60)
    assert [app.get(job.id).result for job in flakies] == list(range(5))
    assert app.get(paused.id).state is S.PAUSED
    stats = runner.worker.stats
    assert (stats.claimed, stats.retried, stats.completed, stats.paused) == (11, 5, 5, 1)
