"""SQLite: a new job whose last columns are the table's defaults is written by the shorter
``insert_job_plain``; its row is the one the full ``insert_job`` writes, and a job with any of
those values set still goes through the full statement, alone or in a batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
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
    delay, a run_at, a backoff not yet encoded and params not yet encoded included), and
    plain_batch the same values, split into the shared and the own."""
    from conveyor.stores.sqlite.inserts import plain_batch, plain_job_rows

    jobs = [NewJob(id="a", job_type="t", params={}, params_json="{}", backoff_json="{}"),
            NewJob(id="b", job_type="t", params={"n": [1, 2]}, queue="q", priority=-2,
                   max_attempts=5, timeout=3.5, pause_timeout=9.0, backoff={"base": 2.0},
                   delay=30.0),
            NewJob(id="c", job_type="t", params={"x": "y"},
                   run_at=datetime(2030, 1, 2, tzinfo=UTC), on_conflict="raise")]
    full = new_job_rows(jobs, 1000.0)
    assert all(row[PLAIN_COLUMNS:] == PLAIN_TAIL for row in full)
    assert plain_job_rows(jobs, 1000.0) == [row[:PLAIN_COLUMNS] for row in full]
    batch = plain_batch(jobs, 1000.0)
    assert batch is not None
    runs, own = batch
    shared = [values for values, count in runs for _ in range(count)]
    assert [(own[3 * n], *values[:3], own[3 * n + 1], values[3], own[3 * n + 2],
             own[3 * n + 2], *values[4:], 1000.0, 1000.0)
            for n, values in enumerate(shared)] == [row[:PLAIN_COLUMNS] for row in full]


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
    from conveyor.stores.sqlite.inserts import plain_batch

    assert plain_batch(jobs, 1.0) is None
    assert plain_batch(jobs[:1] * 2, 1.0) is not None


def _rows_in_order(store: SQLiteStore) -> list[dict[str, object]]:
    with sqlite3.connect(store.path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM jobs ORDER BY seq")]


def _mixed(n: int, trace: str | None) -> NewJob:
    return NewJob(id=f"j{n:04}", job_type="t", params={"n": n}, queue=f"q{n % 3}",
                  priority=n % 5, max_attempts=n % 4 + 1, timeout=None if n % 2 else 1.5,
                  delay=float(n % 7), backoff={"base": n}, trace=trace)


def _runs(n: int, count: int) -> NewJob:
    """Long runs of jobs sharing their type's values (as a bulk enqueue's), changing at a
    third and at two thirds of the batch."""
    part = n * 3 // count
    return NewJob(id=f"j{n:04}", job_type=f"t{part}", params={} if n % 2 else {"n": n},
                  params_json="{}" if n % 2 else None, timeout=(None, 2.5, None)[part],
                  run_at=None if n % 5 else datetime(2030, 1, 2, tzinfo=UTC),
                  backoff_json='{"base":1}', backoff={"base": 1})


@pytest.mark.parametrize("count", [2, 7, 8, 9, 63, 64, 65, 72, 73, 200, 800])
@pytest.mark.parametrize("kind", ["mixed", "runs", "full"])
def test_a_batch_in_multi_row_statements_writes_what_one_row_at_a_time_writes(
        tmp_path: Any, count: int, kind: str) -> None:
    """A batch goes in as multi-row INSERTs of several sizes (insert_shared: a plain batch,
    its runs of jobs sharing their type's values bound once per statement; insert_rows: a
    full row, here by its trace); its rows, their seq order and their create rows are those
    of the same jobs inserted one at a time, for every split of the batch into those
    sizes and runs."""
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    jobs = [_runs(n, count) if kind == "runs" else _mixed(n, trace if kind == "full" else None)
            for n in range(count)]
    batched, single = (SQLiteStore(f"sqlite:///{tmp_path / name}.db")
                       for name in ("batched", "single"))
    try:
        for opened in (batched, single):
            opened.migrate()
            opened._clock = lambda: 1000.0
        returned = batched.insert_jobs(jobs, actor="a")
        for job in jobs:
            single.insert_jobs([job], actor="a")
        assert [job.id for job in returned] == [job.id for job in jobs]
        assert _rows_in_order(batched) == _rows_in_order(single)
        for job in (jobs[0], jobs[-1]):
            assert batched.history(job.id)[0].action == "create"
            assert ([(h.job_id, h.at, h.action, h.to_state, h.actor)
                     for h in batched.history(job.id)]
                    == [(h.job_id, h.at, h.action, h.to_state, h.actor)
                        for h in single.history(job.id)])
    finally:
        batched.close()
        single.close()


@pytest.mark.parametrize("bad", [0, 40, 64, 70, 99])
def test_a_row_refused_in_a_multi_row_statement_writes_nothing_of_the_batch(
        store: SQLiteStore, bad: int) -> None:
    """A CHECK constraint refusing one row (a bad timeout, past the app's checks) rolls back
    the whole batch, wherever the row falls among the statements."""
    from conveyor.errors import StoreError

    jobs = [NewJob(id=f"j{n}", job_type="t", params={}, timeout=-1.0 if n == bad else None)
            for n in range(100)]
    with pytest.raises(StoreError, match="CHECK constraint failed"):
        store.insert_jobs(jobs)
    assert _rows_in_order(store) == []
    assert store._read("SELECT count(*) FROM job_history")[0][0] == 0


def test_multi_row_repeats_the_values_of_a_one_row_insert() -> None:
    from conveyor.stores.sqlite.inserts import multi_row, shared_rows

    assert shared_rows("INSERT INTO t (a, b, c)\nVALUES (?3, ?1, ?4 + ?3);\n", 3, 2) == (
        "INSERT INTO t (a, b, c)\nVALUES (?3, ?1, ?4 + ?3), (?5, ?1, ?6 + ?5), "
        "(?7, ?1, ?8 + ?7)")
    with pytest.raises(ValueError):
        shared_rows("INSERT INTO t (a) VALUES (?)", 2, 0)

    assert multi_row("INSERT INTO t (a, b)\nVALUES (?, ?);\n", 3) == (
        "INSERT INTO t (a, b)\nVALUES (?, ?), (?, ?), (?, ?)")
    with pytest.raises(ValueError):
        multi_row("INSERT INTO t (a) SELECT 1", 2)


def test_no_row_binds_none_and_null_columns_stay_null(store: SQLiteStore) -> None:
    """A column left NULL (no timeout, requeue, unique key, trace or limit key) is bound as
    two values, never as None (which costs sqlite3 an adapter lookup); it is still NULL."""
    from conveyor.stores.sqlite.inserts import plain_job_rows

    jobs = [NewJob(id="a", job_type="t", params={}),
            NewJob(id="b", job_type="t", params={}, timeout=2, limit_key="",
                   trace="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    plain = plain_job_rows(jobs[:1], 1.0)
    assert plain is not None
    assert all(None not in row for row in [*plain, *new_job_rows(jobs, 1.0)])
    store.insert_jobs(jobs)
    a, b = _row(store, "a"), _row(store, "b")
    for column in ("timeout", "requeued_from", "unique_key", "trace", "limit_key"):
        assert a[column] is None
    assert (b["timeout"], b["limit_key"], b["requeued_from"]) == (2.0, "", None)
    assert isinstance(b["timeout"], float)  # the column's REAL affinity, as when bound alone
    assert store.get_job("b").trace == jobs[1].trace
