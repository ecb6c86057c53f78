"""Text fields, run_at and corrupt rows on both stores: the core refuses bad input the same
way whichever store is behind it (one error class, nothing written), and a row the core would
never write (a hand edit, an older version) cannot take down a list, a worker or a cancel."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, EnqueueRequest, InvalidParams, JobContext, JobNotFound, JobState
from conveyor.errors import ConfigurationError, ConveyorError, InvalidStateError
from conveyor.testing import drain
from conveyor.validate import MAX_ACTOR, MAX_NAME, MAX_REASON
from tests.conftest import app_on, pg_test_url

S = JobState


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Conveyor]:
    """An app with one job type and a pending and a completed job, on each store."""
    with app_on(request.param, tmp_path, "badtext") as made:
        made.job("t")(lambda ctx, x=None: {"x": x})
        made.enqueue("t", {"x": 1})
        drain(made)
        made.enqueue("t", {"x": 2})
        yield made


def _snapshot(app: Conveyor) -> list[Any]:
    jobs = app.list(limit=1000)
    return [(job.to_dict(), [e.to_dict() for e in app.history(job.id)]) for job in jobs]


@contextlib.contextmanager
def unchanged(app: Conveyor) -> Iterator[None]:
    before = _snapshot(app)
    yield
    assert _snapshot(app) == before


def _pending(app: Conveyor) -> str:
    return app.list(S.PENDING, limit=1)[0].id


NAMES = ["a\x00b", "\ud800", "bad\x1b[2Kname", "tab\there", "x\u202egnp.exe", "\x9b31m",
         "line\u2028sep", "n" * (MAX_NAME + 1)]
REASONS = ["a\x00b", "\udcff", "r" * (MAX_REASON + 1)]
ACTORS = ["a\x00b", "\ud800", "who\x1b]0;title\x07", "a\u202eb", "a" * (MAX_ACTOR + 1)]


@pytest.mark.parametrize("value", NAMES)
def test_bad_queue_names_are_refused(app: Conveyor, value: str) -> None:
    with unchanged(app), pytest.raises(ConfigurationError, match="queue"):
        app.enqueue("t", queue=value)
    with unchanged(app), pytest.raises(ConfigurationError, match="queue"):
        app.enqueue_many([EnqueueRequest("t", queue="ok"), EnqueueRequest("t", queue=value)])


@pytest.mark.parametrize("value", NAMES)
def test_bad_names_in_list_filters_are_refused(app: Conveyor, value: str) -> None:
    with pytest.raises(InvalidParams, match="job type"):
        app.list(job_type=value)
    with pytest.raises(InvalidParams, match="queue"):
        app.list(queue=[value])
    with pytest.raises(InvalidParams, match="queue"):
        app.counts(queue=value)


@pytest.mark.parametrize("value", [*NAMES, ""])
def test_bad_job_type_names_cannot_be_registered(app: Conveyor, value: str) -> None:
    with pytest.raises(ConfigurationError, match="job type name"):
        app.job(value)(lambda ctx: None)
    with pytest.raises(ConfigurationError, match="queue"):
        app.job("fine", queue=value)(lambda ctx: None)
    assert sorted(app.job_types) == ["t"]


@pytest.mark.parametrize("value", [*NAMES, ""])
def test_bad_queue_names_cannot_be_given_to_a_worker(app: Conveyor, value: str) -> None:
    with pytest.raises(ConfigurationError, match="queue"):
        app.worker(queues=["default", value])


def test_an_unregistered_type_with_a_nul_is_unknown(app: Conveyor) -> None:
    with unchanged(app), pytest.raises(ConveyorError, match="Unknown job type"):
        app.enqueue("t\x00")


@pytest.mark.parametrize("verb", ["pause", "resume", "cancel", "retry"])
@pytest.mark.parametrize("value", REASONS)
def test_bad_reasons_are_refused(app: Conveyor, verb: str, value: str) -> None:
    with unchanged(app), pytest.raises(InvalidParams, match="reason"):
        getattr(app, verb)(_pending(app), reason=value)


def test_a_reason_with_other_controls_is_kept_as_given(app: Conveyor) -> None:
    """Reasons are free text: controls other than NUL are stored, and escaped when shown."""
    reason = "line one\nline \x1b[31mtwo\u202e " + "r" * (MAX_REASON - 30)
    job = app.cancel(_pending(app), reason=reason)
    assert app.history(job.id)[-1].reason == reason


@pytest.mark.parametrize("value", ACTORS)
def test_bad_actors_are_refused(app: Conveyor, value: str) -> None:
    job_id = _pending(app)
    with unchanged(app):
        for call in (lambda: app.cancel(job_id, actor=value),
                     lambda: app.enqueue("t", actor=value),
                     lambda: app.enqueue_many([EnqueueRequest("t")], actor=value)):
            with pytest.raises(InvalidParams, match="actor"):
                call()
        done = app.list(S.COMPLETED, limit=1)[0].id
        with pytest.raises(InvalidParams, match="actor"):
            app.requeue(done, actor=value)


@pytest.mark.parametrize("value", ["x\x00", "\ud800", "00000000-0000-4000-8000-00000000000\x00",
                                   "A" * 10_000, "' OR 1=1 --", ""])
def test_ids_that_cannot_exist_are_not_found(app: Conveyor, value: str) -> None:
    """Never a StoreError (PostgreSQL refuses NUL) or a UnicodeEncodeError."""
    calls: list[Callable[[], object]] = [
        lambda: app.get(value), lambda: app.history(value), lambda: app.pause(value),
        lambda: app.resume(value), lambda: app.cancel(value), lambda: app.retry(value),
        lambda: app.requeue(value), lambda: app.wait(value, timeout=1)]
    with unchanged(app):
        for call in calls:
            with pytest.raises(JobNotFound) as caught:
                call()
            assert len(str(caught.value)) < 200


def test_an_id_that_is_not_a_string(app: Conveyor) -> None:
    with pytest.raises(InvalidParams, match="job id"):
        app.get(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("run_at", [
    datetime.fromisoformat("0001-01-01T00:00:00+14:00"),
    datetime.fromisoformat("9999-12-31T23:59:59-23:59"),
    datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
    datetime(2100, 1, 1, tzinfo=UTC),
])
def test_run_at_beyond_the_horizon_is_refused(app: Conveyor, run_at: datetime) -> None:
    with unchanged(app), pytest.raises(ConfigurationError, match="1970 to 2099"):
        app.enqueue("t", run_at=run_at)
    with unchanged(app), pytest.raises(ConfigurationError, match="1970 to 2099"):
        app.enqueue_many([EnqueueRequest("t"), EnqueueRequest("t", run_at=run_at)])


@pytest.mark.parametrize("run_at", [1_800_000_000.0, 1_800_000_000, "2030-01-01T00:00:00Z"])
def test_run_at_that_is_not_a_datetime_is_refused(app: Conveyor, run_at: Any) -> None:
    with unchanged(app), pytest.raises(ConfigurationError) as caught:
        app.enqueue("t", run_at=run_at)
    message = str(caught.value)
    assert "run_at must be a timezone-aware datetime" in message
    assert type(run_at).__name__ in message


def test_run_at_within_the_horizon_is_accepted(app: Conveyor) -> None:
    early = datetime.fromisoformat("1970-01-01T00:00:00+14:00")
    late = datetime.fromisoformat("2099-12-31T23:59:59.999999-23:59")
    for when in (early, late):
        job = app.enqueue("t", run_at=when)
        assert abs((app.get(job.id).run_at - when).total_seconds()) < 0.01


# --------------------------------------------------------------------------------------------
# rows the core would never write


def _corrupt(app: Conveyor, job_id: str, *, sqlite_set: str, postgres_set: str) -> None:
    if app.url.startswith("sqlite"):
        path = app.url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(f"UPDATE jobs SET {sqlite_set} WHERE id = ?", (job_id,))
            conn.commit()
    else:
        import psycopg

        schema = app.store._settings.schema  # type: ignore[attr-defined]
        with psycopg.connect(pg_test_url(), autocommit=True) as conn:
            conn.execute(f'UPDATE "{schema}".jobs SET {postgres_set} WHERE id = %s', (job_id,))


@pytest.mark.parametrize(("sqlite_set", "postgres_set"), [
    ("run_at = -1e15", "run_at = '0001-01-01 00:00:00+00 BC'"),
    ("run_at = 1e15", "run_at = 'infinity'"),
])
def test_a_row_with_an_impossible_time_stays_usable(app: Conveyor, sqlite_set: str,
                                                    postgres_set: str) -> None:
    other = _pending(app)
    bad = app.enqueue("t", {"x": "bad"})
    _corrupt(app, bad.id, sqlite_set=sqlite_set, postgres_set=postgres_set)
    assert bad.id in [job.id for job in app.list(limit=100)]
    assert app.get(bad.id).run_at.year in (1, 9999)
    drain(app)  # a worker survives claiming (or passing over) the row
    assert app.get(other).state is S.COMPLETED
    after = app.get(bad.id)
    if after.run_at.year == 1:
        assert after.state is S.COMPLETED
    else:
        assert after.state is S.PENDING
        assert app.cancel(bad.id, reason="bad row").state is S.CANCELLED


def test_a_row_with_params_that_are_not_json_is_skipped_and_cancellable(
        make_app: Callable[..., Conveyor], caplog: pytest.LogCaptureFixture) -> None:
    """SQLite only: PostgreSQL's jsonb columns cannot hold invalid JSON."""
    app = make_app()
    app.job("t")(lambda ctx, x=None: {"x": x})
    bad = app.enqueue("t", {"x": "bad"}, priority=100)  # first in line for a worker
    good = app.enqueue("t", {"x": "good"})
    _corrupt(app, bad.id, sqlite_set="params = '{not json'", postgres_set="")
    with caplog.at_level(logging.ERROR, logger="conveyor.store"):
        listed = [job.id for job in app.list(limit=100)]
    assert bad.id not in listed
    assert good.id in listed
    assert any(bad.id in record.getMessage() for record in caplog.records)
    drain(app)  # the worker runs the good job and never the bad one
    assert app.get(good.id).state is S.COMPLETED
    shown = app.get(bad.id)
    assert shown.state is S.PENDING
    assert shown.error is not None and "params" in shown.error.message
    assert app.cancel(bad.id, reason="corrupt").state is S.CANCELLED
    with pytest.raises(InvalidStateError, match="cannot be decoded"):
        app.requeue(bad.id)


# --------------------------------------------------------------------------------------------
# SQLite files


def test_sqlite_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        app = Conveyor(f"sqlite:///{tmp_path / 'jobs.db'}")

        @app.job("t")
        def t(ctx: JobContext) -> None:
            return None

        app.enqueue("t")
        names = sorted(p.name for p in tmp_path.iterdir())
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        app.close()
    finally:
        os.umask(old)
    assert names == ["jobs.db", "jobs.db-shm", "jobs.db-wal"]
    assert modes == dict.fromkeys(names, 0o600)


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.touch()
    path.chmod(0o640)
    app = Conveyor(f"sqlite:///{path}")
    app.job("t")(lambda ctx: None)
    app.enqueue("t")
    app.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
