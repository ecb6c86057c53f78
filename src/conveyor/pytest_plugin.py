"""A pytest plugin for users' own tests: fixtures over a temporary SQLite store.

Enable it in your top-level ``conftest.py`` with ``pytest_plugins = ["conveyor.pytest_plugin"]``.
It is deliberately not registered as a ``pytest11`` entry point: installing conveyor must not
add fixtures to, or change, every pytest run on the machine.

- ``conveyor_url``: a fresh SQLite file URL in the test's ``tmp_path``.
- ``conveyor_app``: a :class:`~conveyor.Conveyor` on it, closed after the test. To use your
  own app (with its job types) instead, override it in your ``conftest.py``::

      @pytest.fixture
      def conveyor_app(conveyor_url):
          app.use_store(conveyor_url)
          yield app
          app.close()

- ``drain``: ``drain()`` runs every runnable job of ``conveyor_app`` to its end.
- ``conveyor_eager``: ``conveyor_app`` in eager mode (each enqueue runs its job inline).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.app import Conveyor
from conveyor.testing import drain as drain_app
from conveyor.testing import eager
from conveyor.worker import WorkerStats


@pytest.fixture
def conveyor_url(tmp_path: Path) -> str:
    """A fresh SQLite store URL for one test."""
    return f"sqlite:///{tmp_path / 'conveyor.db'}"


@pytest.fixture
def conveyor_app(conveyor_url: str) -> Iterator[Conveyor]:
    """An app on the test's own SQLite store; override it to use your app."""
    app = Conveyor(conveyor_url)
    yield app
    app.close()


@pytest.fixture
def drain(conveyor_app: Conveyor) -> Callable[..., WorkerStats]:
    """``drain(concurrency=1)``: run the runnable jobs of ``conveyor_app`` to their end."""

    def run(*, concurrency: int = 1) -> WorkerStats:
        return drain_app(conveyor_app, concurrency=concurrency)

    return run


@pytest.fixture
def conveyor_eager(conveyor_app: Conveyor) -> Iterator[Conveyor]:
    """``conveyor_app`` in eager mode: every enqueue runs its job inline."""
    with eager(conveyor_app) as app:
        yield app
