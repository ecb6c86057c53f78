"""Contract: the retry policy, run by a real worker on every store.

``retry_on`` / ``no_retry_on`` / ``FailJob`` decide whether a failure is retried or final;
``auto_retry=False`` leaves a failed job for the operator's ``retry()``; ``ctx.snooze()`` puts
a job back without spending an attempt.
"""

from __future__ import annotations

import pytest

from conveyor import ConfigurationError, Conveyor, FailJob, InvalidStateError, JobEvent
from conveyor.context import JobContext
from conveyor.lifecycle import JobState
from conveyor.retry import Backoff
from conveyor.stores.base import Store
from conveyor.worker import Worker, WorkerStats

S = JobState
NOW = Backoff(base=0.0)


def _run(app: Conveyor) -> WorkerStats:
    return Worker(app, concurrency=2, handle_signals=False, poll_interval=0.05).run(burst=True)


def test_retry_on_no_retry_on_and_fail_job_decide_what_is_retried(store: Store) -> None:
    app = Conveyor(store=store)
    runs: dict[str, int] = {}

    @app.job("net", retry_on=(ConnectionError,), no_retry_on=(ConnectionRefusedError,),
             backoff=NOW)
    def net(ctx: JobContext, kind: str) -> str:
        runs[kind] = runs.get(kind, 0) + 1
        if kind == "flaky" and runs[kind] == 1:
            raise ConnectionResetError("reset")
        if kind == "refused":
            raise ConnectionRefusedError("refused")
        if kind == "bug":
            raise ValueError("bug")
        if kind == "give-up":
            raise FailJob("bad input, do not retry")
        return kind

    jobs = {kind: app.enqueue("net", {"kind": kind})
            for kind in ("flaky", "refused", "bug", "give-up")}
    _run(app)
    flaky = app.get(jobs["flaky"].id)
    assert (flaky.state, flaky.attempt, flaky.result) == (S.COMPLETED, 1, "flaky")
    for kind, why in (("refused", "ConnectionRefusedError is in no_retry_on"),
                      ("bug", "ValueError is not in retry_on"), ("give-up", "FailJob")):
        job = app.get(jobs[kind].id)
        assert runs[kind] == 1, kind
        assert (job.state, job.attempt, job.max_attempts, job.is_terminal) == (
            S.FAILED, 0, 0, True), kind
        assert why in app.history(job.id)[-1].reason
        assert "retry" not in job.legal_actions and "requeue" in job.legal_actions
        with pytest.raises(InvalidStateError, match="attempts exhausted"):
            app.retry(job.id)
    assert app.get(jobs["give-up"].id).error.message == "bad input, do not retry"  # type: ignore[union-attr]


def test_without_auto_retry_a_failed_job_waits_for_the_operator(store: Store) -> None:
    app = Conveyor(store=store)
    runs: list[int] = []

    @app.job("manual", auto_retry=False, backoff=NOW)
    def manual(ctx: JobContext) -> str:
        runs.append(ctx.job.attempt)
        if len(runs) == 1:
            raise RuntimeError("needs a look")
        return "fixed"

    job = app.enqueue("manual")
    after = app.enqueue("manual", depends_on=[job.id])  # waits; the burst still ends
    stats = _run(app)
    failed = app.get(job.id)
    assert (stats.failed, stats.retried) == (1, 0)
    assert (failed.state, failed.attempt, failed.is_terminal) == (S.FAILED, 0, False)
    assert failed.legal_actions == ["retry"]
    assert (app.get(after.id).state, app.get(after.id).waiting_on) == (S.PENDING, 1)
    assert app.retry(job.id, actor="ops").state is S.PENDING
    _run(app)
    done = app.get(job.id)
    assert (done.state, done.attempt, done.result) == (S.COMPLETED, 1, "fixed")
    assert runs == [0, 1, 0] and app.get(after.id).state is S.COMPLETED
    assert [h.actor for h in app.history(job.id) if h.action == "retry"] == ["ops"]


def test_a_snooze_puts_the_job_back_without_spending_an_attempt(store: Store) -> None:
    app = Conveyor(store=store)
    events: list[JobEvent] = []
    app.subscribe(events.append)

    refused: list[str] = []

    @app.job("poll", max_attempts=0)
    def poll(ctx: JobContext) -> int:
        try:
            ctx.snooze(-1)
        except ConfigurationError as exc:
            refused.append(str(exc))
        seen = int(ctx.checkpoint_data.get("polls", 0))
        if seen < 2:
            ctx.checkpoint({"polls": seen + 1})
            ctx.snooze(0)
        return seen

    job = app.enqueue("poll")
    stats = _run(app)
    done = app.get(job.id)
    assert (done.state, done.attempt, done.result, stats.snoozed) == (S.COMPLETED, 0, 2, 2)
    snoozes = [h for h in app.history(job.id) if h.action == "snooze"]
    assert [(h.from_state, h.to_state, h.reason) for h in snoozes] == [
        (S.RUNNING, S.PENDING, "snoozed for 0s")] * 2
    assert [e.name for e in events].count("JobSnoozed") == 2
    assert len(refused) == 3 and "seconds" in refused[0]
