"""Contract: claims hand out runnable jobs in order, each to exactly one worker."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from conveyor import transitions
from conveyor.lifecycle import JobState
from conveyor.stores.base import Store
from tests.contract.helpers import in_state, insert, new


def _claim(store: Store, types: list[str], limit: int = 10, queues: list[str] | None = None,
           worker: str = "w") -> list[str]:
    jobs = store.claim(worker, queues=queues or [], job_types=types, limit=limit,
                       lease_seconds=30)
    return [j.id for j in jobs]


def test_claim_order_priority_then_run_at(store: Store) -> None:
    now = store.now()
    low_old = insert(store, "o", priority=0, run_at=now - timedelta(seconds=30))
    low_new = insert(store, "o", priority=0, run_at=now - timedelta(seconds=10))
    high = insert(store, "o", priority=5, run_at=now - timedelta(seconds=1))
    future = insert(store, "o", priority=9, run_at=now + timedelta(hours=1))
    assert _claim(store, ["o"], limit=2) == [high.id, low_old.id]
    assert _claim(store, ["o"]) == [low_new.id]
    assert _claim(store, ["o"]) == []
    assert store.get_job(future.id).state is JobState.PENDING


def test_claim_filters_by_type_and_queue_and_respects_limit(store: Store) -> None:
    a = insert(store, "a", queue="q1")
    b = insert(store, "b", queue="q1")
    c = insert(store, "a", queue="q2")
    assert _claim(store, ["zzz"]) == []
    assert _claim(store, ["a"], queues=["q2"]) == [c.id]
    assert _claim(store, ["a", "b"], limit=0) == []
    assert set(_claim(store, ["a", "b"], queues=["q1", "q9"])) == {a.id, b.id}


def test_resumed_jobs_are_claimed_first_and_paused_ones_are_not(store: Store) -> None:
    paused = in_state(store, JobState.PAUSED, job_type="r")
    pending = insert(store, "r", priority=100)
    assert _claim(store, ["r"], limit=1) == [pending.id]
    store.apply([transitions.request(paused.id, "resume_requested", True,
                                     frozenset({JobState.PAUSED}), "op", "")])
    insert(store, "r", priority=100)
    claimed = store.claim("w2", queues=[], job_types=["r"], limit=1, lease_seconds=30)
    assert [j.id for j in claimed] == [paused.id]
    assert claimed[0].state is JobState.RUNNING and claimed[0].worker_id == "w2"
    assert [h.action for h in store.history(paused.id)][-1] == "resume"


def test_each_claim_gets_a_fresh_lease_token(store: Store) -> None:
    store.insert_jobs([new("l") for _ in range(5)])
    jobs = store.claim("w", queues=[], job_types=["l"], limit=5, lease_seconds=30)
    tokens = {j.lease_token for j in jobs}
    assert len(tokens) == 5 and None not in tokens


def test_racing_claims_never_share_a_job(store: Store,
                                         store_factory: Callable[[], Store]) -> None:
    total = 200
    store.insert_jobs([new("race") for _ in range(total)])
    workers = 4
    stores = [store_factory() for _ in range(workers)]
    barrier = threading.Barrier(workers)
    got: list[list[str]] = [[] for _ in range(workers)]

    def run(index: int) -> None:
        barrier.wait()
        while True:
            ids = _claim(stores[index], ["race"], limit=3, worker=f"w{index}")
            if not ids:
                return
            got[index].extend(ids)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counts = Counter(job_id for ids in got for job_id in ids)
    assert len(counts) == total
    assert max(counts.values()) == 1


def test_notify_wakes_a_waiting_worker(store: Store) -> None:
    """An insert wakes a worker blocked in wait_for_work long before its own timeout.

    The waiter may not be inside wait_for_work yet when the first insert lands (a wake-up sent
    before it waits is not for it), so jobs are inserted until it wakes; its timeout is far
    longer than the time allowed, so only an insert can have woken it.
    """
    deadline = time.monotonic() + 30
    while not getattr(store, "listening", True) and time.monotonic() < deadline:
        store.wait_for_work(1.0)  # PostgreSQL: the first wait returns once the LISTEN is up
    assert getattr(store, "listening", True), "the LISTEN never came up"
    woke = threading.Event()

    def wait() -> None:
        store.wait_for_work(300.0)
        woke.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not woke.is_set() and time.monotonic() < deadline:
        insert(store, "n")
        woke.wait(0.5)
    assert woke.is_set(), "no insert woke the waiting worker"
    thread.join(30)
