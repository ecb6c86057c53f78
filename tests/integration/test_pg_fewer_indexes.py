"""PostgreSQL schema version 14: jobs_state_seq holds no running job, and jobs_paused and
jobs_resumable are one index.

A schema of version 13 must migrate with its jobs and history intact, and jobs in every state
it held must still be found by the reads the changed indexes served: an expired lease by the
reaper (and a held one not), an over-long pause (and not a pause whose resume waits for a
slot), a resumable job by a claim (before pending ones, in the order it was paused), in one
queue or in all; and every list and count by state gives the same jobs in the same order
(running jobs now read from jobs_lease, the others from jobs_state_seq).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from conveyor import transitions
from conveyor.changes import Lease
from conveyor.lifecycle import JobState
from conveyor.model import Job
from conveyor.stores.base import JobQuery, NewJob
from conveyor.stores.postgres import PostgresStore
from tests.conftest import pg_test_url
from tests.integration.pgschema import fresh_schema, indexes, migrated_intact
from tests.integration.pgschema import pg_store as _store
from tests.integration.test_pg_lighter_writes import _expected, jobs_in_order
from tests.integration.test_pg_lighter_writes import _fill as _fill_states

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> Iterator[str]:
    yield from fresh_schema("fi")


def _lease(job: Job) -> Lease:
    return Lease(job.id, job.lease_token or "", job.attempt)


def _fill(store: PostgresStore, schema: str) -> dict[str, str]:
    """One job in each of the shapes the dropped indexes held, by name: two running (one
    whose lease has run out), three paused (one too long, one waiting to resume in queue
    'b', one waiting to resume in queue 'a'), and a pending one after them."""
    names = ["lost", "held", "overlong", "resume_b", "resume_a", "pending"]
    ids = {name: str(uuid.uuid4()) for name in names}
    store.insert_jobs([NewJob(id=ids[name], job_type="t", params={"n": name},
                              queue="b" if name == "resume_b" else "a",
                              pause_timeout=0.001 if name == "overlong" else 3600.0)
                       for name in names[:-1]])
    claimed = {job.id: job for job in store.claim("w", queues=[], job_types=["t"], limit=5,
                                                  lease_seconds=3600)}
    assert set(claimed) == {ids[name] for name in names[:-1]}
    for name in ("overlong", "resume_b", "resume_a"):
        store.apply([transitions.pause_at_checkpoint(_lease(claimed[ids[name]]), None, "w")])
    for name in ("resume_b", "resume_a"):  # paused first, first to resume
        store.apply([transitions.request(ids[name], "resume_requested", True,
                                         frozenset({JobState.PAUSED}), "op", "")])
    with psycopg.connect(pg_test_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {}.jobs SET lease_expires_at = now() - interval '1 s' "
                             "WHERE id = %s").format(sql.Identifier(schema)), (ids["lost"],))
    store.insert_jobs([NewJob(id=ids["pending"], job_type="t", params={}, queue="a")])
    return ids


def test_a_schema_of_version_13_migrates_with_its_jobs_intact_and_found(
        schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def fill(old: PostgresStore) -> dict[str, str]:
        assert {"jobs_paused", "jobs_resumable"} <= set(indexes(schema, "jobs"))
        return _fill(old, schema)

    store, ids = migrated_intact(schema, 13, monkeypatch, fill)
    try:
        migrated = indexes(schema, "jobs")
        assert "jobs_resumable" not in migrated
        assert migrated["jobs_state_seq"].endswith(
            "WHERE (state <> ALL (ARRAY['pending'::text, 'running'::text]))")
        assert migrated["jobs_paused"].endswith(
            "(resume_requested, paused_at, seq) WHERE (state = 'paused'::text)")
        for _ in range(7):  # past psycopg's prepare threshold and the server's custom plans
            assert [j.id for j in store.expired_leases(10)] == [ids["lost"]]
            assert [j.id for j in store.expired_pauses(10)] == [ids["overlong"]]
        # a claim takes the resumable jobs first, in the order they were paused, in its queues
        (in_a,) = store.claim("w2", queues=["a"], job_types=["t"], limit=1, lease_seconds=60)
        assert in_a.id == ids["resume_a"]
        took = store.claim("w2", queues=[], job_types=["t"], limit=2, lease_seconds=60)
        assert [j.id for j in took] == [ids["resume_b"], ids["pending"]]
        assert [h.action for h in store.history(ids["resume_b"])][-1] == "resume"
        # the running jobs' range is read whole: a held lease is never taken for a lost one
        held = store.get_job(ids["held"])
        store.apply([transitions.complete(_lease(held), None, "w")])
        assert [j.id for j in store.expired_leases(10)] == [ids["lost"]]
    finally:
        store.close()


def _states(*states: JobState) -> frozenset[JobState]:
    return frozenset(states)


@pytest.mark.parametrize("query", [
    JobQuery(states=_states(JobState.RUNNING)),
    JobQuery(states=_states(JobState.RUNNING), limit=1),
    JobQuery(states=_states(JobState.RUNNING, JobState.COMPLETED)),
    JobQuery(states=_states(JobState.RUNNING, JobState.FAILED), limit=2),
    JobQuery(states=_states(JobState.RUNNING, JobState.PENDING)),
    JobQuery(states=_states(JobState.RUNNING), queues=frozenset({"a"})),
    JobQuery(states=_states(JobState.COMPLETED, JobState.FAILED)),
    JobQuery(states=_states(JobState.FAILED)),
], ids=["running", "running-1", "running-completed", "running-failed-2", "running-pending",
        "running-queue", "completed-failed", "failed"])
def test_lists_and_counts_by_state_give_the_same_jobs(schema: str, query: JobQuery) -> None:
    store = _store(schema)
    try:
        _fill_states(store)
        jobs = jobs_in_order(store, schema)
        every = JobQuery(states=query.states, queues=query.queues, limit=len(jobs))
        for _ in range(7):  # past psycopg's prepare threshold and the server's custom plans
            assert [j.id for j in store.list_jobs(query)] == _expected(jobs, query)
            assert store.count_jobs(query) == len(_expected(jobs, every))
    finally:
        store.close()
