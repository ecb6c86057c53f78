"""conveyor.testing for users' own tests (issue 12, item 4): eager mode, drain, the plugin."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from conveyor import AsyncConveyor, AsyncJobContext, Conveyor, JobContext, JobState
from conveyor.testing import EAGER_WORKER, eager

pytest_plugins = ["pytester"]


def test_eager_runs_each_enqueue_inline_through_the_real_lifecycle(any_app: Conveyor) -> None:
    seen: list[str] = []
    any_app.subscribe(lambda e: seen.append(f"{e.name}:{e.job.job_type}"))

    @any_app.job("add")
    def add(ctx: JobContext, a: int, b: int) -> int:
        ctx.progress(1, 1)
        ctx.checkpoint({"half": a})
        return a + b

    @any_app.job("later")
    def later(ctx: JobContext) -> None: ...

    with eager(any_app):
        job = any_app.enqueue("add", {"a": 2, "b": 3})
        scheduled = any_app.enqueue("later", delay=3600)
    assert job.state is JobState.COMPLETED and job.result == 5
    assert job.progress.last_checkpoint == {"half": 2}
    assert [(h.action, h.actor) for h in any_app.history(job.id)] == [
        ("create", "api"), ("start", EAGER_WORKER), ("complete", EAGER_WORKER)]
    assert seen[:3] == ["JobCreated:add", "JobStarted:add", "JobCompleted:add"]
    assert scheduled.state is JobState.PENDING  # not due: left for drain()
    after = any_app.enqueue("add", {"a": 1, "b": 1})  # outside the block: a worker's job
    assert after.state is JobState.PENDING


def test_eager_failure_is_recorded_and_retried_as_a_worker_would(any_app: Conveyor) -> None:
    @any_app.job("flaky", max_attempts=1)
    def flaky(ctx: JobContext) -> None:
        raise RuntimeError("try again")

    with eager(any_app):
        job = any_app.enqueue("flaky")
    assert job.state is JobState.PENDING and job.attempt == 1  # the retry, by its backoff
    assert [h.action for h in any_app.history(job.id)] == ["create", "start", "fail", "retry"]
    assert any_app.history(job.id)[2].reason == "raised RuntimeError: try again"


def test_eager_runs_async_jobs_and_async_client_enqueues(any_app: Conveyor) -> None:
    @any_app.job("aecho")
    async def aecho(ctx: AsyncJobContext, text: str) -> str:
        await ctx.checkpoint({"at": 1})
        return text.upper()

    async def scenario() -> None:
        async with AsyncConveyor(any_app) as client:
            job = await client.enqueue("aecho", {"text": "hi"})
            assert job.state is JobState.COMPLETED and job.result == "HI"

    with eager(any_app):
        assert any_app.enqueue("aecho", {"text": "x"}).result == "X"
        asyncio.run(scenario())


def test_the_pytest_plugin_gives_an_app_drain_and_eager_mode(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["conveyor.pytest_plugin"]\n')
    pytester.makepyfile(textwrap.dedent('''
        from conveyor import JobState

        def register(app):
            @app.job("hello")
            def hello(ctx, name):
                return f"hello {name}"

        def test_drain(conveyor_app, drain):
            register(conveyor_app)
            job = conveyor_app.enqueue("hello", {"name": "a"})
            assert drain().completed == 1
            assert conveyor_app.get(job.id).result == "hello a"
            assert conveyor_app.url.startswith("sqlite:///")

        def test_eager(conveyor_eager):
            register(conveyor_eager)
            job = conveyor_eager.enqueue("hello", {"name": "b"})
            assert job.state is JobState.COMPLETED and job.result == "hello b"
    '''))
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_eager_runs_a_group_then_its_final_job_and_leaves_a_blocked_job_waiting(
        any_app: Conveyor) -> None:
    from conveyor import EnqueueRequest

    @any_app.job("eager.part")
    def part(ctx: JobContext, n: int) -> int:
        return n

    @any_app.job("eager.sum")
    def total(ctx: JobContext) -> int:
        return sum(ctx.dependency_results().values())

    blocker = any_app.enqueue("eager.part", {"n": 0}, delay=3600)
    with eager(any_app):
        final = any_app.group([EnqueueRequest("eager.part", {"n": n}) for n in (1, 2)],
                              then=EnqueueRequest("eager.sum"))[-1]
        waiting = any_app.enqueue("eager.sum", depends_on=[blocker.id])
    assert (final.state, final.result) == (JobState.COMPLETED, 3)
    assert (waiting.state, waiting.waiting_on) == (JobState.PENDING, 1)
