"""Periodic jobs: schedules, their ticks, and the scheduler step every worker may run.

A schedule enqueues one job of a registered type at each tick of a cron expression (standard
5 fields, or an alias such as ``@hourly``), read in the schedule's time zone by ``croniter``.

Exactly one job per tick, however many workers on however many hosts run the scheduler: the
store writes the tick's row (primary key: schedule + tick) and the job in one transaction,
and a second scheduler's insert of the same tick changes nothing. No leader is elected.

Missed ticks (no worker ran): only the latest one is run, once, when a scheduler next looks;
ticks from before the schedule was first seen by a worker are never run (a new ``@daily``
first runs at the next midnight, as cron would).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from conveyor import payload, validate
from conveyor.errors import ConfigurationError, ConveyorError
from conveyor.ids import new_job_id
from conveyor.model import Job, ScheduleInfo
from conveyor.stores.base import NewJob

if TYPE_CHECKING:
    from conveyor.engine import Engine

log = logging.getLogger("conveyor.scheduler")
#: The longest a scheduler sleeps between looks, so a clock change or a new tick is noticed.
MAX_NAP = 30.0
ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                     "@hourly"})


def check_cron(expression: object) -> str:
    """A standard 5-field cron expression or an alias; anything else is a ConfigurationError."""
    if not isinstance(expression, str):
        raise ConfigurationError(f"a cron expression must be a string, not {expression!r}")
    text = " ".join(expression.split())
    if text.lower() in ALIASES:
        return text.lower()
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise ConfigurationError(
            f"{expression!r} is not a cron expression: give 5 fields (minute hour day month "
            f"weekday, e.g. '*/5 * * * *') or one of {', '.join(sorted(ALIASES))}")
    return text


def check_timezone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"timezone must be an IANA name such as 'UTC', not {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown timezone {name!r} (an IANA name such as "
                                 "'Europe/Paris')") from None


@dataclass(frozen=True)
class Schedule:
    """One periodic job: ``job_type`` with ``params`` at every tick of ``cron``."""

    name: str
    cron: str
    job_type: str
    params: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    queue: str | None = None
    priority: int | None = None

    def latest_tick(self, now: datetime) -> datetime:
        """The last tick at or before ``now`` (an aware datetime; returned in UTC)."""
        zone = ZoneInfo(self.timezone)
        tick: datetime = croniter(self.cron, now.astimezone(zone)).get_prev(datetime)
        return tick.astimezone(now.tzinfo)

    def next_run(self, now: datetime) -> datetime:
        zone = ZoneInfo(self.timezone)
        tick: datetime = croniter(self.cron, now.astimezone(zone)).get_next(datetime)
        return tick.astimezone(now.tzinfo)

    def info(self) -> ScheduleInfo:
        return ScheduleInfo(self.name, self.cron, self.timezone, self.job_type, self.queue)


def make_schedule(name: str, cron: str, job_type: str, params: dict[str, Any] | None,
                  timezone: str, queue: str | None, priority: int | None) -> Schedule:
    """A schedule checked up front: a bad one fails at registration, not at its first tick."""
    validate.name("schedule name", name, config=True)
    check_timezone(timezone)
    payload.encode_object(params or {}, "params")
    return Schedule(name, check_cron(cron), job_type, dict(params or {}), timezone, queue,
                    priority)


def job_for(engine: Engine, schedule: Schedule) -> NewJob:
    """The job a tick enqueues: the schedule's params and options over its type's defaults."""
    spec = engine.job_type(schedule.job_type)
    options = spec.options
    return NewJob(
        id=new_job_id(), job_type=schedule.job_type, params=schedule.params,
        queue=schedule.queue or options.queue,
        priority=options.priority if schedule.priority is None else schedule.priority,
        max_attempts=options.max_attempts, timeout=options.timeout,
        pause_timeout=options.pause_timeout, backoff=options.backoff.to_dict(),
        limit_key=spec.limit_key(schedule.params))


class Scheduler:
    """The scheduler step of a worker: enqueue each schedule's latest due tick, once.

    The clock is the store's, so schedulers on hosts with skewed clocks agree on the ticks.
    """

    def __init__(self, engine: Engine, actor: str,
                 schedules: list[Schedule] | None = None) -> None:
        self.engine = engine
        self.schedules = list(engine.schedules.values()) if schedules is None else schedules
        self.actor = actor
        self._first_seen: dict[str, datetime] = {}
        self._done: dict[str, datetime] = {}

    def register(self) -> None:
        """Record the schedules in the store (for listing) and learn when each was first seen."""
        records = self.engine.store.save_schedules([s.info() for s in self.schedules])
        self._first_seen = {r.name: r.first_seen for r in records if r.first_seen}

    def run_once(self) -> list[Job]:
        """One look: the jobs this scheduler enqueued (a tick another took yields none)."""
        if not self._first_seen:
            self.register()
        now = self.engine.store.now()
        enqueued = []
        for schedule in self.schedules:
            tick = schedule.latest_tick(now)
            first = self._first_seen.get(schedule.name, now)
            done = self._done.get(schedule.name)
            if tick < first - timedelta(seconds=1) or (done is not None and tick <= done):
                continue
            job = self.engine.enqueue_tick(schedule.name, tick,
                                           job_for(self.engine, schedule), actor=self.actor)
            self._done[schedule.name] = tick
            if job is not None:
                enqueued.append(job)
        return enqueued

    def nap(self) -> float:
        """Seconds until the next tick of any schedule (at most :data:`MAX_NAP`)."""
        now = self.engine.store.now()
        soonest = min((s.next_run(now) - now).total_seconds() for s in self.schedules)
        return float(max(0.05, min(MAX_NAP, soonest + 0.05)))

    def run(self, stopping: threading.Event) -> None:
        """Until ``stopping`` is set: look, then sleep until the next tick."""
        while not stopping.is_set():
            wait = 5.0
            try:
                self.run_once()
                wait = self.nap()
            except ConveyorError as exc:
                log.error("scheduler: %s (retrying in %.0fs)", exc, wait)
            except Exception:
                log.exception("scheduler failed (retrying in %.0fs)", wait)
            stopping.wait(wait)


