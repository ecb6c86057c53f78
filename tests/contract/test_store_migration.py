"""Contract: a database created by schema version 1 is upgraded in place, its queue order kept.

Version 2 adds ``line_at`` (a job's place in line). A store at version 1 with jobs in it must
migrate forward with every job keeping the order it had (``line_at = run_at``), and end up
with the same columns and claim indexes as a fresh database.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from conveyor.stores.base import Store

V1_INSERT = (
    "INSERT INTO jobs (id, job_type, queue, priority, params, max_attempts, run_at, timeout, "
    "pause_timeout, backoff, created_at, updated_at) VALUES "
)


def _only_first_migration(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    module = __import__(type(store).__module__, fromlist=["_MIGRATIONS"])
    monkeypatch.setattr(module, "_MIGRATIONS", module._MIGRATIONS[:1])


def _v1_jobs(store: Store, run_ats: list[float]) -> list[str]:
    """Insert pending jobs with the version-1 columns only, straight through the driver."""
    ids = [str(uuid.uuid4()) for _ in run_ats]
    if type(store).__name__ == "SQLiteStore":
        with sqlite3.connect(store.path) as conn:  # type: ignore[attr-defined]
            conn.executemany(V1_INSERT + "(?, 'm', 'default', 0, '{}', 3, ?, NULL, 60, '{}', ?, ?)",
                             [(i, at, at, at) for i, at in zip(ids, run_ats, strict=True)])
        return ids
    import psycopg

    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{store.schema}"')  # type: ignore[attr-defined]
        for job_id, at in zip(ids, run_ats, strict=True):
            conn.execute(V1_INSERT + "(%s, 'm', 'default', 0, '{}', 3, to_timestamp(%s), NULL, "
                         "60, '{}', now(), now())", (job_id, at))
    return ids


def _shape(store: Store) -> dict[str, Any]:
    """The jobs table's columns and the definitions of its indexes."""
    if type(store).__name__ == "SQLiteStore":
        with sqlite3.connect(store.path) as conn:  # type: ignore[attr-defined]
            columns = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
            indexes = sorted(r[0] for r in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
        return {"columns": columns, "indexes": indexes}
    import psycopg

    schema = store.schema  # type: ignore[attr-defined]
    with psycopg.connect(store.url, autocommit=True) as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'jobs' ORDER BY ordinal_position", (schema,))]
        nullable = [r[0] for r in conn.execute(
            "SELECT is_nullable FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'jobs' AND column_name = 'line_at'", (schema,))]
        indexes = sorted(r[0].replace(f"{schema}.", "") for r in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)))
    return {"columns": columns, "indexes": indexes, "line_at_nullable": nullable}


def test_a_version_1_store_migrates_keeping_its_queue_order(
        store_factory: Callable[[], Store], monkeypatch: pytest.MonkeyPatch) -> None:
    old = store_factory()
    with monkeypatch.context() as patch:
        _only_first_migration(patch, old)
        old.migrate()
        assert old.schema_version() == 1
    base = old.now().timestamp()
    # inserted newest-run_at first, so insertion order and queue order differ
    ids = _v1_jobs(old, [base - 10, base - 30, base - 20])

    upgraded = store_factory()
    upgraded.migrate()
    latest = __import__(type(upgraded).__module__, fromlist=["LATEST_VERSION"]).LATEST_VERSION
    assert upgraded.schema_version() == latest >= 3
    claimed = upgraded.claim("w", queues=[], job_types=["m"], limit=3, lease_seconds=30)
    assert [j.id for j in claimed] == [ids[1], ids[2], ids[0]]
    assert all(j.attempt == 0 for j in claimed)


def test_a_migrated_schema_has_line_at_in_its_claim_indexes(
        store_factory: Callable[[], Store], monkeypatch: pytest.MonkeyPatch) -> None:
    migrated = store_factory()
    with monkeypatch.context() as patch:
        _only_first_migration(patch, migrated)
        migrated.migrate()
    _v1_jobs(migrated, [migrated.now().timestamp()])
    migrated.migrate()
    shape = _shape(migrated)
    assert "line_at" in shape["columns"]
    assert "unique_key" in shape["columns"]
    assert any("jobs_unique_key" in index for index in shape["indexes"])
    assert any("line_at" in index for index in shape["indexes"])
    if "line_at_nullable" in shape:
        assert shape["line_at_nullable"] == ["NO"]
