"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.procs.harness import Procs, running


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Worker processes on one SQLite file of the test's own, all killed at its end.

    (``test_pg_partition`` has a ``procs`` of its own: workers inside network namespaces.)
    """
    with running(tmp_path) as started:
        yield started
