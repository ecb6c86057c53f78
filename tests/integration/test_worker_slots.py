"""A worker's slots are a pool of threads reused across jobs, and a job that will not stop
costs the worker its thread, never a slot."""

from __future__ import annotations

import threading

from conveyor import EnqueueRequest, JobContext, JobState
from tests.conftest import AppFactory
from tests.integration.test_worker_helpers import (
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
