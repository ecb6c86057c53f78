"""Contract: paused queues and edits of waiting jobs, on every store.

A paused queue's jobs are skipped by claims (pending and resumed ones alike) while other
queues' are not, and running jobs are left alone; ``run_now`` and ``reschedule`` are
compare-and-sets on a pending job, recorded in its history, refused cleanly otherwise.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor import Conveyor, InvalidStateError
from conveyor.context import JobContext
from conveyor.errors import ConfigurationError, InvalidParams
from conveyor.lifecycle import JobState
from conveyor.stores.base import Store

TYPES = ["flow.noop"]


def _app(store: Store) -> Conveyor:
    app = Conveyor(store=store)

    @app.job("flow.noop")
    def noop(ctx: JobContext) -> None:
        return None

    return app


def _claim(store: Store, queues: list[str] | None = None) -> list[str]:
    return [j.queue for j in store.claim("w", queues=queues or [], job_types=TYPES, limit=10,
                                         lease_seconds=60)]


def test_claims_skip_a_paused_queue_until_it_is_resumed(store: Store) -> None:
    app = _app(store)
    running = app.enqueue("flow.noop", queue="mail")
    assert _claim(store) == ["mail"]
    app.enqueue("flow.noop", queue="mail")
    app.enqueue("flow.noop", queue="mail")
    app.enqueue("flow.noop", queue="other")
    paused = app.pause_queue("mail", actor="ops", reason="smtp down")
    assert (paused.name, paused.paused, paused.actor, paused.reason) == (
        "mail", True, "ops", "smtp down")
    assert paused.changed_at is not None
    assert _claim(store) == ["other"]
    assert _claim(store, ["mail"]) == []
    assert app.get(running.id).state is JobState.RUNNING  # not touched
    listed = {q.name: q for q in app.queues()}
    assert listed["mail"].paused and not listed["other"].paused
    assert listed["mail"].counts == {"pending": 2, "running": 1}
    resumed = app.resume_queue("mail", actor="ops2")
    assert (resumed.paused, resumed.actor) == (False, "ops2")
    assert _claim(store, ["mail"]) == ["mail", "mail"]


def test_a_queue_never_used_can_be_paused_and_bad_names_are_refused(store: Store) -> None:
    app = _app(store)
    app.pause_queue("later")
    assert [(q.name, q.paused, q.counts) for q in app.queues()] == [("later", True, {})]
    for bad in ("", "a\x1bb", "x" * 201):
        with pytest.raises(InvalidParams):
            app.pause_queue(bad)


def test_run_now_makes_a_delayed_job_claimable_and_is_recorded(store: Store) -> None:
    app = _app(store)
    job = app.enqueue("flow.noop", delay=3600)
    assert _claim(store) == []
    moved = app.run_now(job.id, actor="ops")
    assert moved.state is JobState.PENDING and moved.run_at <= store.now()
    assert [(h.action, h.actor, h.from_state, h.to_state) for h in app.history(job.id)][-1] == (
        "run_now", "ops", JobState.PENDING, JobState.PENDING)
    assert _claim(store) == ["default"]
    with pytest.raises(InvalidStateError, match="running, not pending"):
        app.run_now(job.id)
    assert app.history(job.id)[-1].action == "start"  # the refusal wrote nothing


def test_reschedule_changes_run_at_and_priority_of_a_pending_job_only(store: Store) -> None:
    app = _app(store)
    low = app.enqueue("flow.noop", queue="a")
    high = app.enqueue("flow.noop", queue="b")
    later = store.now() + timedelta(hours=2)
    moved = app.reschedule(low.id, run_at=later, reason="after the backup")
    assert abs((moved.run_at - later).total_seconds()) < 1e-3
    assert app.history(low.id)[-1].reason == "after the backup"
    app.reschedule(high.id, priority=9)
    assert app.get(high.id).priority == 9
    assert _claim(store) == ["b"]  # low waits until later
    app.reschedule(low.id, delay=0)
    assert _claim(store) == ["a"]
    with pytest.raises(InvalidStateError):
        app.reschedule(low.id, priority=1)
    with pytest.raises(ConfigurationError):
        app.reschedule(high.id)
    with pytest.raises(ConfigurationError):
        app.reschedule(high.id, priority=2**40)
    gone = app.enqueue("flow.noop")
    app.cancel(gone.id)
    with pytest.raises(InvalidStateError, match="cancelled, not pending"):
        app.reschedule(gone.id, delay=5)
