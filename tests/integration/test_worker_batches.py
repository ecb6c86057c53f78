"""A thread pool's claimed batch: held for the thread that runs its first job, handed to
threads of their own once held for HAND_OFF_AFTER (worker.slots.HeldSlots).

Short jobs then run one after another on one thread; these tests hold the guarantees that must
not change with it: the jobs of one claim still run at the same time when they take time, a
slot freed beside a long job is filled again, and every job runs exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from conveyor import Conveyor, EnqueueRequest, JobContext, JobState
from conveyor.worker import Worker
from conveyor.worker.slots import HOLD_BELOW
from tests.conftest import AppFactory
from tests.integration.test_worker_helpers import (
    Gate,
    assert_history_chain,
    running_worker,
    wait_state,
    wait_until,
)

S = JobState


def _with_warm_up(app: Conveyor) -> None:
    """Register the short job that :func:`_warm_up` runs (before the worker starts)."""

    @app.job("warm")
    def warm(ctx: JobContext) -> None:
        return None


def _warm_up(app: Conveyor, worker: Worker) -> None:
    """Run short jobs first, one at a time, until the worker's average run is short: a
    worker holds a claim's jobs only once it has timed short runs. One is usually enough; a
    worker's very first run, cold, can take a millisecond on a slow machine. The jobs of the
    test then go in with one enqueue_many, so one claim takes them."""
    for _ in range(20):
        job = app.enqueue("warm")
        assert app.wait(job.id, timeout=20).state is S.COMPLETED
        if worker._run_time < HOLD_BELOW:
            break
    assert worker._run_time < HOLD_BELOW


def _long_and_short(app: Conveyor) -> Gate:
    """Register "long" (runs until the returned gate opens) and "short" (returns its ``n``),
    and the warm-up job; before the worker starts."""
    gate = Gate()

    @app.job("long")
    def long(ctx: JobContext) -> str:
        assert gate.wait(60), "the gate was never opened"
        return "long"

    @app.job("short")
    def short(ctx: JobContext, n: int) -> int:
        return n

    _with_warm_up(app)
    return gate


def test_the_jobs_of_one_claim_run_at_the_same_time(make_app: AppFactory) -> None:
    """Four jobs claimed together by a 4-slot worker, each waiting for all four: they pass
    only if none waits behind another on the thread that claimed them."""
    app = make_app()
    barrier = threading.Barrier(4, timeout=10)
    threads: set[int] = set()

    @app.job("meet")
    def meet(ctx: JobContext, n: int) -> int:
        threads.add(threading.get_ident())
        barrier.wait()
        return n

    _with_warm_up(app)
    with running_worker(app, concurrency=4) as worker:
        _warm_up(app, worker)
        jobs = app.enqueue_many([EnqueueRequest("meet", {"n": n}) for n in range(4)])
        done = [app.wait(job.id, timeout=20) for job in jobs]
    assert [j.state for j in done] == [S.COMPLETED] * 4
    assert [j.result for j in done] == [0, 1, 2, 3]
    assert len(threads) == 4


def test_a_slot_freed_beside_a_long_job_is_filled_again(make_app: AppFactory) -> None:
    """A 2-slot worker claims a long job and a short one together: the short one is handed
    to a thread of its own, and once it is done the loop claims again for its slot while the
    long one still runs."""
    app = make_app()
    gate = _long_and_short(app)
    with running_worker(app, concurrency=2) as worker:
        _warm_up(app, worker)
        # claimed together, the short one held behind the long one
        blocker, first = app.enqueue_many([EnqueueRequest("long"),
                                           EnqueueRequest("short", {"n": 1})])
        assert app.wait(first.id, timeout=20).state is S.COMPLETED
        wait_state(app, blocker.id, S.RUNNING)
        later = [app.enqueue("short", {"n": n}) for n in range(2, 6)]
        for job in later:  # one slot free beside the long job: claimed there, one by one
            assert app.wait(job.id, timeout=20).result == app.get(job.id).params["n"]
        assert app.get(blocker.id).state is S.RUNNING
        gate.open()
        assert app.wait(blocker.id, timeout=20).result == "long"


def test_many_short_jobs_each_run_once(make_app: AppFactory) -> None:
    """Batches of short jobs run on one thread, each claiming the next: every job exactly
    once, each with its whole history, and no more threads than slots."""
    app = make_app()
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    @app.job("count")
    def count(ctx: JobContext, n: int) -> int:
        with lock:
            runs[n] += 1
        return n

    jobs = [app.enqueue("count", {"n": n}) for n in range(300)]
    with running_worker(app, concurrency=4) as worker:
        wait_until(lambda: app.counts()[S.COMPLETED] == len(jobs), timeout=60,
                   what="every job completed")
        assert worker._pool.threads_started <= 4
    assert runs == Counter(range(300))
    for job in jobs[:: 50]:
        done = app.get(job.id)
        assert done.result == done.params["n"]
        assert_history_chain(app, job.id)


def test_jobs_of_a_few_milliseconds_are_not_held(make_app: AppFactory) -> None:
    """Only short jobs are held: a worker whose jobs take milliseconds hands each one to a
    thread of its own at once, and none waits HAND_OFF_AFTER for another (before any run
    was timed, nothing is held either)."""
    app = make_app()

    @app.job("nap")
    def nap(ctx: JobContext, n: int) -> int:
        time.sleep(0.005)
        return n

    jobs = [app.enqueue("nap", {"n": n}) for n in range(24)]
    with running_worker(app, concurrency=4) as worker:
        wait_until(lambda: app.counts()[S.COMPLETED] == len(jobs), timeout=60,
                   what="every job completed")
        assert worker.handed_over == 0
        assert worker._run_time >= 0.001


def test_a_long_last_job_of_a_batch_does_not_stop_the_claims(make_app: AppFactory) -> None:
    """A 2-slot worker claims a short job and a long one together; the thread of the short
    one goes on to the long one. The other slot is free: jobs enqueued meanwhile must run
    there while the long one runs, not wait for it."""
    app = make_app()
    gate = _long_and_short(app)
    with running_worker(app, concurrency=2) as worker:
        _warm_up(app, worker)
        # claimed together: the long one held, then run by the short one's thread
        first, blocker = app.enqueue_many([EnqueueRequest("short", {"n": 0}),
                                           EnqueueRequest("long")])
        assert app.wait(first.id, timeout=20).state is S.COMPLETED
        attempt = wait_state(app, blocker.id, S.RUNNING).attempt
        for n in range(1, 4):
            job = app.enqueue("short", {"n": n})
            # well within the long job's run: not after it
            assert app.wait(job.id, timeout=5).result == n
        still = app.get(blocker.id)
        assert still.state is S.RUNNING and still.attempt == attempt
        gate.open()
        done = app.wait(blocker.id, timeout=20)
        assert done.result == "long" and done.attempt == attempt
