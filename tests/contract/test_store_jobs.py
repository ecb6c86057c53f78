"""Contract: inserting, reading, listing and counting jobs. Runs against every store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.errors import JobNotFound
from conveyor.lifecycle import JobState
from conveyor.model import JobProgress
from conveyor.stores.base import JobQuery, Store
from conveyor.stores.sqlfiles import load_migrations
from tests.contract.helpers import in_state, insert, new


def test_migrate_is_idempotent_and_reaches_the_latest_version(store: Store) -> None:
    version = store.schema_version()
    store.migrate()
    store.migrate()
    assert store.schema_version() == version >= 1


def test_insert_round_trips_every_field(store: Store) -> None:
    run_at = datetime(2031, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
    params = {"name": "Zoë ☃ \U0001f680", "n": 2**63 - 1, "x": -1.5e-7,
              "nested": {"list": [1, None, True, "two"], "empty": {}}}
    job = insert(store, "reports.generate", params=params, queue="reports", priority=7,
                 max_attempts=5, run_at=run_at, timeout=12.5, pause_timeout=60.0,
                 backoff={"base": 2.0}, requeued_from="abc",
                 progress=JobProgress(3, 10, {"page": 3}))
    got = store.get_job(job.id)
    assert got == job
    assert got.state is JobState.PENDING
    assert got.params == params
    assert (got.queue, got.priority, got.max_attempts, got.attempt) == ("reports", 7, 5, 0)
    assert got.run_at == run_at
    assert (got.timeout, got.pause_timeout, got.backoff) == (12.5, 60.0, {"base": 2.0})
    assert got.requeued_from == "abc"
    assert got.progress == JobProgress(3, 10, {"page": 3})
    assert got.started_at is None and got.finished_at is None and got.lease_token is None
    assert got.created_at.tzinfo is not None


def test_run_at_defaults_to_the_database_clock(store: Store) -> None:
    before = store.now()
    job = insert(store)
    assert before - timedelta(seconds=1) <= job.run_at <= store.now() + timedelta(seconds=1)


def test_bulk_insert_is_one_batch_with_a_history_row_each(store: Store) -> None:
    jobs = store.insert_jobs([new(params={"i": i}) for i in range(250)], actor="bulk")
    assert [j.params["i"] for j in jobs] == list(range(250))
    history = store.history(jobs[17].id)
    assert [(h.action, h.to_state, h.actor) for h in history] == [
        ("create", JobState.PENDING, "bulk")]


def test_unknown_ids(store: Store) -> None:
    with pytest.raises(JobNotFound):
        store.get_job("missing")
    with pytest.raises(JobNotFound):
        store.history("missing")
    job = insert(store)
    assert [j.id for j in store.get_jobs(["missing", job.id])] == [job.id]


def test_list_filters_newest_first_and_pages_with_a_cursor(store: Store) -> None:
    made = [insert(store, "a" if i % 2 else "b", queue="q1" if i < 6 else "q2")
            for i in range(10)]
    in_state(store, JobState.COMPLETED)
    newest_first = [j.id for j in reversed(made)]
    listed = store.list_jobs(JobQuery(states=frozenset({JobState.PENDING}), limit=100))
    assert [j.id for j in listed] == newest_first
    only_a = store.list_jobs(JobQuery(job_types=frozenset({"a"}),
                                      states=frozenset({JobState.PENDING})))
    assert {j.id for j in only_a} == {j.id for j in made if j.job_type == "a"}
    q2 = store.list_jobs(JobQuery(queues=frozenset({"q2"})))
    assert {j.id for j in q2} == {j.id for j in made[6:]}
    pages: list[str] = []
    cursor = None
    while True:
        page = store.list_jobs(JobQuery(states=frozenset({JobState.PENDING}), limit=3,
                                        before=cursor))
        if not page:
            break
        pages.extend(j.id for j in page)
        cursor = page[-1].id
    assert pages == newest_first


def test_count_by_state_lists_every_state(store: Store) -> None:
    for state in (JobState.PENDING, JobState.PENDING, JobState.RUNNING, JobState.COMPLETED,
                  JobState.FAILED, JobState.CANCELLED, JobState.PAUSED):
        in_state(store, state, queue="counted")
    insert(store, queue="other")
    counts = store.count_by_state("counted")
    assert counts == {JobState.PENDING: 2, JobState.RUNNING: 1, JobState.PAUSED: 1,
                      JobState.COMPLETED: 1, JobState.FAILED: 1, JobState.CANCELLED: 1}
    assert store.count_by_state()[JobState.PENDING] == 3


def test_migrations_are_numbered_from_one() -> None:
    for package in ("conveyor.stores.sqlite", "conveyor.stores.postgres"):
        versions = [v for v, _, _ in load_migrations(package)]
        assert versions == list(range(1, len(versions) + 1))
