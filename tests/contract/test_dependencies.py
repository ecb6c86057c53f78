"""Contract: job dependencies, on every store.

A dependent is pending but not claimable until every dependency completed; a dependency that
is cancelled or fails for good cancels it (or, with ``on_dependency_failure="run"``, counts as
done). The race that would break it, a dependency ending while its dependent is being enqueued
through another connection, is run for real in threads on separate store connections.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from conveyor import (
    Conveyor,
    EnqueueRequest,
    InvalidParams,
    InvalidStateError,
    JobEvent,
    JobNotFound,
)
from conveyor.changes import Lease
from conveyor.context import JobContext
from conveyor.errors import ConfigurationError
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError
from conveyor.retry import Backoff
from conveyor.stores.base import Store
from conveyor.transitions import complete, fail
from conveyor.worker import Worker

S = JobState


def _app(store: Store) -> Conveyor:
    app = Conveyor(store=store)

    @app.job("t", max_attempts=0)
    def step(ctx: JobContext, n: int = 0) -> int:
        return n

    @app.job("total")
    def total(ctx: JobContext) -> dict[str, int]:
        return ctx.dependency_results()

    return app


def _claim(store: Store) -> list[Job]:
    return store.claim("w", queues=[], job_types=["t"], limit=10, lease_seconds=30.0)


def _end(app: Conveyor, job: Job, *, ok: bool) -> Job:
    """Run ``job`` (claimed by id) and complete it, or fail it for good (max_attempts 0)."""
    running = app.start(job.id)
    lease = Lease(running.id, running.lease_token or "", running.attempt)
    change = (complete(lease, 1, "test") if ok
              else fail(lease, job.id, JobError("E", "boom"), "raised E", "test"))
    return app.engine.apply([change])


def test_a_dependent_waits_until_every_dependency_completed(store: Store) -> None:
    app = _app(store)
    a, b = app.enqueue("t"), app.enqueue("t")
    dep = app.enqueue("t", depends_on=[a.id, b.id, a.id])  # a repeated id counts once
    assert (dep.state, dep.waiting_on, dep.to_dict()["waiting_on"]) == (S.PENDING, 2, 2)
    with pytest.raises(InvalidStateError, match="waiting for 2 dependency"):
        app.start(dep.id)
    _end(app, a, ok=True)
    assert app.get(dep.id).waiting_on == 1
    claimed = _claim(store)
    assert [j.id for j in claimed] == [b.id], "a waiting job was claimed"
    app.engine.apply([complete(Lease(b.id, claimed[0].lease_token or "", 0), 2, "test")])
    assert app.get(dep.id).waiting_on == 0
    assert [j.id for j in _claim(store)] == [dep.id]
    up, down = app.dependencies(dep.id)
    assert [j.id for j in up] == [a.id, b.id] and down == []
    assert [j.id for j in app.dependencies(a.id)[1]] == [dep.id]


def test_a_dependency_that_does_not_complete_cancels_its_dependents_down_the_graph(
        store: Store) -> None:
    app = _app(store)
    events: list[JobEvent] = []
    app.subscribe(events.append)
    up = app.enqueue("t")
    child = app.enqueue("t", depends_on=[up.id])
    grandchild = app.enqueue("t", depends_on=[child.id])
    anyway = app.enqueue("t", depends_on=[up.id], on_dependency_failure="run")
    _end(app, up, ok=False)
    assert app.get(up.id).is_terminal
    for job in (child, grandchild):
        now = app.get(job.id)
        assert now.state is S.CANCELLED and now.finished_at is not None
    assert app.history(child.id)[-1].reason == f"dependency {up.id} failed"
    assert app.history(grandchild.id)[-1].reason == f"dependency {child.id} was cancelled"
    cancelled = {e.job.id for e in events if e.name == "JobCancelled"}
    assert cancelled == {child.id, grandchild.id}
    runs = app.get(anyway.id)
    assert (runs.state, runs.waiting_on) == (S.PENDING, 0)
    # an operator's cancel of a dependency does the same
    other = app.enqueue("t")
    waiting = app.enqueue("t", depends_on=[other.id])
    app.cancel(other.id)
    assert app.get(waiting.id).state is S.CANCELLED


def test_dependencies_already_ended_at_enqueue(store: Store) -> None:
    app = _app(store)
    done, gone = app.enqueue("t"), app.enqueue("t")
    _end(app, done, ok=True)
    app.cancel(gone.id)
    assert app.enqueue("t", depends_on=[done.id]).waiting_on == 0
    late = app.enqueue("t", depends_on=[done.id, gone.id])
    assert late.state is S.CANCELLED
    assert app.history(late.id)[-1].reason == f"dependency {gone.id} was cancelled"
    assert app.enqueue("t", depends_on=[gone.id], on_dependency_failure="run").waiting_on == 0


def test_unknown_ids_and_bad_options_are_refused_and_nothing_is_written(store: Store) -> None:
    app = _app(store)
    real = app.enqueue("t")
    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(JobNotFound, match=f"names no stored job: {unknown}"):
        app.enqueue("t", depends_on=[real.id, unknown])
    with pytest.raises(InvalidParams, match="names no job"):
        app.enqueue("t", depends_on=["not an id"])
    with pytest.raises(ConfigurationError, match="list of job ids"):
        app.enqueue("t", depends_on=real.id)
    with pytest.raises(ConfigurationError, match="on_dependency_failure"):
        app.enqueue("t", depends_on=[real.id], on_dependency_failure="ignore")
    with pytest.raises(JobNotFound):  # the whole batch rolls back
        app.enqueue_many([EnqueueRequest("t", depends_on=[real.id]),
                          EnqueueRequest("t", depends_on=[unknown])])
    with pytest.raises(ConfigurationError, match="connection="):
        app.enqueue("t", depends_on=[real.id], connection=object())
    assert [j.id for j in app.list()] == [real.id]
    assert app.dependencies(real.id) == ([], [])


def test_chain_and_group_run_in_order_and_the_final_job_gets_the_results(
        store: Store) -> None:
    app = _app(store)
    chain = app.chain(EnqueueRequest("t", {"n": 1}), EnqueueRequest("t", {"n": 2}))
    assert [j.waiting_on for j in chain] == [0, 1]
    group = app.group([EnqueueRequest("t", {"n": n}) for n in (3, 4)],
                      then=EnqueueRequest("total"))
    assert [j.waiting_on for j in group] == [0, 0, 2]
    started: list[str] = []
    app.subscribe(lambda e: started.append(e.job.id) if e.name == "JobStarted" else None)
    stats = Worker(app, concurrency=2, handle_signals=False, poll_interval=0.05).run(burst=True)
    assert stats.completed == 5
    assert started.index(chain[0].id) < started.index(chain[1].id)
    assert started[-1] == group[-1].id
    assert app.result(group[-1].id) == {group[0].id: 3, group[1].id: 4}


def test_a_failing_chain_step_cancels_the_rest_with_a_real_worker(store: Store) -> None:
    app = Conveyor(store=store)

    @app.job("boom", max_attempts=1, backoff=Backoff(base=0.0))
    def boom(ctx: JobContext) -> None:
        raise RuntimeError("boom")

    @app.job("after")
    def after(ctx: JobContext) -> None: ...

    first, second = app.chain(EnqueueRequest("boom"), EnqueueRequest("after"))
    Worker(app, concurrency=1, handle_signals=False, poll_interval=0.05).run(burst=True)
    assert app.get(first.id).state is S.FAILED and app.get(first.id).attempt == 1
    assert app.wait(second.id, timeout=10).state is S.CANCELLED


def test_a_dependency_ending_while_its_dependent_is_enqueued_never_strands_it(
        store: Store, store_factory: Callable[[], Store]) -> None:
    """Each round: one connection ends the dependency (completes it in even rounds, fails it
    for good in odd ones) while another enqueues a dependent on it, released together at a
    barrier. Whichever wins, the dependent ends up claimable (completed) or cancelled
    (failed), never waiting for a job that has ended."""
    ender, enqueuer = _app(store), _app(store_factory())
    rounds = 30
    ups = [ender.enqueue("t") for _ in range(rounds)]
    running = [ender.start(up.id) for up in ups]
    barrier = threading.Barrier(2)
    dependents: list[Job] = []
    errors: list[BaseException] = []

    def end_all() -> None:
        try:
            for n, job in enumerate(running):
                barrier.wait(30)
                lease = Lease(job.id, job.lease_token or "", job.attempt)
                ender.engine.apply([complete(lease, 1, "test") if n % 2 == 0 else
                                    fail(lease, job.id, JobError("E", "x"), "raised", "test")])
        except BaseException as exc:
            errors.append(exc)

    def enqueue_all() -> None:
        try:
            for up in ups:
                barrier.wait(30)
                dependents.append(enqueuer.enqueue("t", depends_on=[up.id]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=end_all), threading.Thread(target=enqueue_all)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for n, job in enumerate(ender.store.get_jobs([d.id for d in dependents])):
        if n % 2 == 0:
            assert (job.state, job.waiting_on) == (S.PENDING, 0), job.id
        else:
            assert job.state is S.CANCELLED, job.id
