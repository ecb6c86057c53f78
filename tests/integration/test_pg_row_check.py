"""PostgreSQL schema version 10: the jobs table's fourteen row checks as one constraint.

The one constraint (a call of ``conveyor_job_row_valid``) must refuse exactly the rows the
fourteen refused, on a new schema and on one migrated from version 9 with its jobs in it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from conveyor import transitions
from conveyor.changes import Lease
from conveyor.stores.base import NewJob
from tests.conftest import pg_test_url
from tests.integration.pgschema import constraints, fill_for_migration
from tests.integration.pgschema import pg_store as _store

pytestmark = pytest.mark.postgres

#: Each update breaks one of the fourteen former checks of a pending job (attempt 0).
REFUSED = {
    "state unknown": "state = 'bogus'",
    "attempt negative": "attempt = -1",
    "max_attempts negative": "max_attempts = -1",
    "attempt over budget": "attempt = 4, max_attempts = 3",
    "timeout zero": "timeout = 0",
    "pause_timeout zero": "pause_timeout = 0",
    "params not an object": "params = '[]'",
    "backoff not an object": "backoff = '1'",
    "checkpoint not an object": "checkpoint = '\"x\"'",
    "finished while pending": "finished_at = now()",
    "stopped without finished_at": "state = 'completed'",
    "lease token while pending": "lease_token = 't'",
    "lease expiry while pending": "lease_expires_at = now()",
    "waiting_on negative": "waiting_on = -1",
    "policy unknown": "on_dependency_failure = 'maybe'",
}
#: Rows the checks let pass, edges included (a NULL timeout, a running job with its lease).
ALLOWED = {
    "no timeout": "timeout = NULL",
    "running with a lease": ("state = 'running', attempt = 1, lease_token = 't', "
                             "lease_expires_at = now()"),
    "completed": "state = 'completed', finished_at = now()",
    "policy run": "on_dependency_failure = 'run'",
    "no attempts left": "max_attempts = 0",
}


@pytest.fixture
def schemas() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    with psycopg.connect(pg_test_url(), autocommit=True) as conn:
        for schema in made:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))


def _refuses(schema: str, job_id: str, assignments: str) -> bool:
    """Whether updating ``job_id`` so breaks a check (the update is rolled back either way)."""
    with psycopg.connect(pg_test_url()) as conn:
        try:
            conn.execute(sql.SQL("UPDATE {}.jobs SET {} WHERE id = %s").format(
                sql.Identifier(schema), sql.SQL(assignments)), (job_id,))
        except psycopg.errors.CheckViolation:
            return True
        finally:
            conn.rollback()
    return False


def _rows(schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_test_url()) as conn:
        return conn.execute(sql.SQL("SELECT * FROM {}.jobs ORDER BY seq").format(
            sql.Identifier(schema))).fetchall()


def test_the_one_check_refuses_what_the_fourteen_refused(
        schemas: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    old_schema, new_schema = f"rc9_{uuid.uuid4().hex[:10]}", f"rc_{uuid.uuid4().hex[:10]}"
    schemas.extend([old_schema, new_schema])
    old, new = _store(old_schema, 9, monkeypatch), _store(new_schema)
    try:
        assert len(constraints(old_schema, "jobs", "c")) == 14
        assert constraints(new_schema, "jobs", "c") == ["jobs_row_valid"]
        jobs = {}
        for schema, store in ((old_schema, old), (new_schema, new)):
            (job,) = store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="t", params={})])
            jobs[schema] = job.id
        for name, assignments in REFUSED.items():
            assert _refuses(old_schema, jobs[old_schema], assignments), name
            assert _refuses(new_schema, jobs[new_schema], assignments), name
        for name, assignments in ALLOWED.items():
            assert not _refuses(old_schema, jobs[old_schema], assignments), name
            assert not _refuses(new_schema, jobs[new_schema], assignments), name
    finally:
        old.close()
        new.close()


def test_a_schema_of_version_9_migrates_with_its_jobs_intact(
        schemas: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    schema = f"rcm_{uuid.uuid4().hex[:10]}"
    schemas.append(schema)
    old = _store(schema, 9, monkeypatch)
    try:
        claimed = fill_for_migration(old)
        before = _rows(schema)
        assert old.schema_version() == 9
    finally:
        old.close()
    store = _store(schema, 10, monkeypatch)
    try:
        assert store.schema_version() == 10
        assert _rows(schema) == before
        assert constraints(schema, "jobs", "c") == ["jobs_row_valid"]
        running = claimed[1]  # the migrated rows still take the changes the checks allow
        store.apply([transitions.complete(
            Lease(running.id, running.lease_token or "", running.attempt), None, "w")])
        assert store.get_job(running.id).finished_at is not None
        assert _refuses(schema, running.id, "finished_at = NULL")
    finally:
        store.close()
