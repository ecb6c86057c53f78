"""PostgreSQL schema version 13: the row check takes the jobs row as one value.

The check must refuse exactly what version 10's refused (the fourteen former checks, see
test_pg_row_check.py, which runs its cases on the latest schema), and a schema of version 12
must migrate with its jobs and history intact, its rows still taking the changes the check
allows and refused the ones it does not.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from conveyor import transitions
from conveyor.changes import Lease
from conveyor.model import Job
from conveyor.stores.base import NewJob
from conveyor.stores.postgres import PostgresStore
from tests.conftest import pg_test_url
from tests.integration.pgschema import (
    constraints,
    fill_for_migration,
    fresh_schema,
    migrated_intact,
)
from tests.integration.test_pg_row_check import ALLOWED, REFUSED, _refuses

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> Iterator[str]:
    yield from fresh_schema("wrc")


def _check_definition(schema: str) -> str:
    with psycopg.connect(pg_test_url()) as conn:
        row = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND conname = 'jobs_row_valid'", (f'"{schema}".jobs',)).fetchone()
    assert row is not None
    return str(row[0])


def test_a_schema_of_version_12_migrates_with_its_jobs_intact(
        schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def fill(old: PostgresStore) -> list[Job]:
        assert "conveyor_job_row_valid(state," in _check_definition(schema)
        return fill_for_migration(old)

    store, claimed = migrated_intact(schema, 12, monkeypatch, fill)
    try:
        assert constraints(schema, "jobs", "c") == ["jobs_row_valid"]
        assert "conveyor_job_valid(jobs.*)" in _check_definition(schema)
        running = claimed[1]  # the migrated rows still take the changes the check allows
        store.apply([transitions.complete(
            Lease(running.id, running.lease_token or "", running.attempt), None, "w")])
        assert store.get_job(running.id).finished_at is not None
        assert _refuses(schema, running.id, "finished_at = NULL")
        # a job inserted after the migration: the check refuses and allows what version 10's did
        (job,) = store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="t", params={})])
        for name, assignments in REFUSED.items():
            assert _refuses(schema, job.id, assignments), name
        for name, assignments in ALLOWED.items():
            assert not _refuses(schema, job.id, assignments), name
    finally:
        store.close()
