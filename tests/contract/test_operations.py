"""Contract: retention batches and the workers registry, on every store.

Retention deletes finished jobs (and their history) in batches, oldest first, each state with
its own age; it never deletes a job that is not finished for good, nor one a requeued copy
links back to. Workers register, beat, are asked to stop, stop, and are seen gone.
"""

from __future__ import annotations

import pytest

from conveyor.errors import JobNotFound
from conveyor.lifecycle import JobState
from conveyor.presence import WorkerRegistration, WorkerStatus
from conveyor.retention import Retention, prune_store
from conveyor.stores.base import Store
from conveyor.stores.sqlite import SQLiteStore
from tests.contract.helpers import _pg_execute, in_state, insert, pass_time

DAY = 86400.0


def _age_workers(store: Store, seconds: float) -> None:
    """Make ``seconds`` pass for the workers table too (PostgreSQL's clock is the server's)."""
    pass_time(store, seconds)
    if not isinstance(store, SQLiteStore):
        shifted = ", ".join(f"{c} = {c} - %(s)s * interval '1 second'"
                            for c in ("started_at", "seen_at", "expires_at", "stopped_at"))
        _pg_execute(store, f"UPDATE workers SET {shifted}", {"s": seconds})


def test_prune_deletes_old_finished_jobs_in_batches_with_their_history(store: Store) -> None:
    old = [in_state(store, JobState.COMPLETED) for _ in range(5)]
    unfinished = [in_state(store, JobState.RUNNING), in_state(store, JobState.PENDING),
                  in_state(store, JobState.PAUSED)]
    pass_time(store, 8 * DAY)
    fresh = in_state(store, JobState.COMPLETED)

    assert store.count_prunable(JobState.COMPLETED, 7 * DAY) == 5
    assert [store.prune_jobs(JobState.COMPLETED, 7 * DAY, limit=2) for _ in range(4)] == [
        2, 2, 1, 0]
    for job in old:
        with pytest.raises(JobNotFound):
            store.history(job.id)
    kept = {job.id for job in store.get_jobs([j.id for j in [*unfinished, fresh]])}
    assert kept == {job.id for job in [*unfinished, fresh]}
    assert len(store.history(fresh.id)) >= 3  # its history untouched


def test_prune_respects_each_states_age_none_and_links(store: Store) -> None:
    completed = in_state(store, JobState.COMPLETED)
    cancelled = in_state(store, JobState.CANCELLED)
    failed_for_good = in_state(store, JobState.FAILED, max_attempts=0)
    may_retry = in_state(store, JobState.FAILED, max_attempts=3)
    original = in_state(store, JobState.FAILED, max_attempts=0)
    insert(store, requeued_from=original.id)  # its requeued copy, still pending
    pass_time(store, 2 * DAY)

    ages = Retention(completed=1 * DAY, failed=None, cancelled=3 * DAY).ages()
    assert prune_store(store, ages, batch_size=1) == {JobState.COMPLETED: 1,
                                                      JobState.CANCELLED: 0}
    left = {job.id for job in store.get_jobs(
        [completed.id, cancelled.id, failed_for_good.id, may_retry.id, original.id])}
    assert left == {cancelled.id, failed_for_good.id, may_retry.id, original.id}

    ages = Retention(completed=None, failed=0, cancelled=0).ages()
    assert store.count_prunable(JobState.FAILED, 0) == 1
    assert prune_store(store, ages) == {JobState.FAILED: 1, JobState.CANCELLED: 1}
    left = {job.id for job in store.get_jobs([failed_for_good.id, may_retry.id, original.id])}
    assert left == {may_retry.id, original.id}  # a retry left; a copy links back


def test_workers_register_beat_stop_and_go(store: Store) -> None:
    first = WorkerRegistration("w-1", concurrency=4, queues=("mail", "a,b"))
    second = WorkerRegistration("w-2", concurrency=1)
    assert store.beat_worker(first, running=0, ttl=30) is False
    assert store.beat_worker(second, running=0, ttl=30) is False
    assert store.beat_worker(first, running=3, ttl=30) is False
    seen = {w.id: w for w in store.workers()}
    assert seen["w-1"].status is WorkerStatus.RUNNING
    assert (seen["w-1"].running, seen["w-1"].queues, seen["w-1"].concurrency) == (
        3, ("mail", "a,b"), 4)
    assert seen["w-1"].host and seen["w-1"].pid and seen["w-1"].version

    asked = store.request_worker_stop("w-1")
    assert asked is not None
    assert asked.status is WorkerStatus.STOPPING
    assert store.beat_worker(first, running=1, ttl=30) is True  # read on its next beat
    store.end_worker("w-1")
    assert {w.id: w.status for w in store.workers()}["w-1"] is WorkerStatus.STOPPED
    assert store.request_worker_stop("w-1") is None
    assert store.request_worker_stop("nobody") is None

    _age_workers(store, 60)  # w-2 stopped beating: gone; listed after live ones
    assert store.beat_worker(WorkerRegistration("w-3", concurrency=2), running=0, ttl=30) is False
    statuses = [(w.id, w.status) for w in store.workers()]
    assert statuses == [("w-3", WorkerStatus.RUNNING), ("w-1", WorkerStatus.STOPPED),
                        ("w-2", WorkerStatus.GONE)]
    assert store.request_worker_stop("w-2") is None
    assert store.prune_workers(3600) == 0
    _age_workers(store, 3600)
    assert store.beat_worker(WorkerRegistration("w-3", concurrency=2), running=0, ttl=30) is False
    assert store.prune_workers(3600) == 2
    assert [w.id for w in store.workers()] == ["w-3"]
