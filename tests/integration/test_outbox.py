"""Enqueue inside the caller's own transaction (issue 12, item 2), on both stores.

Rolled back: no job, and no worker ever sees it. Committed: the job exists with the caller's
data, and a worker that is idle waits for no timer to find it (PostgreSQL: the NOTIFY is
part of the caller's transaction; SQLite: the commit watch sees the caller's commit).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from conveyor import (
    AsyncConveyor,
    ConfigurationError,
    Conveyor,
    EnqueueRequest,
    JobContext,
    JobState,
)
from conveyor.stores.sqlite import SQLiteStore
from conveyor.worker import Worker
from tests.conftest import pg_test_url

WAIT = 30.0


class Rollback(Exception):
    """Raised to roll the caller's transaction back."""


def _ship(ctx: JobContext, order: int) -> int:
    return order


def _sqlalchemy_engine(app: Conveyor) -> sa.Engine:
    """The caller's own engine on the store's database (SQLite file, or psycopg 3)."""
    if isinstance(app.store, SQLiteStore):
        return sa.create_engine(app.url)
    return sa.create_engine(app.url.replace("postgresql://", "postgresql+psycopg://", 1))


@pytest.fixture
def orders(any_app: Conveyor) -> Iterator[tuple[sa.Engine, str]]:
    """A table of the caller's own, in the store's database, and the caller's engine."""
    any_app.job("ship")(_ship)
    engine = _sqlalchemy_engine(any_app)
    table = f"orders_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id integer)"))
    yield engine, table
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {table}"))
    engine.dispose()


@pytest.fixture
def idle_worker(any_app: Conveyor) -> Iterator[threading.Event]:
    """A worker that polls only every 10 minutes; the event is set once it waits for work."""
    waiting = threading.Event()
    store = any_app.store
    real_wait = store.wait_for_work

    def wait_for_work(timeout: float) -> None:
        waiting.set()
        real_wait(timeout)

    store.wait_for_work = wait_for_work  # type: ignore[method-assign]
    worker = Worker(any_app, concurrency=1, poll_interval=600.0, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    yield waiting
    worker.stop()
    # A stop that lands while the worker is claiming wakes nobody (the worker then waits out
    # its poll): wake it until it has stopped, so the test does not wait 10 minutes.
    for _ in range(int(WAIT * 2)):
        if not thread.is_alive():
            break
        store.notify_work()
        thread.join(0.5)
    assert not thread.is_alive()


def _place_order(engine: sa.Engine, table: str, app: Conveyor, order: int, *,
                 commit: bool) -> str:
    """The SQLAlchemy recipe: the raw DBAPI connection of the caller's own transaction."""
    job_id = ""
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {table} (id) VALUES (:id)"), {"id": order})
            raw = conn.connection.driver_connection  # psycopg.Connection / sqlite3.Connection
            job_id = app.enqueue("ship", {"order": order}, connection=raw).id
            if not commit:
                raise Rollback
    except Rollback:
        pass
    return job_id


def test_the_job_exists_exactly_when_the_callers_transaction_commits(
        any_app: Conveyor, orders: tuple[sa.Engine, str], idle_worker: threading.Event) -> None:
    engine, table = orders
    created: list[str] = []
    any_app.subscribe(lambda e: created.append(e.job.id) if e.name == "JobCreated" else None)
    lost = _place_order(engine, table, any_app, 1, commit=False)
    assert any_app.store.get_jobs([lost]) == []
    assert idle_worker.wait(WAIT)  # the worker is idle, waiting for a wake-up
    kept = _place_order(engine, table, any_app, 2, commit=True)
    done = any_app.wait(kept, timeout=WAIT)  # woken by the commit, not by the 10-min poll
    assert done.state is JobState.COMPLETED and done.result == 2
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT id FROM {table}")).scalars().all() == [2]
    assert sum(any_app.counts().values()) == 1  # the rolled-back job never existed
    assert created == []  # no JobCreated for a job whose transaction could still roll back


def test_async_enqueue_joins_the_callers_async_transaction(any_app: Conveyor,
                                                           tmp_path: Path) -> None:
    any_app.job("ship")(_ship)

    async def scenario() -> list[str]:
        async with AsyncConveyor(any_app) as client:
            if isinstance(any_app.store, SQLiteStore):
                conn = sqlite3.connect(any_app.store.path)
                lost = (await client.enqueue("ship", {"order": 1}, connection=conn)).id
                conn.rollback()
                kept = (await client.enqueue("ship", {"order": 2}, connection=conn)).id
                conn.commit()
                conn.close()
                return [lost, kept]
            async with await psycopg.AsyncConnection.connect(pg_test_url()) as aconn:
                lost = (await client.enqueue("ship", {"order": 1}, connection=aconn)).id
                await aconn.rollback()
                kept = (await client.enqueue("ship", {"order": 2}, connection=aconn)).id
                await aconn.commit()
            return [lost, kept]

    lost, kept = asyncio.run(scenario())
    assert [j.id for j in any_app.store.get_jobs([lost, kept])] == [kept]


def test_a_connection_to_another_database_is_refused_and_nothing_is_written(
        any_app: Conveyor, tmp_path: Path) -> None:
    any_app.job("ship")(_ship)
    before = any_app.counts()
    other_file = sqlite3.connect(tmp_path / "other.db")
    wrong: list[Any] = [other_file, object()]
    if not isinstance(any_app.store, SQLiteStore):
        with (psycopg.connect(pg_test_url(), dbname="postgres") as elsewhere,
              pytest.raises(ConfigurationError, match="not the store's")):
            any_app.enqueue("ship", {"order": 1}, connection=elsewhere)
    for conn in wrong:
        with pytest.raises(ConfigurationError, match="connection="):
            any_app.enqueue("ship", {"order": 1}, connection=conn)
    assert any_app.counts() == before
    other_file.close()


def test_sqlite_default_and_autocommit_connections(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path / 'jobs.db'}")
    app.job("ship")(_ship)
    path = str(tmp_path / "jobs.db")
    app.store.migrate()
    legacy = sqlite3.connect(path)  # opens its transaction on the first write: ours
    first = app.enqueue("ship", {"order": 1}, connection=legacy)
    legacy.rollback()
    auto = sqlite3.connect(path, isolation_level=None)  # no transaction: one of our own
    second = app.enqueue("ship", {"order": 2}, connection=auto)
    assert [j.id for j in app.store.get_jobs([first.id, second.id])] == [second.id]
    legacy.close()
    auto.close()
    app.close()


def test_a_unique_key_in_the_callers_transaction_is_refused_and_writes_nothing(
        tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path / 'jobs.db'}")
    app.job("ship")(_ship)
    app.store.migrate()
    conn = sqlite3.connect(str(tmp_path / "jobs.db"))
    try:
        with pytest.raises(ConfigurationError, match="unique_key cannot be combined"):
            app.enqueue("ship", {"order": 1}, unique_key="order:1", connection=conn)
        with pytest.raises(ConfigurationError, match="unique_key cannot be combined"):
            app.enqueue_many([EnqueueRequest("ship", {"order": 2}, unique_key="order:2")],
                             connection=conn)
        assert not conn.in_transaction
        assert app.list() == []
    finally:
        conn.close()
        app.close()
