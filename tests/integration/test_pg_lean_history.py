"""PostgreSQL schema version 11: job_history without its foreign key to jobs, keyed by
(job_id, id) with no second index.

The key's one job besides its checks was cascading deletes; retention now deletes a job's
history in the same statement. A schema of version 10 must migrate with its jobs and history
intact, and after it a prune must leave no history row behind (nor take a kept job's).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from conveyor import transitions
from conveyor.changes import Lease
from conveyor.lifecycle import JobState
from conveyor.stores.base import NewJob
from conveyor.stores.postgres import PostgresStore
from tests.integration.pgschema import all_rows, constraints, fresh_schema, indexes, migrated_intact
from tests.integration.pgschema import pg_store as _store

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> Iterator[str]:
    yield from fresh_schema("hu")


def _finish(store: PostgresStore, count: int) -> list[str]:
    """Claim and complete ``count`` jobs; returns their ids."""
    claimed = store.claim("w", queues=[], job_types=["t"], limit=count, lease_seconds=60)
    for j in claimed:
        store.apply([transitions.complete(Lease(j.id, j.lease_token or "", j.attempt), None,
                                          "w")])
    return [j.id for j in claimed]


def test_a_schema_of_version_10_migrates_with_jobs_and_history_intact(
        schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def fill(old: PostgresStore) -> None:
        assert constraints(schema, "job_history", "f") == ["job_history_job_id_fkey"]
        old.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="t", params={"i": i})
                         for i in range(5)])
        _finish(old, 2)

    store, _ = migrated_intact(schema, 10, monkeypatch, fill)
    try:
        assert constraints(schema, "job_history", "f") == []
        (index,) = indexes(schema, "job_history").values()
        assert "UNIQUE INDEX job_history_pkey" in index and "(job_id, id)" in index
        done = _finish(store, 1)  # the migrated rows take changes and log them as before
        assert [h.action for h in store.history(done[0])][-1] == "complete"
    finally:
        store.close()


def test_prune_deletes_the_history_of_the_jobs_it_deletes_and_only_theirs(
        schema: str) -> None:
    store = _store(schema)
    try:
        store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="t", params={})
                           for _ in range(6)])
        done = _finish(store, 4)
        assert store.prune_jobs(JobState.COMPLETED, 0.0, limit=3) == 3
        assert store.prune_jobs(JobState.COMPLETED, 0.0, limit=3) == 1
        assert store.prune_jobs(JobState.COMPLETED, 0.0, limit=3) == 0
        left = {row[1] for row in all_rows(schema, "job_history", "id")}
        assert left.isdisjoint(done)
        remaining = {row[0] for row in all_rows(schema, "jobs", "seq")}
        assert len(remaining) == 2 and left == remaining
        for job_id in remaining:
            assert [h.action for h in store.history(job_id)] == ["create"]
    finally:
        store.close()
