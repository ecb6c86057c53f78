"""Retention: finished jobs, and their history, deleted once they are old enough.

What is finished: completed, cancelled, and failed for good (no retry left; a failed job that
may still be retried is kept whatever its age). Each state has its own age (:class:`Retention`;
``None`` keeps that state forever). Deleting runs in batches of a few hundred rows, each its
own short transaction, oldest first, walking an index of finished jobs only: a batch never
holds the write lock (SQLite) or its row locks (PostgreSQL) for long, so claims go on
between batches. Workers prune on their own (one batch, a pause, the next batch); the
``conveyor prune`` command and :meth:`Conveyor.prune` prune on demand.

A job is kept while a copy requeued from it still exists: the copy links back to it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from conveyor.errors import ConfigurationError
from conveyor.lifecycle import JobState
from conveyor.stores.base import Store

__all__ = ["DEFAULT_RETENTION", "FINISHED_STATES", "Retention", "parse_age", "prune_store"]

DAY = 86400.0
#: The states a job is pruned from (failed: only when it has no retry left).
FINISHED_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}

Age = float | timedelta | None


def age_seconds(what: str, value: Age) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise ConfigurationError(f"{what} must be a duration >= 0 (seconds or a timedelta) "
                                 f"or None to keep forever, not {value!r}")
    return float(seconds)


def parse_age(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"`` or plain seconds, as seconds."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        raise ConfigurationError(f"bad age {text!r}: use a number with a unit s, m, h, d or w "
                                 "(e.g. 7d, 12h, 30m)")
    return float(match[1]) * _UNITS[match[2]]


@dataclass(frozen=True)
class Retention:
    """How long finished jobs are kept, per state (seconds or a timedelta; None: forever),
    and how a worker paces its pruning.

    Defaults: completed 7 days, failed (for good) and cancelled 30 days; batches of at most
    500 jobs (fewer when 500 would hold the store more than 50 ms), one second apart, a pass
    every ten minutes once nothing is left to delete.
    """

    completed: Age = 7 * DAY
    failed: Age = 30 * DAY
    cancelled: Age = 30 * DAY
    batch_size: int = 500
    batch_pause: float = 1.0
    interval: float = 600.0

    def __post_init__(self) -> None:
        for state in FINISHED_STATES:
            age = age_seconds(f"retention for {state.value}", getattr(self, state.value))
            object.__setattr__(self, state.value, age)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or not (
                1 <= self.batch_size <= 10_000):
            raise ConfigurationError(f"batch_size must be 1..10000, not {self.batch_size!r}")
        for name in ("batch_pause", "interval"):
            if age_seconds(name, getattr(self, name)) is None:
                raise ConfigurationError(f"{name} must be a number of seconds")

    def ages(self) -> dict[JobState, float]:
        """The age past which each state's jobs are deleted (states kept forever left out)."""
        ages: dict[JobState, float] = {}
        for state in FINISHED_STATES:
            age = getattr(self, state.value)
            if age is not None:
                ages[state] = float(age)
        return ages


#: What a worker does unless told otherwise.
DEFAULT_RETENTION = Retention()


def finished_states(states: Iterable[JobState | str] | None) -> list[JobState]:
    """The states asked for, each one a job can be pruned from (ConfigurationError else)."""
    if states is None:
        return list(FINISHED_STATES)
    chosen: list[JobState] = []
    for value in states:
        try:
            state = JobState(value)
        except ValueError:
            state = None
        if state not in FINISHED_STATES:
            raise ConfigurationError(
                f"cannot prune jobs in state {getattr(value, 'value', value)!r}: only "
                f"{', '.join(s.value for s in FINISHED_STATES)} jobs are ever deleted")
        assert state is not None
        if state not in chosen:
            chosen.append(state)
    return chosen


#: How long one batch should hold the store's write lock (SQLite) at most: a batch that took
#: longer halves the next one, one that took far less doubles it, up to ``batch_size``.
BATCH_SECONDS = 0.05
MIN_BATCH = 10


def prune_store(store: Store, ages: Mapping[JobState, float], *, batch_size: int = 500,
                pause: float | None = None, stop: threading.Event | None = None,
                batch_seconds: float = BATCH_SECONDS) -> dict[JobState, int]:
    """Delete, state by state, the finished jobs older than their age, in batches.

    Between batches the caller's other work (claims above all) gets the store: each batch is
    its own transaction, sized so that it lasts about ``batch_seconds`` at most (a loaded
    disk makes a 500-job batch take a quarter of a second, and every claim waits that long),
    and ``pause`` seconds separate them; None pauses as long as the last batch took, so
    writers waiting for SQLite's lock get it (its busy handler polls, it does not queue).
    Returns how many were deleted. ``stop``, once set, ends the pruning after the batch under
    way.
    """
    stop = stop or threading.Event()
    deleted = dict.fromkeys(ages, 0)
    size = batch_size
    for state, age in ages.items():
        while not stop.is_set():
            started = time.monotonic()
            n = store.prune_jobs(state, age, limit=size)
            took = time.monotonic() - started
            deleted[state] += n
            if n < size:
                break
            if took > batch_seconds:
                size = max(min(MIN_BATCH, batch_size), size // 2)
            elif took < batch_seconds / 4:
                size = min(batch_size, size * 2)
            wait = took if pause is None else pause
            if wait > 0:
                stop.wait(wait)
    return deleted
