"""``inserted_job`` builds a new job by filling its ``__dict__`` rather than through
``Job(...)``: the job it makes must be the one ``Job(...)`` makes (equal, same repr, same
attributes in the same order, no value shared with the NewJob or another job), and the one
the store reads back for the row it wrote."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.lifecycle import JobState
from conveyor.model import Job, JobProgress
from conveyor.stores.base import NewJob, inserted_job, job_template
from conveyor.stores.sqlite.store import SQLiteStore

_NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)

NEWS = [
    NewJob(id="plain", job_type="t", params={}, params_json="{}", backoff_json="{}"),
    NewJob(id="full", job_type="t", params={"a": [1, 2]}, queue="q", priority=-3,
           max_attempts=7, timeout=2.5, pause_timeout=60.0, backoff={"base": 2.0},
           requeued_from="old", progress=JobProgress(2, 5, {"at": 2}), unique_key="k",
           trace="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
           limit_key="tenant:7", depends_on=("up",), on_dependency_failure="run"),
    NewJob(id="policy", job_type="t", params={"b": None}, on_dependency_failure="run"),
]


def _by_init(new: NewJob, created: datetime, run_at: datetime) -> Job:
    """What inserted_job made before, through Job's own __init__."""
    progress = new.progress
    return Job(
        id=new.id, state=JobState.PENDING, created_at=created, job_type=new.job_type,
        params=dict(new.params), max_attempts=new.max_attempts,
        progress=JobProgress() if progress is None else JobProgress(
            progress.current_step, progress.total_steps, dict(progress.last_checkpoint)),
        queue=new.queue, priority=new.priority, run_at=run_at, timeout=new.timeout,
        pause_timeout=new.pause_timeout, backoff=dict(new.backoff), updated_at=created,
        requeued_from=new.requeued_from, unique_key=new.unique_key, trace=new.trace,
        limit_key=new.limit_key,
        on_dependency_failure=new.on_dependency_failure if new.depends_on else "cancel")


@pytest.mark.parametrize("new", NEWS, ids=[n.id for n in NEWS])
def test_inserted_job_is_the_job_init_makes(new: NewJob) -> None:
    later = _NOW + timedelta(seconds=5)
    made, expected = inserted_job(new, _NOW, later), _by_init(new, _NOW, later)
    assert made == expected
    assert repr(made) == repr(expected)
    assert list(vars(made).items()) == list(vars(expected).items())  # order too
    assert list(vars(made.progress).items()) == list(vars(expected.progress).items())
    assert dataclasses.asdict(made) == dataclasses.asdict(expected)
    assert made.existing is False and made.error is None and made.attempt == 0


def test_inserted_jobs_share_no_mutable_value() -> None:
    new = NEWS[1]
    one, two = inserted_job(new, _NOW, _NOW), inserted_job(new, _NOW, _NOW)
    plain = NewJob(id="plain", job_type="t", params={})
    first, second = inserted_job(plain, _NOW, _NOW), inserted_job(plain, _NOW, _NOW)
    assert first.progress.last_checkpoint is not second.progress.last_checkpoint
    for name in ("params", "backoff", "progress"):
        assert getattr(one, name) is not getattr(two, name)
        assert getattr(one, name) is not getattr(new, name)
    one.params["x"] = 1
    one.attempt = 2
    assert "x" not in two.params and two.attempt == 0 and "x" not in new.params


def test_inserted_job_is_the_row_read_back(db_url: str) -> None:
    store = SQLiteStore(db_url)
    try:
        store.migrate()
        news = [dataclasses.replace(n, unique_key=None, depends_on=(), id=f"{n.id}-{i}")
                for i, n in enumerate(NEWS)]
        news.append(NewJob(id="later", job_type="t", params={}, delay=30.0))
        for batch in ([news[0]], news[1:]):  # one job alone, and a batch
            for made in store.insert_jobs(batch, actor="a"):
                assert made == store.get_job(made.id)
    finally:
        store.close()


def test_a_template_refuses_a_name_that_is_not_a_job_field() -> None:
    """A misspelt field in a filler's list would leave the real field at its default in every
    job it makes: refused at import instead."""
    with pytest.raises(TypeError, match=r"sets what is not a Job field: \['stat'\]"):
        job_template(Job, ("id", "stat"), "a filler")
