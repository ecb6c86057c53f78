"""Decoding SQLite rows into jobs: the column-layout fast path reads what reading each
column by name reads, for jobs in every shape a worker meets and for rows that are damaged."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import datetime
from typing import Any

import pytest

from conveyor import Conveyor, EnqueueRequest, JobContext
from conveyor.changes import Lease
from conveyor.errors import UNDECODABLE_ROW, StoreError
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError
from conveyor.stores.sqlite import rows as rows_module
from conveyor.stores.sqlite.rows import decode_rows, row_to_job
from conveyor.stores.sqlite.store import SQLiteStore
from conveyor.transitions import complete, fail
from tests.conftest import AppFactory


@pytest.fixture
def app(make_app: AppFactory) -> Conveyor:
    app = make_app()

    @app.job("rows.work", max_attempts=2)
    def work(ctx: JobContext, n: int = 0) -> None:
        pass

    return app


def _rows(store: SQLiteStore, columns: str = "*") -> list[sqlite3.Row]:
    with store._lock:
        return store._conn.execute(f"SELECT {columns} FROM jobs ORDER BY seq").fetchall()


def _jobs_of_every_kind(app: Conveyor) -> SQLiteStore:
    store = app.store
    assert isinstance(store, SQLiteStore)
    app.enqueue_many([EnqueueRequest("rows.work", {"n": n}) for n in range(4)])
    claimed = store.claim("w", queues=(), job_types=["rows.work"], limit=3, lease_seconds=60)
    lease = [Lease(j.id, j.lease_token or "", j.attempt) for j in claimed]
    store.apply_many([complete(lease[0], {"sum": [1, 2]}, "w"),
                      fail(lease[1], lease[1].job_id, JobError("E", "boom", "tb"), "raised",
                           "w")])
    return store


def _as_stored(job: Job) -> dict[str, Any]:
    """The job's fields as its row stores them (times in seconds, flags 0/1, JSON as data)."""
    stored: dict[str, Any] = {}
    for field in dataclasses.fields(job):
        value = getattr(job, field.name)
        if isinstance(value, datetime):
            value = pytest.approx(value.timestamp(), abs=1e-5)
        elif isinstance(value, bool):
            value = int(value)
        elif isinstance(value, JobState):
            value = value.value
        stored[field.name] = value
    progress = stored.pop("progress")
    stored.update(current_step=progress.current_step, total_steps=progress.total_steps,
                  checkpoint=progress.last_checkpoint)
    stored["error"] = None if job.error is None else job.error.to_dict()
    return stored


def test_the_layout_fast_path_reads_what_reading_by_name_reads(app: Conveyor) -> None:
    store = _jobs_of_every_kind(app)
    rows = _rows(store)
    fast = [row_to_job(row) for row in rows]
    for job, row in zip(fast, rows, strict=True):  # every field from its own column
        stored = _as_stored(job)
        names = row.keys()  # a sqlite3.Row iterates over its values
        raw = {name: (json.loads(row[name]) if name in ("params", "backoff", "checkpoint",
                                                         "result", "error")
                      and row[name] is not None else row[name])
               for name in names if name in stored}
        assert raw == {name: stored[name] for name in raw}
        assert len(raw) == len(stored) - 1  # all but `existing`, which is not stored
    assert {job.state.value for job in fast} == {"pending", "running", "completed", "failed"}
    # without the trace column the row is read column by column, by name
    names = [r[1] for r in store._conn.execute("PRAGMA table_info(jobs)") if r[1] != "trace"]
    by_name = [row_to_job(row) for row in _rows(store, ", ".join(reversed(names)))]
    assert by_name == [dataclasses.replace(job, trace=None) for job in fast]
    assert fast == store.get_jobs([job.id for job in fast])
    done = next(job for job in fast if job.result is not None)
    assert done.result == {"sum": [1, 2]} and done.backoff == fast[-1].backoff != {}
    done.backoff["base"] = -1  # each job has its own policy dict, however it was decoded
    assert row_to_job(_rows(store)[0]).backoff["base"] != -1


