"""Waiting for a job and reading its result (issue 12, item 6), on both stores.

The waits are woken by the store's announcement of a change made by ANOTHER app object (its
own connection, so none of the waiter's events fire): the re-read safety net is pushed out to
far beyond the test's timeout, so only the wake-up can end the wait in time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import (
    AsyncConveyor,
    Conveyor,
    Job,
    JobContext,
    JobNotCompleted,
    JobState,
    WaitTimeout,
)
from conveyor import app as app_module
from conveyor.testing import drain, eager
from tests.conftest import app_on

WAIT = 30.0


@pytest.fixture
def apps(any_app: Conveyor, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Conveyor, Conveyor]]:
    """The waiter's app and a second app on the same database (another connection)."""
    monkeypatch.setattr(app_module, "WAIT_RECHECK", 1000.0)
    any_app.job("t")(_double)
    other = second_app(any_app)
    other.job("t")(_double)
    yield any_app, other
    other.close()


def second_app(app: Conveyor) -> Conveyor:
    """Another app (own store, own connection) on ``app``'s database."""
    schema = getattr(app.store, "schema", None)
    return Conveyor(app.url) if schema is None else Conveyor(app.url, schema=schema)


def _double(ctx: JobContext, n: int) -> int:
    return n * 2


def _read_then(app: Conveyor, after_first_read: threading.Event) -> None:
    """Make ``app.get`` set ``after_first_read`` once it has returned (the waiter is waiting)."""
    real_get = app.get

    def get(job_id: str) -> Job:
        job = real_get(job_id)
        after_first_read.set()
        return job

    app.get = get  # type: ignore[method-assign]


def test_wait_wakes_on_a_change_made_through_another_connection(
        apps: tuple[Conveyor, Conveyor]) -> None:
    waiter, other = apps
    job = waiter.enqueue("t", {"n": 1})
    first_read = threading.Event()
    _read_then(waiter, first_read)
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(waiter.wait(job.id, timeout=WAIT)))
    thread.start()
    assert first_read.wait(WAIT)
    other.cancel(job.id, reason="from elsewhere")
    thread.join(WAIT + 5)
    assert len(got) == 1 and getattr(got[0], "state", None) is JobState.CANCELLED


def test_async_wait_wakes_on_a_job_run_by_a_worker_elsewhere(
        apps: tuple[Conveyor, Conveyor]) -> None:
    waiter, other = apps

    async def scenario() -> None:
        async with AsyncConveyor(waiter) as client:
            job = await client.enqueue("t", {"n": 21})
            waiting = asyncio.ensure_future(client.wait(job.id, timeout=WAIT))
            await asyncio.sleep(0)  # the wait has registered and read the job once
            worker = threading.Thread(target=drain, args=(other,))
            worker.start()
            done = await waiting
            worker.join(WAIT)
            assert done.state is JobState.COMPLETED
            assert await client.result(job.id) == 42

    asyncio.run(scenario())


def test_wait_times_out_with_a_clear_error_and_leaves_the_job(any_app: Conveyor) -> None:
    any_app.job("t")(_double)
    job = any_app.enqueue("t", {"n": 1})
    with pytest.raises(WaitTimeout, match=r"still pending after 0\.2s"):
        any_app.wait(job.id, timeout=0.2)

    async def timed_out() -> None:
        async with AsyncConveyor(any_app) as client:
            with pytest.raises(WaitTimeout, match="still pending"):
                await client.wait(job.id, timeout=0.2)

    asyncio.run(timed_out())
    assert any_app.get(job.id).state is JobState.PENDING


def test_a_job_reads_another_finished_jobs_result(any_app: Conveyor) -> None:
    any_app.job("t")(_double)

    @any_app.job("sum_of")
    def sum_of(ctx: JobContext, ids: list[str]) -> int:
        return sum(any_app.result(i) for i in ids)

    with eager(any_app):
        first = any_app.enqueue("t", {"n": 2})
        second = any_app.enqueue("t", {"n": 3})
        total = any_app.enqueue("sum_of", {"ids": [first.id, second.id]})
    assert total.state is JobState.COMPLETED and total.result == 10
    pending = any_app.enqueue("t", {"n": 1})
    with pytest.raises(JobNotCompleted, match=f"Job {pending.id} has no result: it is pending"):
        any_app.result(pending.id)


def test_result_of_a_failed_job_names_its_error(tmp_path: Path) -> None:
    with app_on("sqlite", tmp_path, "unused") as app:
        @app.job("boom", max_attempts=0)  # no retry
        def boom(ctx: JobContext) -> None:
            raise ValueError("no luck")

        with eager(app):
            job = app.enqueue("boom")
        with pytest.raises(JobNotCompleted, match="it is failed, not completed: ValueError: no"):
            app.result(job.id)
