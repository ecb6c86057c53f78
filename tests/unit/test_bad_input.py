"""SPEC section 4 through the app API: every bad input gets a clear error naming what was
wrong, and changes nothing (the database's rows and files are compared before and after)."""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor import (
    Conveyor,
    ConveyorError,
    EnqueueRequest,
    InvalidParams,
    InvalidStateError,
    Job,
    JobContext,
    JobNotFound,
    JobState,
    PayloadTooLarge,
    StoreError,
    UnknownJobType,
    transitions,
)
from conveyor.changes import Lease
from conveyor.errors import ConfigurationError
from conveyor.model import JobError, JobProgress
from conveyor.payload import MAX_BYTES
from conveyor.testing import drain
from tests.conftest import AppFactory

S = JobState
CONVEYOR_APP_ID = 0x434F4E56
SOME_ID = "00000000-0000-4000-8000-000000000000"  # shaped like a job id, so the store is asked


def _path(app: Conveyor) -> str:
    return app.url.removeprefix("sqlite:///")


def _dump(app: Conveyor) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every row of both tables, read through a connection of our own (read-only)."""
    uri = f"file:{_path(app)}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        jobs = conn.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
        history = conn.execute("SELECT * FROM job_history ORDER BY id").fetchall()
    return jobs, history


@contextlib.contextmanager
def unchanged(app: Conveyor) -> Iterator[None]:
    """The block must leave every job and history row exactly as it found them."""
    app.store  # noqa: B018 - open (and migrate) the store before taking the snapshot
    before = _dump(app)
    yield
    after = _dump(app)
    assert len(after[0]) == len(before[0]), "the number of jobs changed"
    assert len(after[1]) == len(before[1]), "the number of history rows changed"
    assert after == before


def _lease(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job.id, job.lease_token, job.attempt)


def _in_state(app: Conveyor, state: S, *, exhausted: bool = False,
              cancel_requested: bool = False) -> Job:
    """A job of its own type brought to ``state`` through real transitions (no worker)."""
    name = f"t-{state.value}-{uuid.uuid4().hex[:8]}"
    app.job(name, max_attempts=0 if exhausted else 3)(lambda ctx: None)
    job = app.enqueue(name)
    if state is S.PENDING:
        return job
    if state is S.CANCELLED:
        return app.cancel(job.id)
    (claimed,) = app.store.claim("w", queues=[], job_types=[name], limit=1, lease_seconds=60)
    lease = _lease(claimed)
    if state is S.RUNNING:
        return app.cancel(job.id) if cancel_requested else claimed
    if state is S.PAUSED:
        return app.apply([transitions.pause_at_checkpoint(lease, JobProgress(1, 2), "w")])
    if state is S.COMPLETED:
        return app.apply([transitions.complete(lease, {"ok": True}, "w")])
    return app.apply([transitions.fail(lease, job.id, JobError("E", "boom"), "raised", "w")])


@pytest.fixture
def app(make_app: AppFactory) -> Conveyor:
    """An app with a few job types and a job in every state, so "unchanged" means something."""
    app = make_app()

    @app.job("reports.generate")
    def generate(ctx: JobContext, month: str, pages: int = 1) -> dict[str, str]:
        return {"month": month}

    @app.job("store.data")
    def store_data(ctx: JobContext, data: Any = None) -> None:
        return None

    for state in S:
        _in_state(app, state)
    return app


# --------------------------------------------------------------------------------------------
# enqueue: the job type and its params


def test_unknown_job_type(app: Conveyor) -> None:
    with unchanged(app), pytest.raises(UnknownJobType) as caught:
        app.enqueue("reports.generat", {"month": "2026-10"})
    message = str(caught.value)
    assert "'reports.generat'" in message
    assert "reports.generate" in message  # the registered names help spot the typo
    assert isinstance(caught.value, ConveyorError)


def test_unknown_job_type_in_a_batch_inserts_nothing(app: Conveyor) -> None:
    requests = [EnqueueRequest("reports.generate", {"month": "2026-10"}),
                EnqueueRequest("nope")]
    with unchanged(app), pytest.raises(UnknownJobType, match="'nope'"):
        app.enqueue_many(requests)


@pytest.mark.parametrize(("params", "named"), [
    ({}, "month"),
    ({"pages": 3}, "month"),
    ({"month": "2026-10", "colour": "red"}, "colour"),
    ({"month": "2026-10", "pages": 1, "extra": 1}, "extra"),
])
def test_params_that_do_not_fit_the_signature(app: Conveyor, params: dict[str, Any],
                                              named: str) -> None:
    with unchanged(app), pytest.raises(InvalidParams) as caught:
        app.enqueue("reports.generate", params)
    message = str(caught.value)
    assert named in message
    assert "reports.generate" in message


def test_params_that_fit_once_let_no_other_names_through(app: Conveyor) -> None:
    """Enqueue remembers which param names fit a type; other names are still checked."""
    app.enqueue("reports.generate", {"month": "2026-10"})
    app.enqueue("reports.generate", {"month": "2026-11"})  # the same names: known to fit
    for params, named in (({}, "month"), ({"month": "2026-10", "colour": "red"}, "colour")):
        with unchanged(app), pytest.raises(InvalidParams, match=named):
            app.enqueue("reports.generate", params)


@pytest.mark.parametrize("params", [[1, 2], "month=2026-10", 42, ("a", "b")])
def test_params_that_are_not_an_object(app: Conveyor, params: Any) -> None:
    with unchanged(app), pytest.raises(InvalidParams, match="JSON object") as caught:
        app.enqueue("store.data", params)
    assert type(params).__name__ in str(caught.value)


def _nested(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(("data", "named"), [
    (math.nan, "nan"),
    (math.inf, "inf"),
    (-math.inf, "inf"),
    ({"deep": [1, math.nan]}, "nan"),
    ("a\u0000b", "NUL"),
    ({"ke\u0000y": 1}, "NUL"),
    ("\ud800", "surrogate"),
    (2**64, "64-bit"),
    (-(2**63) - 1, "64-bit"),
    (_nested(5000), "deeper"),
    ({1: "x"}, "non-string key"),
    ({1, 2}, "set"),
    (b"bytes", "bytes"),
    (datetime(2026, 10, 1, tzinfo=UTC), "datetime"),
])
def test_params_that_are_not_portable_json(app: Conveyor, data: Any, named: str) -> None:
    with unchanged(app), pytest.raises(InvalidParams) as caught:
        app.enqueue("store.data", {"data": data})
    message = str(caught.value)
    assert named in message
    assert "$.data" in message  # where in the params


def test_params_over_the_size_limit(app: Conveyor) -> None:
    with unchanged(app), pytest.raises(PayloadTooLarge) as caught:
        app.enqueue("store.data", {"data": "x" * MAX_BYTES})
    message = str(caught.value)
    assert "params" in message
    assert str(MAX_BYTES) in message
    assert isinstance(caught.value, InvalidParams)


def test_params_at_the_size_limit_are_accepted(app: Conveyor) -> None:
    overhead = len('{"data":""}')
    job = app.enqueue("store.data", {"data": "x" * (MAX_BYTES - overhead)})
    assert len(app.get(job.id).params["data"]) == MAX_BYTES - overhead


def test_a_bad_job_in_a_batch_inserts_nothing(app: Conveyor) -> None:
    requests = [EnqueueRequest("store.data", {"data": 1}),
                EnqueueRequest("store.data", {"data": math.nan})]
    with unchanged(app), pytest.raises(InvalidParams, match="nan"):
        app.enqueue_many(requests)


# --------------------------------------------------------------------------------------------
# enqueue options


@pytest.mark.parametrize(("options", "named"), [
    ({"delay": -1}, "delay"),
    ({"delay": math.nan}, "delay"),
    ({"run_at": datetime(2030, 1, 1)}, "timezone-aware"),  # naive on purpose
    ({"run_at": datetime(2030, 1, 1, tzinfo=UTC), "delay": 5}, "run_at or delay"),
    ({"max_attempts": -1}, "max_attempts"),
    ({"max_attempts": 2.5}, "max_attempts"),
    ({"max_attempts": "3"}, "max_attempts"),
    ({"priority": "high"}, "priority"),
    ({"priority": 1.5}, "priority"),
    ({"priority": True}, "priority"),
    ({"priority": 2**40}, "priority"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": -5}, "timeout"),
    ({"timeout": math.nan}, "timeout"),
    ({"pause_timeout": 0}, "pause_timeout"),
    ({"queue": ""}, "queue"),
    ({"queue": "q" * 500}, "queue"),
])
def test_bad_options(app: Conveyor, options: dict[str, Any], named: str) -> None:
    with unchanged(app), pytest.raises(ConfigurationError) as caught:
        app.enqueue("store.data", {}, **options)
    assert named in str(caught.value)


@pytest.mark.parametrize(("options", "named"), [
    ({"delay": math.inf}, "delay"),
    ({"delay": 1e20}, "delay"),
    ({"delay": "5"}, "delay"),
    ({"timeout": "30"}, "timeout"),
    ({"pause_timeout": "1h"}, "pause_timeout"),
    ({"max_attempts": 2**63}, "max_attempts"),
    ({"priority": 2**31}, "priority"),  # one past the largest 32-bit integer
])
def test_out_of_range_or_mistyped_options_are_refused_cleanly(
        app: Conveyor, options: dict[str, Any], named: str) -> None:
    """Not a TypeError or OverflowError from deep inside: a ConfigurationError naming it."""
    with unchanged(app), pytest.raises(ConfigurationError) as caught:
        app.enqueue("store.data", {}, **options)
    assert named in str(caught.value)


# --------------------------------------------------------------------------------------------
# unknown ids


@pytest.mark.parametrize("call", [
    lambda app, i: app.get(i),
    lambda app, i: app.pause(i),
    lambda app, i: app.resume(i),
    lambda app, i: app.cancel(i),
    lambda app, i: app.retry(i),
    lambda app, i: app.requeue(i),
    lambda app, i: app.history(i),
    lambda app, i: app.wait(i, timeout=1),
], ids=["get", "pause", "resume", "cancel", "retry", "requeue", "history", "wait"])
def test_unknown_job_id(app: Conveyor, call: Callable[[Conveyor, str], object]) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    with unchanged(app), pytest.raises(JobNotFound) as caught:
        call(app, missing)
    assert missing in str(caught.value)
    assert caught.value.job_id == missing


# --------------------------------------------------------------------------------------------
# illegal transitions


ILLEGAL = [
    # (state of the job, control call, the target state the message must name)
    (S.PENDING, "pause", S.PAUSED),
    (S.PAUSED, "pause", S.PAUSED),
    (S.COMPLETED, "pause", S.PAUSED),
    (S.FAILED, "pause", S.PAUSED),
    (S.CANCELLED, "pause", S.PAUSED),
    (S.PENDING, "resume", S.RUNNING),
    (S.RUNNING, "resume", S.RUNNING),  # running with no pause request to withdraw
    (S.COMPLETED, "resume", S.RUNNING),
    (S.FAILED, "resume", S.RUNNING),
    (S.CANCELLED, "resume", S.RUNNING),
    (S.COMPLETED, "cancel", S.CANCELLED),
    (S.CANCELLED, "cancel", S.CANCELLED),
    (S.FAILED, "cancel", S.CANCELLED),
    (S.PENDING, "retry", S.PENDING),
    (S.RUNNING, "retry", S.PENDING),
    (S.PAUSED, "retry", S.PENDING),
    (S.COMPLETED, "retry", S.PENDING),
    (S.CANCELLED, "retry", S.PENDING),
]


@pytest.mark.parametrize(("state", "verb", "target"), ILLEGAL,
                         ids=[f"{v}-{s.value}" for s, v, _ in ILLEGAL])
def test_illegal_transitions_are_refused(app: Conveyor, state: S, verb: str,
                                         target: S) -> None:
    job = _in_state(app, state)
    with unchanged(app), pytest.raises(InvalidStateError) as caught:
        getattr(app, verb)(job.id, actor="mallory", reason="trying")
    message = str(caught.value)
    assert f"Cannot transition from {state.value} to {target.value}" in message
    assert caught.value.from_state == state.value
    assert caught.value.to_state == target.value
    assert app.get(job.id).state is state


def test_retry_of_an_exhausted_job_is_refused(app: Conveyor) -> None:
    job = _in_state(app, S.FAILED, exhausted=True)
    assert job.is_terminal
    with unchanged(app), pytest.raises(InvalidStateError) as caught:
        app.retry(job.id)
    message = str(caught.value)
    assert "Cannot transition from failed to pending" in message
    assert "attempts exhausted" in message


def test_pause_of_a_job_being_cancelled_is_refused(app: Conveyor) -> None:
    job = _in_state(app, S.RUNNING, cancel_requested=True)
    assert job.cancel_requested
    with unchanged(app), pytest.raises(InvalidStateError) as caught:
        app.pause(job.id)
    assert "Cannot transition from running to paused" in str(caught.value)
    assert "cancel" in str(caught.value)


@pytest.mark.parametrize("state", [S.PENDING, S.RUNNING, S.PAUSED, S.FAILED])
def test_requeue_of_a_job_that_has_not_stopped_for_good(app: Conveyor, state: S) -> None:
    job = _in_state(app, state)
    with unchanged(app), pytest.raises(InvalidStateError) as caught:
        app.requeue(job.id)
    assert state.value in str(caught.value)


def test_list_with_bad_filters(app: Conveyor) -> None:
    with unchanged(app):
        with pytest.raises(InvalidParams, match="'finished'"):
            app.list(state="finished")
        with pytest.raises(ConfigurationError, match="limit"):
            app.list(limit=0)
        with pytest.raises(ConfigurationError, match="limit"):
            app.list(limit=10**6)


# --------------------------------------------------------------------------------------------
# registration and worker options


def test_bad_registrations(make_app: AppFactory) -> None:
    app = make_app()

    def no_context() -> None:
        return None

    with pytest.raises(ConfigurationError, match="JobContext"):
        app.job("bad")(no_context)
    app.job("dup")(lambda ctx: 1)
    with pytest.raises(ConfigurationError, match=r"'dup'.*already registered"):
        app.job("dup")(lambda ctx: 2)
    with pytest.raises(ConfigurationError, match="max_attempts"):
        app.job("neg", max_attempts=-1)(lambda ctx: None)
    assert sorted(app.job_types) == ["dup"]


def test_bad_worker_options(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        app.worker(concurrency=0)
    with pytest.raises(ConfigurationError, match="heartbeat_interval"):
        app.worker(lease_seconds=5, heartbeat_interval=5)


# --------------------------------------------------------------------------------------------
# store URLs and database files


@pytest.mark.parametrize("url", [
    "nope",
    "",
    "sqlite://relative-without-slash",
    "sqlite:///",
    "sqlite:///jobs.db?mode=ro",
    "mysql://x",
    "mongodb://localhost/jobs",
])
def test_malformed_store_urls(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = Conveyor(url)
    try:
        with pytest.raises(ConfigurationError) as caught:
            app.get(SOME_ID)
        assert repr(url) in str(caught.value)
        with pytest.raises(ConfigurationError):
            _ = app.store
    finally:
        app.close()
    assert list(tmp_path.iterdir()) == []  # no file was created anywhere


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _open_fails(url: str) -> StoreError:
    app = Conveyor(url)
    app.job("t")(lambda ctx: None)
    try:
        with pytest.raises(StoreError) as caught:
            app.get(SOME_ID)
        with pytest.raises(StoreError):
            app.enqueue("t")
    finally:
        app.close()
    return caught.value


def _refused_untouched(folder: Path, url: str) -> str:
    """Opening ``url`` fails with a StoreError and changes no file of ``folder``; its text."""
    before = _files(folder)
    error = _open_fails(url)
    assert _files(folder) == before
    return str(error)


def _sqlite_file(path: Path, *statements: str) -> str:
    """A SQLite file made by someone else (``statements`` run and committed); its URL."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    return f"sqlite:///{path}"


