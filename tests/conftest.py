"""Fixtures shared by every test layer."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor


class FakeClock:
    """A settable clock for the SQLite store: tests move time instead of sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


PG_ENV = "CONVEYOR_TEST_PG_URL"
#: What the ``make_app`` fixture gives: ``make_app(url=None, **Conveyor options)``.
AppFactory = Callable[..., Conveyor]


def pg_test_url() -> str:
    """The throwaway PostgreSQL server's URL; its absence fails the test rather than skip it."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.fail(f"{PG_ENV} is not set: the PostgreSQL tests need the throwaway server "
                    "(`make test` starts it; or run `scripts/pg-test-server start .pgtest` and "
                    f"export {PG_ENV} to the URL it prints)")
    return url


@contextlib.contextmanager
def app_on(store: str, folder: Path, prefix: str) -> Iterator[Conveyor]:
    """An app on a fresh SQLite file in ``folder`` (``store="sqlite"``) or a fresh schema of
    the test server (``"postgres"``); closed, and the schema dropped, at the end."""
    if store == "sqlite":
        with contextlib.closing(Conveyor(f"sqlite:///{folder / 'jobs.db'}")) as app:
            yield app
        return
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with contextlib.closing(Conveyor(pg_test_url(), schema=schema)) as app:
            yield app
    finally:
        import psycopg

        with psycopg.connect(pg_test_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite file URL (absolute path) for one test."""
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_app(db_url: str) -> Iterator[AppFactory]:
    """Build apps on the test's database; all are closed at the end."""
    apps: list[Conveyor] = []

    def factory(url: str | None = None, **options: Any) -> Conveyor:
        app = Conveyor(url or db_url, **options)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()


@pytest.fixture(params=["sqlite", "postgres"])
def any_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Conveyor]:
    """An app on a fresh SQLite file, then on a fresh PostgreSQL schema (one test each)."""
    with app_on(request.param, tmp_path, "anyapp") as app:
        yield app
