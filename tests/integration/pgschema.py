"""A PostgreSQL store migrated to a chosen schema version, for the tests of one migration.

A migration test builds a store as an older release left it (only the migrations up to
``version``), writes rows in that shape, then migrates to the latest and checks they came
through; one helper, so every such test stops at a version the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from conveyor import transitions
from conveyor.changes import Lease
from conveyor.model import Job
from conveyor.stores.base import NewJob
from conveyor.stores.postgres import LATEST_VERSION, PostgresStore
from tests.conftest import pg_test_url

T = TypeVar("T")


def fresh_schema(prefix: str) -> Iterator[str]:
    """A schema name of its own for one test, dropped (with whatever it holds) after it: the
    body of a migration test's ``schema`` fixture."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(pg_test_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def all_rows(schema: str, table: str, order: str) -> list[tuple[Any, ...]]:
    """Every row of ``schema.table`` by ``order``, read as the database holds it (before and
    after a migration, to compare)."""
    with psycopg.connect(pg_test_url()) as conn:
        return conn.execute(sql.SQL("SELECT * FROM {}.{} ORDER BY {}").format(
            sql.Identifier(schema), sql.Identifier(table), sql.Identifier(order))).fetchall()


def pg_store(schema: str, version: int | None = None,
             monkeypatch: pytest.MonkeyPatch | None = None) -> PostgresStore:
    """The store in ``schema``, migrated to ``version`` (the latest when None)."""
    from conveyor.stores.postgres import store as store_module

    if version is None:
        store = PostgresStore(pg_test_url(), schema=schema)
        store.migrate()
        return store
    assert monkeypatch is not None
    with monkeypatch.context() as patched:
        patched.setattr(store_module, "_MIGRATIONS",
                        [m for m in store_module._MIGRATIONS if m[0] <= version])
        patched.setattr(store_module, "LATEST_VERSION", version)
        store = PostgresStore(pg_test_url(), schema=schema)
        store.migrate()
        return store


def migrated_intact(schema: str, version: int, monkeypatch: pytest.MonkeyPatch,
                    fill: Callable[[PostgresStore], T]) -> tuple[PostgresStore, T]:
    """A store of ``version`` filled by ``fill`` (which may check the old shape too), then
    migrated to the latest: the new store (the caller closes it) and what ``fill`` returned.

    Asserts what every migration must keep: the old store was at ``version``, the new one is
    at the latest, past it, and every row of ``jobs`` and ``job_history`` came through as it
    was."""
    old = pg_store(schema, version, monkeypatch)
    try:
        filled = fill(old)
        jobs, history = all_rows(schema, "jobs", "seq"), all_rows(schema, "job_history", "id")
        assert old.schema_version() == version
    finally:
        old.close()
    store = pg_store(schema)
    try:
        assert store.schema_version() == LATEST_VERSION > version
        assert all_rows(schema, "jobs", "seq") == jobs
        assert all_rows(schema, "job_history", "id") == history
    except BaseException:
        store.close()
        raise
    return store, filled


def constraints(schema: str, table: str, kind: str) -> list[str]:
    """The names of ``schema.table``'s constraints of one ``kind`` (``pg_constraint.contype``:
    'c' a CHECK, 'f' a foreign key ...), sorted."""
    with psycopg.connect(pg_test_url()) as conn:
        return [r[0] for r in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype = %s ORDER BY conname", (f'"{schema}".{table}', kind)).fetchall()]


def indexes(schema: str, table: str) -> dict[str, str]:
    """``schema.table``'s indexes: each one's name and definition, by name."""
    with psycopg.connect(pg_test_url()) as conn:
        return dict(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
            "AND tablename = %s ORDER BY indexname", (schema, table)).fetchall())


def fill_for_migration(store: PostgresStore) -> list[Job]:
    """Rows of several kinds for a migration to carry over: four jobs (two with a timeout),
    two of them claimed, the first of those completed with a result, and their history.
    Returns the two claimed jobs (the second still running)."""
    store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="t", params={"i": i},
                              timeout=None if i % 2 else 5.0) for i in range(4)])
    claimed = store.claim("w", queues=[], job_types=["t"], limit=2, lease_seconds=60)
    first = claimed[0]
    store.apply([transitions.complete(Lease(first.id, first.lease_token or "", first.attempt),
                                      {"ok": True}, "w")])
    return claimed
