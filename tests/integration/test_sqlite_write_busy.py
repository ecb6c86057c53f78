"""A SQLite write transaction whose ``BEGIN IMMEDIATE`` is refused (another connection holds
the write lock past the busy timeout) is retried until the lock is free, and the write lands:
``BEGIN`` runs directly and reaches the retry loop only once refused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from conveyor.errors import StoreError
from conveyor.stores.sqlite import SQLiteStore
from tests.contract.helpers import new


def test_a_refused_begin_is_retried_until_the_lock_is_free(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(f"sqlite:///{path}", busy_timeout_ms=20)
    store.migrate()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        release.start()
        (job,) = store.insert_jobs([new("t")], actor="test")  # waits out the other writer
        release.join()
        assert store.get_job(job.id).id == job.id
    finally:
        other.close()
        store.close()


def test_a_refused_begin_that_is_not_busy_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    try:
        store._conn.execute("BEGIN")  # a transaction already open: BEGIN fails, not busy
        with pytest.raises(StoreError, match="within a transaction"):
            store.insert_jobs([new("t")], actor="test")
        store._conn.execute("ROLLBACK")
        store.insert_jobs([new("t")], actor="test")  # the lock was released
    finally:
        store.close()