def test_a_corrupt_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(os.urandom(8192))
    error = _refused_untouched(tmp_path, f"sqlite:///{path}")
    assert str(path) in error
    assert "not a SQLite database or is corrupt" in error


def test_a_truncated_conveyor_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    good = Conveyor(f"sqlite:///{path}")
    good.job("t")(lambda ctx: None)
    good.enqueue("t")
    good.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    data = path.read_bytes()
    path.write_bytes(data[:100] + os.urandom(len(data) - 100))  # header kept, pages garbage
    before = _files(tmp_path)
    error = _open_fails(f"sqlite:///{path}")
    assert "corrupt" in str(error)
    after = _files(tmp_path)
    assert after["jobs.db"] == before["jobs.db"]
    # the refused connection must be closed, not left holding the file (with -wal/-shm
    # files created beside it) for as long as the error object lives
    assert sorted(after) == sorted(before)


def test_a_foreign_sqlite_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    url = _sqlite_file(tmp_path / "other-app.db",
                       "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
                       "INSERT INTO users (name) VALUES ('ada')")
    error = _refused_untouched(tmp_path, url)
    assert "not a conveyor database" in error
    assert "users" in error


def test_a_database_of_another_application_id_is_refused(tmp_path: Path) -> None:
    url = _sqlite_file(tmp_path / "other.db", "PRAGMA application_id = 12345")
    assert "not a conveyor database" in _refused_untouched(tmp_path, url)


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    url = _sqlite_file(tmp_path / "future.db", f"PRAGMA application_id = {CONVEYOR_APP_ID}",
                       "PRAGMA user_version = 999", "CREATE TABLE jobs (id TEXT)")
    error = _refused_untouched(tmp_path, url)
    assert "999" in error
    assert "upgrade conveyor" in error


