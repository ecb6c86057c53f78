"""SQLite: a batch enqueue writes its jobs' create rows with one INSERT ... SELECT of the jobs
past the largest seq before it. Those rows are what one enqueue at a time writes, for exactly
the batch's jobs, in its order, also when the largest seq was freed by a prune."""

from __future__ import annotations

from conveyor import transitions
from conveyor.changes import Lease
from conveyor.lifecycle import JobState
from conveyor.stores.base import NewJob
from conveyor.stores.sqlite.store import SQLiteStore


def _created(store: SQLiteStore, job_id: str) -> list[tuple[object, ...]]:
    return [(h.job_id, h.action, h.from_state, h.to_state, h.attempt, h.actor, h.reason)
            for h in store.history(job_id)]


def test_a_batch_writes_the_create_rows_one_enqueue_at_a_time_writes(db_url: str) -> None:
    store = SQLiteStore(db_url)
    try:
        store.migrate()
        store.insert_jobs([NewJob(id="alone", job_type="t", params={})], actor="a")
        (top,) = store.insert_jobs([NewJob(id="top", job_type="t", params={})], actor="a")
        (job,) = store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=60)
        (job,) = store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=60)
        assert job.id == top.id and job.lease_token is not None
        store.apply([transitions.complete(Lease(job.id, job.lease_token, job.attempt), 1,
                                          "w")])
        assert store.prune_jobs(JobState.COMPLETED, -1.0, limit=10) == 1  # the top seq freed
        ids = [f"b{n}" for n in range(5)]
        store.insert_jobs([NewJob(id=i, job_type="t", params={}) for i in ids], actor="b")
        for i in ids:
            assert _created(store, i) == [(i, "create", None, JobState.PENDING, 0, "b", "")]
        assert _created(store, "alone")[0] == (
            "alone", "create", None, JobState.PENDING, 0, "a", "")
        assert [h.action for h in store.history("alone")] == ["create", "start"]
        rows = store._read("SELECT job_id FROM job_history WHERE action = 'create' ORDER BY id")
        assert [r[0] for r in rows] == ["alone", *ids]
    finally:
        store.close()
