"""The async client (issue 12, item 1) on both stores: many concurrent calls from one event
loop, the same validation and events as the sync app, and no store call on the loop's thread
for SQLite."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from conveyor import (
    AsyncConveyor,
    ConfigurationError,
    Conveyor,
    DuplicateJob,
    EnqueueRequest,
    InvalidParams,
    InvalidStateError,
    Job,
    JobContext,
    JobNotFound,
    JobState,
    UnknownJobType,
)
from conveyor.stores.sqlite import SQLiteStore

N = 1000


def _greet(ctx: JobContext, name: str) -> str:
    return f"hi {name}"


def test_a_thousand_concurrent_enqueues_from_one_loop(any_app: Conveyor) -> None:
    any_app.job("greet")(_greet)
    created: list[str] = []
    any_app.subscribe(lambda e: created.append(e.job.id) if e.name == "JobCreated" else None)
    store_threads: set[int] = set()
    if isinstance(any_app.store, SQLiteStore):
        real = any_app.store.insert_jobs

        def spy(*args: Any, **kwargs: Any) -> Any:
            store_threads.add(threading.get_ident())
            return real(*args, **kwargs)

        any_app.store.insert_jobs = spy  # type: ignore[method-assign]

    async def scenario() -> list[str]:
        loop_thread = threading.get_ident()
        async with AsyncConveyor(any_app) as client:
            jobs = await asyncio.gather(*(client.enqueue("greet", {"name": str(i)})
                                          for i in range(N)))
            assert loop_thread not in store_threads  # SQLite: never on the loop's thread
            assert (await client.counts())[JobState.PENDING] == N
            return [job.id for job in jobs]

    ids = asyncio.run(scenario())
    assert len(set(ids)) == N and sorted(created) == sorted(ids)
    assert len(any_app.store.get_jobs(ids)) == N
    if isinstance(any_app.store, SQLiteStore):
        assert store_threads  # the spy saw the calls


def test_async_calls_share_the_apps_rules_and_events(any_app: Conveyor) -> None:
    any_app.job("greet")(_greet)
    events: list[str] = []
    any_app.subscribe(lambda e: events.append(e.name))

    async def scenario() -> None:
        async with AsyncConveyor(any_app) as client:
            with pytest.raises(InvalidParams) as sync_error:
                any_app.enqueue("greet", {"nom": "x"})
            with pytest.raises(InvalidParams) as async_error:
                await client.enqueue("greet", {"nom": "x"})
            assert str(async_error.value) == str(sync_error.value)
            with pytest.raises(UnknownJobType):
                await client.enqueue("nope")
            first, second = await client.enqueue_many(
                [EnqueueRequest("greet", {"name": "a"}), EnqueueRequest("greet", {"name": "b"})])
            assert (await client.cancel(first.id, reason="r")).state is JobState.CANCELLED
            with pytest.raises(InvalidStateError):
                await client.pause(first.id)
            started = await client.start(second.id, worker="me")
            assert started.state is JobState.RUNNING and started.lease_token
            assert (await client.pause(second.id)).pause_requested
            assert not (await client.resume(second.id)).pause_requested
            copy = await client.requeue(first.id)
            assert copy.requeued_from == first.id
            assert [j.id for j in await client.list(limit=2)] == [copy.id, second.id]
            assert [j.id for j in await client.list(before=second.id)] == [first.id]
            assert [h.action for h in await client.history(first.id)] == ["create", "cancel"]
            assert (await client.get(second.id)).state is JobState.RUNNING
            with pytest.raises(JobNotFound):
                await client.get("00000000-0000-4000-8000-000000000000")

    asyncio.run(scenario())
    assert events == ["JobCreated", "JobCreated", "JobCancelled", "JobStarted", "JobRequested",
                      "JobRequested", "JobCreated"]


def test_async_enqueue_links_dependencies(any_app: Conveyor) -> None:
    any_app.job("greet")(_greet)

    async def main() -> tuple[Job, list[Job]]:
        async with AsyncConveyor(any_app) as client:
            first = await client.enqueue("greet", {"name": "a"})
            then = await client.enqueue("greet", {"name": "b"}, depends_on=[first.id])
            more = await client.enqueue_many([EnqueueRequest("greet", {"name": "c"},
                                                             depends_on=[then.id])])
            return then, more

    then, more = asyncio.run(main())
    assert then.waiting_on == 1 and more[0].waiting_on == 1
    assert [j.id for j in any_app.dependencies(then.id)[1]] == [more[0].id]


def test_async_unique_keys_answer_as_the_sync_app_does(any_app: Conveyor) -> None:
    """A held key returns its holder (``existing``) or raises DuplicateJob, one by one and in a
    batch; with the caller's connection a key is refused before anything is written."""
    any_app.job("greet")(_greet)

    async def main() -> None:
        async with AsyncConveyor(any_app) as client:
            holder = await client.enqueue("greet", {"name": "a"}, unique_key="k")
            again = await client.enqueue("greet", {"name": "b"}, unique_key="k")
            assert (again.id, again.existing, holder.existing) == (holder.id, True, False)
            (batched,) = await client.enqueue_many([EnqueueRequest("greet", {"name": "c"},
                                                                   unique_key="k")])
            assert (batched.id, batched.existing) == (holder.id, True)
            with pytest.raises(DuplicateJob) as raised:
                await client.enqueue_many([EnqueueRequest("greet", {"name": "d"},
                                                          unique_key="k", on_conflict="raise")])
            assert raised.value.job.id == holder.id
            with pytest.raises(ConfigurationError, match="unique_key cannot be combined"):
                await client.enqueue_many([EnqueueRequest("greet", {"name": "e"},
                                                          unique_key="other")],
                                          connection=object())

    asyncio.run(main())
    assert any_app.count_jobs() == 1


