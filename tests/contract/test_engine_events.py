"""Contract: the engine emits one event per change, carrying the row that change left, on every
store; the worker and the reaper take the engine (or an app, for its engine)."""

from __future__ import annotations

import threading

import pytest

from conveyor import Conveyor, JobContext, JobEvent, transitions
from conveyor.changes import ChangeRefused
from conveyor.engine import Engine
from conveyor.lifecycle import JobState
from conveyor.model import JobError, JobProgress
from conveyor.stores.base import Store
from conveyor.worker import Worker, reap
from tests.contract.helpers import claim_one, in_state, insert, lease_of, new

S = JobState
ERROR = JobError("ValueError", "boom")


@pytest.fixture
def app(store: Store) -> Conveyor:
    made = Conveyor(store=store, rand=lambda: 0.0)

    @made.job("t")
    def t(ctx: JobContext) -> str:
        ctx.progress(1, 1)
        return "done"

    return made


def test_a_failure_and_its_retry_each_carry_their_own_row(store: Store, app: Conveyor) -> None:
    events: list[JobEvent] = []
    app.subscribe(events.append)
    insert(store, "t")
    job = claim_one(store, ["t"])
    app.apply([transitions.fail(lease_of(job), job.id, ERROR, "raised", "w"),
               transitions.retry(job.id, "w", "automatic retry", delay=3600)])
    failed, retried = events
    assert (failed.name, failed.from_state, failed.reason) == ("JobFailed", S.RUNNING, "raised")
    assert (retried.name, retried.from_state) == ("JobRetried", S.FAILED)
    # the failed row, not the retried one made to look failed
    assert (failed.job.state, failed.job.attempt, failed.job.error) == (S.FAILED, 0, ERROR)
    assert failed.job.run_at == job.run_at, "the retry's delay is not the failed row's"
    assert failed.job.finished_at is not None and failed.job.lease_token is None
    assert (retried.job.state, retried.job.attempt, retried.job.error) == (S.PENDING, 1, None)
    assert retried.job.finished_at is None
    assert (retried.job.run_at - store.now()).total_seconds() > 3000
    assert retried.job == store.get_job(job.id)


def test_a_request_then_a_move_carry_their_own_rows(store: Store, app: Conveyor) -> None:
    events: list[JobEvent] = []
    insert(store, "t")
    job = claim_one(store, ["t"])
    app.subscribe(events.append)
    app.apply([transitions.request(job.id, "cancel_requested", True, frozenset({S.RUNNING}),
                                   "op", "stop"),
               transitions.cancel_running(lease_of(job), job.id, JobProgress(2, 4), "w",
                                          "cancelled at checkpoint")])
    asked, cancelled = events
    assert (asked.name, asked.reason, asked.job.state) == ("JobRequested", "stop", S.RUNNING)
    assert asked.job.cancel_requested and asked.job.progress.current_step == 0
    assert (cancelled.name, cancelled.from_state) == ("JobCancelled", S.RUNNING)
    assert cancelled.job.state is S.CANCELLED and cancelled.job.progress.current_step == 2


def test_a_refused_change_emits_nothing(store: Store, app: Conveyor) -> None:
    events: list[JobEvent] = []
    job = in_state(store, S.COMPLETED, job_type="t")
    app.subscribe(events.append)
    with pytest.raises(ChangeRefused):
        app.apply([transitions.retry(job.id, "op", "")])
    assert events == []


def test_a_worker_and_the_reaper_run_on_the_engine_alone(store: Store, app: Conveyor) -> None:
    engine: Engine = app.engine
    events: list[JobEvent] = []
    engine.events.subscribe(events.append)
    (job,) = engine.insert([new("t")], actor="test")
    stats = Worker(engine, concurrency=2, handle_signals=False, poll_interval=0.05).run(
        burst=True)
    assert stats.completed == 1 and stats.claimed == 1
    assert store.get_job(job.id).result == "done"
    names = [e.name for e in events if e.job.id == job.id]
    assert names[:2] == ["JobCreated", "JobStarted"] and names[-1] == "JobCompleted"
    assert reap(engine).lost == 0 and reap(app).lost == 0
    assert Worker(app).engine is engine, "an app is taken for its engine"



def test_a_claim_does_not_announce_a_start_before_the_retry_that_allowed_it(
        store: Store, app: Conveyor) -> None:
    """The retry commits, another thread claims the job at once, and only then does the retry's
    own thread emit its events: subscribers still see failed, retried, started, in that order."""
    insert(store, "t")
    job = claim_one(store, ["t"])
    names: list[str] = []
    claimer: list[threading.Thread] = []

    def claim() -> None:
        app.engine.claim("w2", queues=(), job_types=["t"], limit=1, lease_seconds=30)

    def on_event(event: JobEvent) -> None:
        names.append(event.name)
        if event.name == "JobFailed":  # committed, not all announced: race a claim in here
            claimer.append(threading.Thread(target=claim))
            claimer[0].start()
            claimer[0].join(1.0)  # without the ordering, the claim announces its start now

    app.subscribe(on_event)
    app.apply([transitions.fail(lease_of(job), job.id, ERROR, "raised", "w"),
               transitions.retry(job.id, "w", "automatic retry")])
    claimer[0].join(10)
    assert names == ["JobFailed", "JobRetried", "JobStarted"]


def test_a_worker_path_without_subscribers_builds_no_events_and_one_added_later_sees_the_next(
        store: Store, app: Conveyor, monkeypatch: pytest.MonkeyPatch) -> None:
    engine: Engine = app.engine
    emitted: list[JobEvent] = []
    emit = engine.events.emit

    def counted(event: JobEvent) -> None:
        emitted.append(event)
        emit(event)

    monkeypatch.setattr(engine.events, "emit", counted)
    insert(store, "t")
    insert(store, "t")
    _, (first,) = engine.finish_and_claim([], "w", queues=(), job_types=["t"], limit=1,
                                          lease_seconds=30)
    done, (second,) = engine.finish_and_claim(
        [transitions.complete(lease_of(first), "done", "w")], "w", queues=(), job_types=["t"],
        limit=1, lease_seconds=30)
    assert done[0] is not None and emitted == []
    events: list[JobEvent] = []
    app.subscribe(events.append)
    done, _ = engine.finish_and_claim([transitions.complete(lease_of(second), "done", "w")],
                                      "w", queues=(), job_types=["t"], limit=1, lease_seconds=30)
    assert [(e.name, e.job.id) for e in events] == [("JobCompleted", second.id)]
    assert events[0].job == store.get_job(second.id)


def test_only_a_change_a_claim_could_follow_holds_back_claim_announcements(
        store: Store, app: Conveyor) -> None:
    """A completion leaves its job where no claim can take it, so its announcement holds no
    claim back (no lock, no mark); a retry makes its job claimable, so it does until its
    events are out."""
    engine: Engine = app.engine
    seen: dict[str, bool] = {}

    def on_event(event: JobEvent) -> None:
        seen[event.name] = event.job.id in engine._unannounced

    app.subscribe(on_event)
    insert(store, "t")
    insert(store, "t")
    first, second = store.claim("w", queues=[], job_types=["t"], limit=2, lease_seconds=30)
    app.apply([transitions.complete(lease_of(first), "done", "w")])
    app.apply([transitions.fail(lease_of(second), second.id, ERROR, "raised", "w"),
               transitions.retry(second.id, "w", "automatic retry", delay=3600)])
    assert seen == {"JobCompleted": False, "JobFailed": True, "JobRetried": True}
    assert engine._unannounced == {}
