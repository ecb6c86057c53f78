"""Contract: enqueue writes a job and its one 'create' row in one go, and returns the stored row.

Enqueue no longer reads the jobs back after inserting them, so these check that what it
returns is exactly what a later read finds, on every store.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from conveyor import Conveyor, EnqueueRequest
from conveyor.context import JobContext
from conveyor.errors import StoreError
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobProgress
from conveyor.retry import Backoff
from conveyor.stores.base import NewJob, Store


def _app(store: Store) -> Conveyor:
    app = Conveyor(store=store)

    @app.job("contract.add")
    def add(ctx: JobContext, a: int = 0, b: int = 0) -> int:
        return a + b

    return app


def test_enqueued_job_equals_its_stored_row_with_one_create_row(store: Store) -> None:
    app = _app(store)
    job = app.enqueue("contract.add", {"a": 1, "b": 2}, queue="sums", priority=3,
                      actor="tester")
    assert job == store.get_job(job.id)
    assert (job.state, job.params, job.queue, job.priority) == (
        JobState.PENDING, {"a": 1, "b": 2}, "sums", 3)
    history = store.history(job.id)
    assert [(h.action, h.from_state, h.to_state, h.actor) for h in history] == [
        ("create", None, JobState.PENDING, "tester")]


def test_delay_is_counted_from_the_store_clock(store: Store) -> None:
    app = _app(store)
    before = store.now()
    job = app.enqueue("contract.add", delay=3600)
    assert job == store.get_job(job.id)
    assert (before + timedelta(seconds=3600) - timedelta(seconds=5)
            <= job.run_at <= store.now() + timedelta(seconds=3605))


def test_enqueue_many_returns_jobs_in_order_with_one_create_row_each(store: Store) -> None:
    app = _app(store)
    app.enqueue("contract.add")  # rows already in the table must not be returned
    jobs = app.enqueue_many([EnqueueRequest("contract.add", {"a": i}) for i in range(2000)],
                            actor="bulk")
    assert [j.params["a"] for j in jobs] == list(range(2000))
    assert len({j.id for j in jobs}) == 2000
    assert jobs == store.get_jobs([j.id for j in jobs])
    for job in (jobs[0], jobs[999], jobs[-1]):
        assert [(h.action, h.to_state, h.actor) for h in store.history(job.id)] == [
            ("create", JobState.PENDING, "bulk")]


def test_every_option_comes_back_as_stored_one_by_one_and_in_bulk(store: Store) -> None:
    """The returned job is built from what was sent plus the store's clocks: each option,
    a fractional delay and a run_at with microseconds must read back exactly."""
    app = _app(store)
    options: dict[str, Any] = {"queue": "q2", "priority": -7, "max_attempts": 9,
                               "timeout": 12.5, "pause_timeout": 60.25,
                               "backoff": Backoff(base=0.5, factor=3.0)}
    params = {"a": 1, "b": 2}
    at = store.now() + timedelta(days=3, microseconds=123457)
    one = [app.enqueue("contract.add", params, delay=0.123457, **options),
           app.enqueue("contract.add", params, run_at=at, **options)]
    many = app.enqueue_many([EnqueueRequest("contract.add", params, delay=1.000001, **options),
                             EnqueueRequest("contract.add", params, run_at=at, **options)])
    for job in one + many:
        assert job == store.get_job(job.id)
        assert (job.max_attempts, job.timeout, job.pause_timeout) == (9, 12.5, 60.25)
    assert one[1].run_at == many[1].run_at == at
    policy = [app.enqueue("contract.add", on_dependency_failure="run"),
              *app.enqueue_many([EnqueueRequest("contract.add", on_dependency_failure="run")])]
    assert policy == store.get_jobs([job.id for job in policy])  # no dependency: no policy
    one[0].params["a"] = 99  # a fresh copy: the caller's dict and other jobs are untouched
    assert params == {"a": 1, "b": 2} and one[1].params == params


def test_a_requeued_copy_with_its_checkpoint_comes_back_as_stored(store: Store) -> None:
    app = _app(store)
    job = app.enqueue("contract.add")
    app.cancel(job.id)
    copy = app.requeue(job.id, keep_checkpoint=True)
    assert copy == store.get_job(copy.id)
    assert copy.requeued_from == job.id


def test_a_large_batch_with_every_option_comes_back_as_stored(store: Store) -> None:
    """A batch large enough for the bulk path (PostgreSQL: COPY), mixing types of options,
    non-ASCII params, a checkpoint and a requeue link, reads back exactly as returned."""
    app = _app(store)
    options: list[dict[str, Any]] = [
        {}, {"queue": "q2", "priority": -7, "max_attempts": 9, "timeout": 12.5,
             "pause_timeout": 60.25, "backoff": Backoff(base=0.5, factor=3.0)}]
    jobs = app.enqueue_many([EnqueueRequest("contract.add", {"a": i, "b": -i}, **options[i % 2])
                             for i in range(70)] + [EnqueueRequest("contract.add")])
    assert jobs == store.get_jobs([j.id for j in jobs])
    assert [j.params for j in jobs[:2]] == [{"a": 0, "b": 0}, {"a": 1, "b": -1}]
    assert (jobs[1].queue, jobs[1].backoff, jobs[2].queue) == (
        "q2", Backoff(base=0.5, factor=3.0).to_dict(), "default")
    copies = [NewJob(id=str(uuid.uuid4()), job_type="contract.add", params={"a": "é ☃"},
                     requeued_from=jobs[0].id,
                     progress=JobProgress(2, 5, {"step": "ü", "n": i})) for i in range(70)]
    stored = store.insert_jobs(copies, actor="bulk")
    assert stored == store.get_jobs([j.id for j in stored])
    assert stored[3].progress == JobProgress(2, 5, {"step": "ü", "n": 3})
    assert [(h.action, h.actor) for h in store.history(stored[-1].id)] == [("create", "bulk")]


def test_a_subscriber_sees_each_job_of_a_large_batch_created_after_commit(store: Store) -> None:
    app = _app(store)
    seen: list[tuple[str, Job, bool]] = []
    app.subscribe(lambda e: seen.append((e.name, e.job, bool(store.get_jobs([e.job.id])))))
    jobs = app.enqueue_many([EnqueueRequest("contract.add", {"a": i}) for i in range(70)])
    assert seen == [("JobCreated", job, True) for job in jobs]


def test_a_large_batch_that_fails_midway_stores_none_of_it(store: Store) -> None:
    app = _app(store)
    held = app.enqueue("contract.add")
    batch = [NewJob(id=str(uuid.uuid4()), job_type="contract.add", params={})
             for _ in range(70)]
    batch[40] = NewJob(id=held.id, job_type="contract.add", params={})  # its id is taken
    with pytest.raises(StoreError):
        store.insert_jobs(batch, actor="bulk")
    assert store.get_jobs([new.id for new in batch]) == [held]
    assert store.count_by_state()[JobState.PENDING] == 1