def test_a_damaged_row_is_named_or_read_leniently(app: Conveyor) -> None:
    store = _jobs_of_every_kind(app)
    with store._lock:
        store._conn.execute("UPDATE jobs SET backoff = '{bad', result = 'nope' "
                            "WHERE seq = (SELECT min(seq) FROM jobs)")
    row = _rows(store)[0]
    with pytest.raises(StoreError, match="cannot be decoded: result is not valid JSON"):
        row_to_job(row)
    lenient = row_to_job(row, lenient=True)
    assert (lenient.backoff, lenient.result) == ({}, None)
    assert lenient.error is not None and lenient.error.type == UNDECODABLE_ROW
    assert "result, backoff" in lenient.error.message
    missing = _rows(store, "id, state")[0]
    with pytest.raises(StoreError, match="cannot be decoded"):
        row_to_job(missing)


def test_times_decode_alike_cached_or_not_and_a_batch_alike_row_by_row(app: Conveyor) -> None:
    store = _jobs_of_every_kind(app)
    rows = _rows(store)
    warm = [row_to_job(row) for row in rows]
    rows_module._TIMES.clear()  # each time column's first decode, then its cached one
    assert [row_to_job(row) for row in rows] == warm == [row_to_job(row) for row in rows]
    assert decode_rows(rows) == warm  # one picker for the statement's rows
    assert all(job.created_at.tzinfo is not None for job in warm)
    with store._lock:
        store._conn.execute("UPDATE jobs SET run_at = 'soon', finished_at = 'later' "
                            "WHERE seq = (SELECT min(seq) FROM jobs)")
    with pytest.raises(StoreError, match="cannot be decoded"):
        row_to_job(_rows(store)[0])
    assert len(decode_rows(_rows(store))) == len(rows) - 1  # the damaged one is skipped


def test_a_decoded_job_is_the_one_job_init_makes(app: Conveyor) -> None:
    """_decode sets a bare Job's fields instead of calling Job(...): the same fields, in the
    same order, with the same values, and nothing shared between two decodes of one row
    (the backoff policy comes from a cache of parsed ones: each job gets its own copy)."""
    store = _jobs_of_every_kind(app)
    for row in _rows(store):
        decoded = row_to_job(row)
        by_init = Job(**{spec.name: getattr(decoded, spec.name)
                         for spec in dataclasses.fields(Job)})
        assert decoded == by_init and list(vars(decoded)) == list(vars(by_init))
        assert type(decoded) is Job and decoded.existing is False
        again = row_to_job(row)
        assert again.params is not decoded.params and again.progress is not decoded.progress
        assert again.backoff == decoded.backoff and again.backoff is not decoded.backoff


def test_the_import_check_refuses_a_job_decode_would_not_make(
        monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass
    class Wider(Job):
        tags: list[str] = dataclasses.field(default_factory=list)

    # the refused checks leave their fill in a copy, not in the one decoding uses
    monkeypatch.setattr(rows_module, "_NOT_DECODED", dict(rows_module._NOT_DECODED))
    monkeypatch.setattr(rows_module, "Job", Wider)
    with pytest.raises(TypeError, match=r"Job\.tags, which has no plain default"):
        rows_module._check_decoded_fields()

    @dataclasses.dataclass
    class Tagged(Job):
        tag: str = ""  # a plain default, but _decode would not set it

    monkeypatch.setattr(rows_module, "Job", Tagged)
    with pytest.raises(TypeError, match="must set every Job field"):
        rows_module._check_decoded_fields()

    @dataclasses.dataclass
    class Watched(Job):
        def __setattr__(self, name: str, value: object) -> None:
            super().__setattr__(name, value)

    monkeypatch.setattr(rows_module, "Job", Watched)
    with pytest.raises(TypeError, match="may not define __setattr__"):
        rows_module._check_decoded_fields()
    monkeypatch.setattr(rows_module, "_DECODED", rows_module._DECODED[::-1])
    with pytest.raises(TypeError, match="in Job's order"):
        rows_module._check_decoded_fields()
