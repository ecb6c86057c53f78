"""In-process workers on SQLite: the happy path, burst mode, claims that race, progress.

Each test runs a real worker in a background thread with short timings (see
``test_worker_helpers``) and waits on events or on the stored job, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import AsyncJobContext, Backoff, JobContext, JobState
from conveyor.worker import WorkerStats
from tests.conftest import AppFactory
from tests.integration.test_worker_helpers import (
    WAIT,
    Gate,
    Recorder,
    WorkerThread,
    assert_history_chain,
    running_worker,
    wait_state,
    wait_until,
)

S = JobState


# --------------------------------------------------------------------------------------------
# the happy path


def test_sync_job_goes_pending_running_completed(make_app: AppFactory) -> None:
    app = make_app()
    gate = Gate()
    threads: list[str] = []

    @app.job("math.add")
    def add(ctx: JobContext, a: int, b: int) -> dict[str, int]:
        threads.append(threading.current_thread().name)
        assert isinstance(ctx, JobContext)
        assert ctx.checkpoint_data == {}
        gate.wait()
        return {"sum": a + b}

    recorder = Recorder(app)
    job = app.enqueue("math.add", {"a": 2, "b": 3})
    assert job.state is S.PENDING
    assert job.started_at is None
    assert job.finished_at is None
    assert app.get(job.id).state is S.PENDING

    with running_worker(app) as worker:
        running = wait_state(app, job.id, S.RUNNING)
        assert running.started_at is not None
        assert running.finished_at is None
        assert running.worker_id == worker.worker_id
        assert running.lease_token is not None
        assert running.lease_expires_at is not None
        gate.open()
        done = app.wait(job.id, timeout=WAIT)
        recorder.wait_for("JobCompleted", job.id)

    assert done.state is S.COMPLETED
    assert done.result == {"sum": 5}
    assert done.error is None
    assert done.attempt == 0
    assert done.is_terminal
    assert done.started_at == running.started_at
    assert done.finished_at is not None
    assert done.started_at is not None
    assert done.finished_at >= done.started_at
    assert done.worker_id is None
    assert done.lease_token is None
    assert threads[0].startswith("conveyor-job-")

    history = assert_history_chain(app, job.id)
    assert [(h.action, h.from_state, h.to_state, h.actor) for h in history] == [
        ("create", None, S.PENDING, "api"),
        ("start", S.PENDING, S.RUNNING, worker.worker_id),
        ("complete", S.RUNNING, S.COMPLETED, worker.worker_id),
    ]
    assert all(h.attempt == 0 for h in history)
    assert recorder.names(job.id) == ["JobCreated", "JobStarted", "JobCompleted"]
    completed = recorder.of(job.id)[-1]
    assert completed.actor == worker.worker_id
    assert completed.from_state is S.RUNNING
    assert completed.job.result == {"sum": 5}


def test_async_job_goes_pending_running_completed(make_app: AppFactory) -> None:
    app = make_app()
    gate = Gate()
    seen: dict[str, Any] = {}

    @app.job("net.fetch")
    async def fetch(ctx: AsyncJobContext, url: str) -> dict[str, Any]:
        seen["loop"] = asyncio.get_running_loop()
        seen["ctx"] = type(ctx).__name__
        await ctx.checkpoint({"fetched": 0})
        await asyncio.to_thread(gate.wait)
        await asyncio.sleep(0.01)
        return {"url": url, "bytes": 42}

    recorder = Recorder(app)
    job = app.enqueue("net.fetch", {"url": "https://example.org"})
    with running_worker(app) as worker:
        running = wait_state(app, job.id, S.RUNNING)
        assert running.started_at is not None
        gate.open()
        done = app.wait(job.id, timeout=WAIT)
        recorder.wait_for("JobCompleted", job.id)

    assert done.state is S.COMPLETED
    assert done.result == {"url": "https://example.org", "bytes": 42}
    assert done.progress.last_checkpoint == {"fetched": 0}
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.finished_at >= done.started_at
    assert seen["ctx"] == "AsyncJobContext"
    assert isinstance(seen["loop"], asyncio.AbstractEventLoop)
    history = assert_history_chain(app, job.id)
    assert [(h.action, h.actor) for h in history] == [
        ("create", "api"), ("start", worker.worker_id), ("complete", worker.worker_id)]
    # the checkpoint is announced as progress if the monitor ticks before the job returns
    names = recorder.names(job.id)
    assert [n for n in names if n != "JobProgressed"] == [
        "JobCreated", "JobStarted", "JobCompleted"]
    assert names[:2] == ["JobCreated", "JobStarted"] and names[-1] == "JobCompleted"


def test_async_jobs_share_the_loop_and_run_concurrently(make_app: AppFactory) -> None:
    app = make_app()
    inside = 0
    loops: set[int] = set()

    @app.job("together")
    async def together(ctx: AsyncJobContext) -> int:
        nonlocal inside
        inside += 1  # one event loop thread: no lock needed
        loops.add(id(asyncio.get_running_loop()))
        deadline = time.monotonic() + WAIT
        while inside < 3 and time.monotonic() < deadline:  # all three awaiting at once
            await asyncio.sleep(0.01)
        return inside

    jobs = [app.enqueue("together") for _ in range(3)]
    runner = WorkerThread(app, burst=True, concurrency=3).start()
    runner.join()
    assert [app.get(j.id).result for j in jobs] == [3, 3, 3]
    assert len(loops) == 1


def test_concurrency_limits_jobs_running_at_once(make_app: AppFactory) -> None:
    app = make_app()
    gate = Gate()
    started = threading.Semaphore(0)

    @app.job("block")
    def block(ctx: JobContext) -> None:
        started.release()
        gate.wait()

    jobs = [app.enqueue("block") for _ in range(3)]
    with running_worker(app, concurrency=2) as worker:
        assert started.acquire(timeout=WAIT)
        assert started.acquire(timeout=WAIT)
        assert app.counts()[S.RUNNING] == 2
        assert app.counts()[S.PENDING] == 1
        assert worker.active == 2
        gate.open()
        for job in jobs:
            assert app.wait(job.id, timeout=WAIT).state is S.COMPLETED


# --------------------------------------------------------------------------------------------
# burst mode


def test_burst_returns_at_once_when_there_is_no_work(make_app: AppFactory) -> None:
    app = make_app()

    @app.job("noop")
    def noop(ctx: JobContext) -> None:
        return None

    began = time.monotonic()
    runner = WorkerThread(app, burst=True, poll_interval=30).start()
    runner.join(timeout=10)
    assert time.monotonic() - began < 10  # did not wait for work for a 30 s poll interval
    assert runner.worker.stats == WorkerStats()


def test_burst_runs_every_job_then_returns(make_app: AppFactory) -> None:
    app = make_app()

    @app.job("square")
    def square(ctx: JobContext, n: int) -> int:
        return n * n

    jobs = [app.enqueue("square", {"n": n}) for n in range(8)]
    runner = WorkerThread(app, burst=True, concurrency=3).start()
    runner.join()
    assert [app.get(j.id).result for j in jobs] == [n * n for n in range(8)]
    assert runner.worker.stats.claimed == 8
    assert runner.worker.stats.completed == 8
    assert app.counts()[S.COMPLETED] == 8


def test_burst_waits_out_a_retry_backoff(make_app: AppFactory) -> None:
    app = make_app(rand=lambda: 0.0)
    runs: list[float] = []

    @app.job("flaky", max_attempts=2, backoff=Backoff(base=0.3, max_delay=0.3))
    def flaky(ctx: JobContext) -> str:
        runs.append(time.monotonic())
        if ctx.job.attempt == 0:
            raise RuntimeError("first try fails")
        return "ok"

    job = app.enqueue("flaky")
    runner = WorkerThread(app, burst=True).start()
    runner.join()
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.result == "ok"
    assert done.attempt == 1
    assert len(runs) == 2
    assert runs[1] - runs[0] >= 0.25  # the backoff was honoured, not skipped
    stats = runner.worker.stats
    assert (stats.claimed, stats.retried, stats.completed) == (2, 1, 1)


def test_burst_does_not_wait_for_a_job_scheduled_far_ahead(make_app: AppFactory) -> None:
    """`--burst` is documented as "exit once no runnable work is left"; a job scheduled an
    hour from now is not runnable, so the worker must not block for an hour."""
    app = make_app()

    @app.job("later")
    def later(ctx: JobContext) -> None:
        return None

    now = app.enqueue("later")
    future = app.enqueue("later", delay=3600)
    runner = WorkerThread(app, burst=True).start()
    try:
        runner.thread.join(2)
        assert not runner.thread.is_alive(), "burst worker is still waiting for a job due in 1h"
    finally:
        runner.stop()
    assert app.get(now.id).state is S.COMPLETED
    assert app.get(future.id).state is S.PENDING


# --------------------------------------------------------------------------------------------
# two claims on one job: exactly one wins


def _race_claims(stores: list[Any], rounds: int, insert: Callable[[], str]) -> None:
    for round_no in range(rounds):
        job_id = insert()
        barrier = threading.Barrier(len(stores))
        got: list[list[str]] = [[] for _ in stores]

        def claim(index: int, store: Any, out: list[list[str]] = got,
                  wait: threading.Barrier = barrier) -> None:
            wait.wait(timeout=WAIT)
            jobs = store.claim(f"w{index}", queues=[], job_types=["race"], limit=1,
                               lease_seconds=30)
            out[index] = [j.id for j in jobs]

        threads = [threading.Thread(target=claim, args=(i, s)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        winners = [ids for ids in got if ids]
        assert winners == [[job_id]], f"round {round_no}: {got}"


def test_two_threads_claiming_one_job_exactly_one_wins(make_app: AppFactory) -> None:
    app = make_app()

    @app.job("race")
    def race(ctx: JobContext) -> None:
        return None

    _race_claims([app.store, app.store], 60, lambda: app.enqueue("race").id)
    assert app.counts()[S.RUNNING] == 60
    assert app.counts()[S.PENDING] == 0


def test_two_connections_claiming_one_job_exactly_one_wins(make_app: AppFactory) -> None:
    apps = [make_app() for _ in range(3)]
    for app in apps:
        app.job("race")(lambda ctx: None)

    _race_claims([a.store for a in apps], 60, lambda: apps[0].enqueue("race").id)
    running = apps[0].list(state=S.RUNNING, limit=100)
    assert len(running) == 60
    for job in running:
        starts = [h for h in apps[0].history(job.id) if h.action == "start"]
        assert len(starts) == 1


def test_two_workers_on_one_database_run_each_job_exactly_once(make_app: AppFactory) -> None:
    apps = [make_app(), make_app()]
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def work(ctx: JobContext, n: int) -> int:
        with lock:
            runs[ctx.job.id] += 1
        return n

    for app in apps:
        app.job("work")(work)
    jobs = [apps[0].enqueue("work", {"n": n}) for n in range(40)]
    runners = [WorkerThread(app, burst=True, concurrency=3).start() for app in apps]
    for runner in runners:
        runner.join(timeout=15)
    assert runs == Counter({j.id: 1 for j in jobs})
    assert apps[1].counts()[S.COMPLETED] == 40
    assert sum(r.worker.stats.completed for r in runners) == 40


# --------------------------------------------------------------------------------------------
# progress


def test_progress_in_a_tight_loop_is_coalesced(make_app: AppFactory,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    steps = 1_000_000

    @app.job("count")
    def count(ctx: JobContext, n: int) -> int:
        ctx.progress(0, n)
        for _ in range(n // 2):
            ctx.advance()
        # a pause of several progress ticks: a million advances alone can take less than
        # one tick on a fast machine, and then nothing is there to coalesce mid-run
        time.sleep(1.0)
        for _ in range(n - n // 2):
            ctx.advance()
        return n

    store = app.store
    writes: list[bool] = []
    original = store.save_progress

    def counting(*args: Any, **kwargs: Any) -> Any:
        writes.append(bool(kwargs.get("checkpoint", False)))
        return original(*args, **kwargs)

    monkeypatch.setattr(store, "save_progress", counting)
    job = app.enqueue("count", {"n": steps})
    with running_worker(app):
        done = app.wait(job.id, timeout=20)
    assert done.state is S.COMPLETED
    assert done.result == steps
    assert done.progress.current_step == steps
    assert done.progress.total_steps == steps
    assert done.progress.percent == 100.0
    assert 1 <= len(writes) < 50, f"{len(writes)} progress writes for {steps} advances"
    assert not any(writes)  # no checkpoint was asked for


def test_progress_is_visible_while_the_job_runs(make_app: AppFactory) -> None:
    app = make_app()
    gate = Gate()

    @app.job("halfway")
    def halfway(ctx: JobContext) -> None:
        ctx.progress(5, 10)
        gate.wait()
        ctx.advance(5)

    job = app.enqueue("halfway")
    with running_worker(app):
        seen = wait_state(app, job.id, S.RUNNING, timeout=WAIT)
        assert seen.progress.total_steps in (0, 10)
        wait_until(lambda: app.get(job.id).progress.current_step == 5, what="progress 5")
        during = app.get(job.id)
        assert during.state is S.RUNNING
        assert during.progress.percent == 50.0
        gate.open()
        done = app.wait(job.id, timeout=WAIT)
    assert done.progress.current_step == 10
    assert done.progress.percent == 100.0


# --------------------------------------------------------------------------------------------
# database errors


def test_a_database_error_during_a_claim_does_not_kill_the_worker(
        make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    """A database error inside a store transaction (injected here with a trigger; in life a
    full disk or a damaged page) must reach the worker as a StoreError, which it logs and
    retries with backoff, not as a raw sqlite3 exception that ends run()."""
    app = make_app()

    @app.job("work")
    def work(ctx: JobContext) -> str:
        return "ran"

    job = app.enqueue("work")
    path = app.url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TRIGGER no_start BEFORE INSERT ON job_history "
                     "WHEN NEW.action = 'start' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
        conn.commit()
    caplog.set_level(logging.ERROR, logger="conveyor.worker")
    runner = WorkerThread(app).start()
    try:
        wait_until(lambda: not runner.thread.is_alive() or any(
            "store unavailable" in r.getMessage() for r in caplog.records),
            what="the claim to fail")
        assert runner.thread.is_alive(), f"the worker died: {runner.error!r}"
        assert app.get(job.id).state is S.PENDING  # the failed claim left no trace
        assert [h.action for h in app.history(job.id)] == ["create"]
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("DROP TRIGGER no_start")
            conn.commit()
        assert app.wait(job.id, timeout=WAIT).result == "ran"
    finally:
        runner.worker.stop()
        runner.thread.join(WAIT)
    assert runner.error is None
