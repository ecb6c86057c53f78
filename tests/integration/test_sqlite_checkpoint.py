"""With synchronous=FULL, a SQLite worker's connection checkpoints the WAL less often than
SQLite's default; with NORMAL (where a checkpoint is the WAL's only sync) it does not."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from conveyor.stores.base import NewJob
from conveyor.stores.sqlite import SQLiteStore
from conveyor.stores.sqlite.store import WORKER_CHECKPOINT_PAGES


def _autocheckpoint(store: SQLiteStore) -> int:
    return int(store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])



@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_a_store_that_claims_checkpoints_every_ten_thousand_pages_under_full(
        tmp_path: Path, synchronous: str) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}?synchronous={synchronous}")
    store.migrate()
    try:
        store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="t", params={})])
        assert _autocheckpoint(store) == 1000  # an app that only enqueues: SQLite's default
        (job,) = store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=30)
        expected = WORKER_CHECKPOINT_PAGES if synchronous == "full" else 1000
        assert _autocheckpoint(store) == expected
        assert job.state.value == "running"
    finally:
        store.close()