def test_a_store_in_a_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "does" / "not" / "exist"
    error = _open_fails(f"sqlite:///{folder / 'jobs.db'}")
    assert str(folder) in str(error)
    assert "does not exist" in str(error)
    assert not (tmp_path / "does").exists()


def test_a_store_path_that_is_a_folder(tmp_path: Path) -> None:
    """A configuration mistake (exit 2), not a corrupt database (exit 4)."""
    folder = tmp_path / "jobs.db"
    folder.mkdir()
    app = Conveyor(f"sqlite:///{folder}")
    try:
        with pytest.raises(ConfigurationError) as caught:
            app.get(SOME_ID)
    finally:
        app.close()
    assert f"{folder} is a directory" in str(caught.value)
    assert "corrupt" not in str(caught.value)
    assert list(folder.iterdir()) == []


# --------------------------------------------------------------------------------------------
# what a job returns or saves


@pytest.mark.parametrize(("value", "named"), [
    ({1, 2, 3}, "set"),
    (math.nan, "nan"),
    ({"score": math.inf}, "inf"),
    ({1: "one"}, "non-string key"),
    (object(), "object"),
    ("x" * (MAX_BYTES + 10), str(MAX_BYTES)),
])
def test_a_result_that_is_not_json_fails_the_job(make_app: AppFactory, value: Any,
                                                 named: str) -> None:
    app = make_app()

    @app.job("returns", max_attempts=0)
    def returns(ctx: JobContext) -> Any:
        return value

    job = app.enqueue("returns")
    drain(app)
    failed = app.get(job.id)
    assert failed.state is S.FAILED
    assert failed.result is None
    assert failed.error is not None
    assert "result" in failed.error.message
    assert named in failed.error.message
    assert app.history(job.id)[-1].reason == "result is not JSON"


def test_a_checkpoint_that_is_not_json_fails_the_job(make_app: AppFactory) -> None:
    app = make_app()

    @app.job("saves", max_attempts=0)
    def saves(ctx: JobContext) -> None:
        ctx.checkpoint({"when": datetime(2026, 1, 1, tzinfo=UTC)})

    job = app.enqueue("saves")
    drain(app)
    failed = app.get(job.id)
    assert failed.state is S.FAILED
    assert failed.error is not None
    assert failed.error.type == "InvalidParams"
    assert "checkpoint" in failed.error.message
    assert "datetime" in failed.error.message
    assert failed.progress.last_checkpoint == {}
