"""Retention's settings and pacing, without a store: ages, refusals, batch sizing by time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest

from conveyor import ConfigurationError, JobState, Retention
from conveyor.retention import parse_age, prune_store
from conveyor.stores.base import Store


class FakeStore:
    """Holds ``left`` prunable jobs and records each batch's limit."""

    def __init__(self, left: int) -> None:
        self.left = left
        self.limits: list[int] = []

    def prune_jobs(self, state: JobState, older_than: float, *, limit: int) -> int:
        self.limits.append(limit)
        n = min(limit, self.left)
        self.left -= n
        return n


def test_ages_units_and_refusals() -> None:
    assert Retention().ages() == {JobState.COMPLETED: 7 * 86400.0,
                                  JobState.FAILED: 30 * 86400.0,
                                  JobState.CANCELLED: 30 * 86400.0}
    assert Retention(completed=timedelta(hours=1), failed=None).ages() == {
        JobState.COMPLETED: 3600.0, JobState.CANCELLED: 30 * 86400.0}
    assert [parse_age(t) for t in ("90s", "30m", "12h", "7d", "2w", "15")] == [
        90.0, 1800.0, 43200.0, 604800.0, 1209600.0, 15.0]
    for bad in ("7x", "-1d", "", "d"):
        with pytest.raises(ConfigurationError, match="bad age"):
            parse_age(bad)
    for options in ({"completed": -1}, {"failed": "7d"}, {"batch_size": 0}, {"interval": None}):
        with pytest.raises(ConfigurationError):
            Retention(**cast(Any, options))


def test_slow_batches_shrink_and_everything_is_still_deleted() -> None:
    store = FakeStore(100)
    done = prune_store(cast(Store, store), {JobState.COMPLETED: 0.0}, batch_size=40,
                       pause=0, batch_seconds=0.0)  # every batch is "too slow"
    assert done == {JobState.COMPLETED: 100}
    assert store.limits[:4] == [40, 20, 10, 10] and store.left == 0


def test_quick_batches_keep_their_size() -> None:
    store = FakeStore(100)
    prune_store(cast(Store, store), {JobState.COMPLETED: 0.0}, batch_size=40, pause=0,
                batch_seconds=60.0)
    assert store.limits == [40, 40, 40]
