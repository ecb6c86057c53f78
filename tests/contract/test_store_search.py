"""Contract: search filters, counts of a filter, the overview's numbers, and bulk actions
(including one racing a worker's claims). Runs against every store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

from conveyor.bulk import run_bulk
from conveyor.engine import Engine
from conveyor.lifecycle import JobState, Verb
from conveyor.stores.base import JobQuery, NewJob, Store
from tests.contract.helpers import in_state, insert, pass_time


def ids(store: Store, **filters: object) -> set[str]:
    query = JobQuery(limit=100, **filters)  # type: ignore[arg-type]
    found = {job.id for job in store.list_jobs(query)}
    assert store.count_jobs(query) == len(found)  # the count agrees with the list
    return found


def test_filters_by_id_prefix_text_and_time_windows(store: Store) -> None:
    plain = insert(store, "t", params={"note": "Quarterly REPORT"}, queue="q1")
    other = insert(store, "t", params={"note": "nothing"}, queue="q2")
    failed = in_state(store, JobState.FAILED)  # error: E: boom
    assert ids(store, id_prefix=plain.id[-8:]) == {plain.id}  # the short id: its end
    assert ids(store, id_prefix=plain.id) == {plain.id}
    assert ids(store, text="quarterly report") == {plain.id}  # params, any case
    assert ids(store, text="boom") == {failed.id}  # the error's text
    assert ids(store, text="boom", queues=frozenset({"q1"})) == set()
    now = store.now()
    assert ids(store, created_after=now - timedelta(hours=1)) == {plain.id, other.id, failed.id}
    assert ids(store, created_before=now - timedelta(hours=1)) == set()
    assert ids(store, finished_after=now - timedelta(hours=1)) == {failed.id}
    assert ids(store, finished_before=now + timedelta(hours=1)) == {failed.id}
    assert ids(store, finished_after=now + timedelta(minutes=1)) == set()
    # a filter in SQL text is only ever a value
    assert ids(store, text="' OR 1=1 --") == set()
    assert ids(store, text="%") == set()


def test_an_id_search_matches_either_end_of_an_id(store: Store) -> None:
    """Ids made in the same minute share their start (they begin with the time they were
    made), so listings show their end; a search takes either."""
    made = [insert(store, "t") for _ in range(3)]
    everyone = {job.id for job in made}
    start = made[0].id[:4]  # the top bits of the time they were made: shared by all three
    assert {job.id[:4] for job in made} == {start}
    assert ids(store, id_prefix=start) == everyone
    for job in made:
        assert ids(store, id_prefix=job.id[-8:]) == {job.id}
        assert ids(store, id_prefix=job.id[-1]) >= {job.id}  # one character: at either end
    assert ids(store, id_prefix=made[0].id[10:20]) == set()  # the middle is not searched


def test_throughput_per_minute_and_depth_samples(store: Store) -> None:
    done = [in_state(store, JobState.COMPLETED) for _ in range(2)]
    in_state(store, JobState.CANCELLED)
    insert(store, "t", queue="waiting")
    in_state(store, JobState.RUNNING, queue="busy")
    since = store.now() - timedelta(minutes=5)
    by_state: dict[JobState, int] = {}
    for minute, state, n in store.finished_per_minute(since):
        assert minute.second == 0 and minute >= since - timedelta(minutes=1)
        by_state[state] = by_state.get(state, 0) + n
    assert by_state == {JobState.COMPLETED: len(done), JobState.CANCELLED: 1}
    store.record_depth()
    insert(store, "t", queue="waiting")
    store.record_depth()  # the same minute: kept as first recorded
    samples = {queue: (pending, running) for _, queue, pending, running
               in store.depth_samples(since)}
    assert samples == {"waiting": (1, 0), "busy": (0, 1)}


def test_bulk_acts_a_batch_at_a_time_and_records_each_change(store: Store) -> None:
    engine = Engine(store.url, store=store)
    running = in_state(store, JobState.RUNNING, job_type="x")
    done = in_state(store, JobState.COMPLETED, job_type="x")
    pending = [insert(store, "x") for _ in range(5)]
    query = JobQuery(job_types=frozenset({"x"}))
    result = run_bulk(engine, Verb.CANCEL, query, actor="ops", reason="", batch_size=2,
                      copy=_no_copy)
    # the running job gets a cancel request; the completed one is left as it was
    assert (result.matched, result.changed, result.unchanged, result.skipped) == (7, 6, 1, 0)
    for job in pending:
        assert store.get_job(job.id).state is JobState.CANCELLED
        last = store.history(job.id)[-1]
        assert (last.action, last.actor, last.reason) == ("cancel", "ops", "bulk cancel")
    assert store.get_job(running.id).cancel_requested
    assert store.get_job(done.id).state is JobState.COMPLETED


def test_a_bulk_cancel_racing_a_worker_leaves_every_job_consistent(
        store_factory: Callable[[], Store]) -> None:
    store, worker_store = store_factory(), store_factory()
    store.migrate()
    store.insert_jobs([NewJob(id=f"{n:08x}-0000-4000-8000-000000000000", job_type="r",
                              params={}) for n in range(120)], actor="test")
    pass_time(store, 1)
    engine = Engine(store.url, store=store)
    stop = threading.Event()

    def claim_until_stopped() -> None:
        while not stop.is_set():
            if not worker_store.claim("w", queues=[], job_types=["r"], limit=3,
                                      lease_seconds=60):
                return

    worker = threading.Thread(target=claim_until_stopped)
    worker.start()
    try:
        result = run_bulk(engine, Verb.CANCEL, JobQuery(states=frozenset({JobState.PENDING})),
                          actor="ops", reason="", batch_size=7, copy=_no_copy)
    finally:
        stop.set()
        worker.join()
    states = {job.id: job.state for job in store.list_jobs(JobQuery(limit=200))}
    cancelled = [i for i, s in states.items() if s is JobState.CANCELLED]
    running = [i for i, s in states.items() if s is JobState.RUNNING]
    assert len(cancelled) + len(running) == 120  # nothing else, nothing lost
    assert result.changed == len(cancelled) and result.unchanged == 0
    assert result.matched == result.changed + result.skipped
    for job_id in cancelled:  # never started, cancelled by the bulk action
        assert [(h.action, h.actor) for h in store.history(job_id)] == [
            ("create", "test"), ("cancel", "ops")]
    for job_id in running:  # claimed, never cancelled
        assert [h.action for h in store.history(job_id)] == ["create", "start"]


def _no_copy(job: object) -> NewJob:
    raise AssertionError("cancel makes no copies")
