"""A PostgreSQL store migrated to a chosen schema version, for the tests of one migration.

A migration test builds a store as an older release left it (only the migrations up to
``version``), writes rows in that shape, then migrates to the latest and checks they came
through; one helper, so every such test stops at a version the same way.
"""

from __future__ import annotations

import pytest

from conveyor.stores.postgres import PostgresStore
from tests.conftest import pg_test_url


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