def test_async_workflows_counts_and_bulk(any_app: Conveyor) -> None:
    """chain, group, dependencies, count_jobs and bulk, awaited; a cancel through the async
    client announces the dependents the database cancelled with it, as the sync app does."""
    any_app.job("greet")(_greet)
    cancelled: list[tuple[str, str]] = []
    any_app.subscribe(lambda e: cancelled.append((e.job.id, e.reason))
                      if e.name == "JobCancelled" else None)

    async def main() -> list[Job]:
        async with AsyncConveyor(any_app) as client:
            steps = await client.chain(EnqueueRequest("greet", {"name": "1"}),
                                       EnqueueRequest("greet", {"name": "2"}),
                                       EnqueueRequest("greet", {"name": "3"}))
            fan = await client.group([EnqueueRequest("greet", {"name": "x"}),
                                      EnqueueRequest("greet", {"name": "y"})],
                                     then=EnqueueRequest("greet", {"name": "z"}))
            upstream, downstream = await client.dependencies(steps[1].id)
            assert ([j.id for j in upstream], [j.id for j in downstream]) == (
                [steps[0].id], [steps[2].id])
            assert await client.count_jobs("pending") == 6
            assert fan[-1].waiting_on == 2
            await client.cancel(steps[0].id, reason="stop")
            dry = await client.bulk("cancel", "pending", job_type="greet", dry_run=True)
            assert (dry.matched, dry.changed) == (3, 0)  # x, y and z; nothing changed
            done = await client.bulk("cancel", "pending", job_type="greet", reason="all")
            assert done.changed + done.skipped == 3  # z may go with x's cancel first
            assert await client.count_jobs("cancelled") == 6
            return steps

    steps = asyncio.run(main())
    reasons = dict(cancelled)
    assert reasons[steps[0].id] == "stop"
    assert reasons[steps[1].id] == f"dependency {steps[0].id} was cancelled"
    assert reasons[steps[2].id] == f"dependency {steps[1].id} was cancelled"


def test_a_large_async_batch_returns_its_stored_rows_and_announces_each(
        any_app: Conveyor) -> None:
    any_app.job("greet")(_greet)
    created: list[str] = []
    any_app.subscribe(lambda e: created.append(e.job.id) if e.name == "JobCreated" else None)

    async def scenario() -> list[Job]:
        async with AsyncConveyor(any_app) as client:
            return await client.enqueue_many(
                [EnqueueRequest("greet", {"name": f"é{i}"}, priority=i % 3) for i in range(70)])

    jobs = asyncio.run(scenario())
    assert jobs == any_app.store.get_jobs([job.id for job in jobs])
    assert [job.params["name"] for job in jobs] == [f"é{i}" for i in range(70)]
    assert created == [job.id for job in jobs]
