"""The store fixture: every contract test runs once per store.

PostgreSQL runs against the real server that ``make test`` starts (its URL in
``CONVEYOR_TEST_PG_URL``); each test gets a schema of its own, dropped afterwards. Without the
server the PostgreSQL half fails loudly instead of being skipped, so nothing is hidden.

SQLite runs on a :class:`~tests.conftest.FakeClock` (started at the real time, so dates look
ordinary) that :func:`tests.contract.helpers.pass_time` moves: tests about leases and pause
timeouts never sleep. PostgreSQL's clock is the server's; ``pass_time`` moves its stored times
back instead.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.stores import open_store
from conveyor.stores.base import Store
from tests.conftest import FakeClock, pg_test_url
from tests.contract.helpers import use_clock


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest,
                  tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """A callable making store instances on ONE database (several connections for races)."""
    opened: list[Store] = []
    clock = FakeClock(time.time())
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'contract.db'}"
        options: dict[str, object] = {"clock": clock}
    else:
        url = pg_test_url()
        options = {"schema": f"contract_{uuid.uuid4().hex[:12]}"}

    def make() -> Store:
        store = open_store(url, **options)
        if request.param == "sqlite":
            use_clock(store, clock)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
    if request.param == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{options["schema"]}" CASCADE')


@pytest.fixture
def store(store_factory: Callable[[], Store]) -> Store:
    made: Store = store_factory()
    made.migrate()
    return made
