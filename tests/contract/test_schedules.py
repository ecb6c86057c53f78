"""Contract: periodic schedules enqueue one job per tick, on every store.

Two schedulers (threads, each with its own store connection: two workers) released together
on the same ticks must enqueue each tick once between them; missed ticks run the latest once;
ticks from before a schedule was first seen never run.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from conveyor import Conveyor
from conveyor.context import JobContext
from conveyor.errors import ConfigurationError, InvalidParams, UnknownJobType
from conveyor.model import Job
from conveyor.schedules import Scheduler
from conveyor.stores.base import Store
from tests.contract.helpers import _pg_execute

SCHEDULES = 8


def _app(store: Store) -> Conveyor:
    app = Conveyor(store=store)

    @app.job("cron.report")
    def report(ctx: JobContext, kind: str = "daily") -> str:
        return kind

    return app


def _age_schedules(store: Store, seconds: float) -> None:
    """Make every recorded schedule first seen ``seconds`` earlier (as if long registered)."""
    if hasattr(store, "path"):
        conn = sqlite3.connect(store.path, isolation_level=None, timeout=30)
        try:
            conn.execute("UPDATE schedules SET first_seen = first_seen - ?", (seconds,))
        finally:
            conn.close()
    else:
        _pg_execute(store, "UPDATE schedules SET first_seen = first_seen - %(s)s "
                    "* interval '1 second'", {"s": seconds})


def test_two_schedulers_on_the_same_ticks_enqueue_each_once(
        store: Store, store_factory: Callable[[], Store]) -> None:
    apps = [_app(store), _app(store_factory())]
    for app in apps:
        for i in range(SCHEDULES):
            app.periodic("* * * * *", "cron.report", name=f"every-minute-{i}",
                         params={"kind": str(i)})
    schedulers = [Scheduler(app.engine, f"scheduler-{n}") for n, app in enumerate(apps)]
    schedulers[1].schedules.reverse()  # meet in the middle, not in lockstep
    for scheduler in schedulers:
        scheduler.register()
    _age_schedules(store, 3600)
    for scheduler in schedulers:
        scheduler.register()  # learns the aged first_seen
    barrier = threading.Barrier(2)
    got: list[list[Job]] = [[], []]

    def run(index: int) -> None:
        barrier.wait(30)
        got[index] = schedulers[index].run_once()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(got[0]) + len(got[1]) == SCHEDULES
    jobs = apps[0].list(limit=100)
    assert sorted(j.params["kind"] for j in jobs) == [str(i) for i in range(SCHEDULES)]
    listed = {s.name: s for s in apps[0].schedules()}
    assert {listed[f"every-minute-{i}"].last_job_id for i in range(SCHEDULES)} == {
        j.id for j in jobs}
    assert all(s.next_run is not None and s.next_run > store.now() for s in listed.values())
    # a second look at the same tick, by either, enqueues nothing
    assert schedulers[0].run_once() == [] and Scheduler(apps[1].engine, "late").run_once() == []
    assert len(apps[0].list(limit=100)) == SCHEDULES


def test_missed_ticks_run_the_latest_once_and_new_schedules_wait(store: Store) -> None:
    app = _app(store)
    app.periodic("*/5 * * * *", "cron.report", name="five", timezone="Europe/Paris")
    app.periodic("@yearly", "cron.report", name="yearly")
    scheduler = Scheduler(app.engine, "scheduler")
    assert scheduler.run_once() == []  # the latest ticks predate the schedules: never run
    _age_schedules(store, 6 * 3600)  # no worker ran for six hours: 72 ticks of "five" missed
    scheduler = Scheduler(app.engine, "scheduler")
    (job,) = scheduler.run_once()
    assert job.job_type == "cron.report" and job.params == {}
    (five,) = [s for s in app.schedules() if s.name == "five"]
    assert five.last_tick is not None and five.last_tick.minute % 5 == 0
    assert five.last_tick <= store.now() and five.last_job_id == job.id
    assert app.history(job.id)[0].actor == "scheduler"


def test_bad_schedules_fail_at_registration(store: Store) -> None:
    app = _app(store)
    for cron in ("* * * *", "*/5 * * * * *", "@often", "61 * * * *", 5):
        with pytest.raises(ConfigurationError):
            app.periodic(cron, "cron.report")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="timezone"):
        app.periodic("@hourly", "cron.report", timezone="Mars/Base")
    with pytest.raises(UnknownJobType):
        app.periodic("@hourly", "nope")
    with pytest.raises(InvalidParams):
        app.periodic("@hourly", "cron.report", params={"other": 1})
    app.periodic("@HOURLY", "cron.report")
    with pytest.raises(ConfigurationError, match="already registered"):
        app.periodic("@daily", "cron.report")

    @app.periodic("0 9 * * 1-5", name="weekdays")
    @app.job("cron.standup")
    def standup(ctx: JobContext) -> None:
        return None

    names = {s.name: s for s in app.schedules()}
    assert names["weekdays"].job_type == "cron.standup"
    assert names["cron.report"].cron == "@hourly"
    assert names["weekdays"].next_run is not None
    assert names["weekdays"].next_run.astimezone(UTC).hour == 9
    assert names["weekdays"].next_run > datetime.now(UTC).replace(year=2000)
