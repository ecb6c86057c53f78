"""SQLite: a new job whose last columns are the table's defaults is written by the shorter
``insert_job_plain``; its row is the one the full ``insert_job`` writes, and a job with any of
those values set still goes through the full statement, alone or in a batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.model import JobProgress
from conveyor.stores.base import NewJob
from conveyor.stores.sqlite import SQLiteStore
from conveyor.stores.sqlite import store as store_module
from conveyor.stores.sqlite.rows import PLAIN_COLUMNS, PLAIN_TAIL, new_job_rows


@pytest.fixture
def store(db_url: str) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(db_url)
    opened.migrate()
    yield opened
    opened.close()


def _row(store: SQLiteStore, job_id: str) -> dict[str, object]:
    with sqlite3.connect(store.path) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
    return {k: v for k, v in row.items() if k not in ("id", "seq")}


@pytest.mark.parametrize("batch", [1, 3])
def test_a_plain_job_is_written_as_the_full_statement_writes_it(store: SQLiteStore,
                                                                 batch: int) -> None:
    jobs = [NewJob(id=f"p{n}", job_type="t", params={"n": 1}, queue="q", priority=2,
                   timeout=5.0, backoff={"base": 2}) for n in range(batch)]
    rows = new_job_rows(jobs, 1000.0)
    assert all(row[PLAIN_COLUMNS:] == PLAIN_TAIL for row in rows)
    store.insert_jobs(jobs)
    # the same values through the full statement, by hand
    with sqlite3.connect(store.path) as conn:
        conn.execute(store_module._Q["insert_job"], ("full", *rows[0][1:]))
    plain, full = _row(store, "p0"), _row(store, "full")
    for column in ("created_at", "updated_at", "run_at", "line_at"):  # the store's own clock
        plain.pop(column), full.pop(column)
    assert plain == full
    assert [h.action for h in store.history(f"p{batch - 1}")] == ["create"]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("value", ["progress", "requeued_from", "trace", "limit_key"])
def test_a_job_with_a_last_column_set_keeps_it(store: SQLiteStore, batch: int,
                                               value: str) -> None:
    store.insert_jobs([NewJob(id="origin", job_type="t", params={})])
    given: dict[str, Any] = {
        "progress": JobProgress(2, 5, {"at": 2}), "requeued_from": "origin",
        "trace": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "limit_key": "tenant:1"}
    jobs = [NewJob(id=f"j{n}", job_type="t", params={}, **{value: given[value]})
            for n in range(batch)]
    assert not any(row[PLAIN_COLUMNS:] == PLAIN_TAIL for row in new_job_rows(jobs, 1.0))
    store.insert_jobs(jobs)
    for n in range(batch):
        job = store.get_job(f"j{n}")
        assert getattr(job, value) == given[value]


def test_plain_rows_are_the_full_rows_first_columns() -> None:
    """plain_job_rows makes what new_job_rows makes, cut to insert_job_plain's columns (a
    delay, a run_at, a backoff not yet encoded and params not yet encoded included)."""
    from datetime import UTC, datetime

    from conveyor.stores.sqlite.inserts import plain_job_rows

    jobs = [NewJob(id="a", job_type="t", params={}, params_json="{}", backoff_json="{}"),
            NewJob(id="b", job_type="t", params={"n": [1, 2]}, queue="q", priority=-2,
                   max_attempts=5, timeout=3.5, pause_timeout=9.0, backoff={"base": 2.0},
                   delay=30.0),
            NewJob(id="c", job_type="t", params={"x": "y"},
                   run_at=datetime(2030, 1, 2, tzinfo=UTC), on_conflict="raise")]
    full = new_job_rows(jobs, 1000.0)
    assert all(row[PLAIN_COLUMNS:] == PLAIN_TAIL for row in full)
    assert plain_job_rows(jobs, 1000.0) == [row[:PLAIN_COLUMNS] for row in full]


@pytest.mark.parametrize("value", ["progress", "requeued_from", "trace", "limit_key",
                                   "unique_key", "depends_on"])
def test_one_job_needing_more_than_the_plain_row_makes_none(value: str) -> None:
    from conveyor.stores.sqlite.inserts import plain_job_rows

    given: dict[str, Any] = {
        "progress": JobProgress(), "requeued_from": "origin", "unique_key": "k",
        "trace": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "limit_key": "", "depends_on": ("up",)}
    jobs = [NewJob(id="a", job_type="t", params={}),
            NewJob(id="b", job_type="t", params={}, **{value: given[value]})]
    assert plain_job_rows(jobs, 1.0) is None
    assert plain_job_rows(jobs[:1], 1.0) is not None
