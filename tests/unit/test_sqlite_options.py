"""The SQLite URL's one option, ``?synchronous=full|normal``, and ``EnqueueRequest``'s options."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor import Backoff, ConfigurationError, Conveyor, EnqueueRequest, JobContext
from conveyor.stores.sqlite import SQLiteStore
from conveyor.stores.sqlite.config import parse_sqlite_url, sqlite_synchronous

# PRAGMA synchronous reads back as a number: 1 is NORMAL, 2 is FULL.
PRAGMA_LEVEL = {"NORMAL": 1, "FULL": 2}


@pytest.mark.parametrize(("suffix", "level"), [
    ("", "NORMAL"),
    ("?synchronous=normal", "NORMAL"),
    ("?synchronous=full", "FULL"),
    ("?synchronous=FULL", "FULL"),
    ("?synchronous=Normal", "NORMAL"),
])
def test_the_synchronous_option_is_read_and_applied(suffix: str, level: str,
                                                    tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}{suffix}"
    assert parse_sqlite_url(url) == str(tmp_path / "jobs.db")
    assert sqlite_synchronous(url) == level
    store = SQLiteStore(url)
    try:
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == PRAGMA_LEVEL[level]
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_an_app_opened_with_full_writes_with_full(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path / 'jobs.db'}?synchronous=full")
    app.job("t")(lambda ctx: None)
    try:
        job = app.enqueue("t")
        store = app.store
        assert isinstance(store, SQLiteStore)
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == PRAGMA_LEVEL["FULL"]
        assert app.get(job.id).job_type == "t"
    finally:
        app.close()
    assert (tmp_path / "jobs.db").exists()


@pytest.mark.parametrize("query", [
    "?synchronous=off",
    "?synchronous=extra",
    "?synchronous=",
    "?synchronous",
    "?sync=full",
    "?synchronous=full&synchronous=normal",
    "?synchronous=full&mode=ro",
    "?mode=ro",
    "?=full",
    "?synchronous=full#x",
])
def test_bad_options_name_the_option_and_create_nothing(query: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}{query}"
    with pytest.raises(ConfigurationError) as caught:
        SQLiteStore(url)
    message = str(caught.value)
    assert "synchronous" in message or "'#'" in message
    assert repr(url) in message
    app = Conveyor(url)
    try:
        with pytest.raises(ConfigurationError):
            app.get("some-id")
    finally:
        app.close()
    assert list(tmp_path.iterdir()) == []


def test_memory_store_takes_the_option() -> None:
    store = SQLiteStore("sqlite://:memory:?synchronous=full")
    try:
        assert store.path == ":memory:"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == PRAGMA_LEVEL["FULL"]
    finally:
        store.close()


# --------------------------------------------------------------------------------------------
# EnqueueRequest takes every option enqueue() takes


def _app(tmp_path: Path) -> Conveyor:
    app = Conveyor(f"sqlite:///{tmp_path / 'jobs.db'}")

    @app.job("t")
    def t(ctx: JobContext, n: int = 0) -> None:
        return None

    return app


def test_enqueue_many_applies_every_option(tmp_path: Path) -> None:
    app = _app(tmp_path)
    run_at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    backoff = Backoff(base=2.0, factor=3.0, max_delay=60.0, jitter=0.25)
    try:
        many = app.enqueue_many([
            EnqueueRequest("t", {"n": 1}, queue="q1", priority=5, run_at=run_at,
                           max_attempts=7, timeout=12.5, pause_timeout=99.0, backoff=backoff),
            EnqueueRequest("t", {"n": 2}),
        ])
        one = app.enqueue("t", {"n": 1}, queue="q1", priority=5, run_at=run_at,
                          max_attempts=7, timeout=12.5, pause_timeout=99.0, backoff=backoff)
        full, plain = (app.get(job.id) for job in many)
        for job in (full, app.get(one.id)):
            assert (job.queue, job.priority, job.run_at) == ("q1", 5, run_at)
            assert (job.max_attempts, job.timeout, job.pause_timeout) == (7, 12.5, 99.0)
        assert full.backoff == app.get(one.id).backoff
        assert full.backoff != plain.backoff
        assert (plain.max_attempts, plain.timeout) != (7, 12.5)
    finally:
        app.close()


@pytest.mark.parametrize("bad", [
    {"max_attempts": -1}, {"timeout": 0.0}, {"pause_timeout": -5.0},
])
def test_enqueue_many_rejects_a_bad_option_and_writes_nothing(bad: dict[str, float],
                                                              tmp_path: Path) -> None:
    app = _app(tmp_path)
    try:
        with pytest.raises(ConfigurationError):
            app.enqueue_many([EnqueueRequest("t"), EnqueueRequest("t", **bad)])  # type: ignore[arg-type]
        assert sum(app.counts().values()) == 0
    finally:
        app.close()
