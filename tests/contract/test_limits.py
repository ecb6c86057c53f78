"""Contract: concurrency and rate limits at claim time, on every store.

A claim takes no more of a limited job type, queue or key value than its limit leaves room
for; held jobs stay pending and say why; a finished (or paused) job frees its room; a rate
window lets the next claim in only once it has passed. Bad limits are refused in the core
before anything is written. (The race between worker processes is in
tests/integration/test_limits_procs.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import Conveyor, transitions
from conveyor.context import JobContext
from conveyor.errors import ConfigurationError, InvalidParams
from conveyor.lifecycle import JobState
from conveyor.model import JobProgress
from conveyor.stores.base import Store
from conveyor.stores.sqlite import SQLiteStore
from tests.contract.helpers import _pg_execute, apply_one, lease_of, pass_time

TYPES = ["lim.two", "lim.tenant", "lim.rate", "lim.free"]


def _app(store: Store) -> Conveyor:
    app = Conveyor(store=store)

    @app.job("lim.two", max_running=2)
    def two(ctx: JobContext, n: int = 0) -> None:
        return None

    @app.job("lim.tenant", max_running=1, limit_key="tenant:{tenant_id}")
    def tenant(ctx: JobContext, tenant_id: int, n: int = 0) -> None:
        return None

    @app.job("lim.rate", rate_limit="2/s")
    def rate(ctx: JobContext, n: int = 0) -> None:
        return None

    @app.job("lim.free")
    def free(ctx: JobContext) -> None:
        return None

    # what a worker records as it starts (Worker.run)
    store.save_type_limits(sorted(app.job_types), [
        spec.limits.rule(name, "worker:test") for name, spec in app.job_types.items()
        if spec.limits is not None])
    return app


def _claim(store: Store, types: list[str] | None = None, queues: list[str] | None = None,
           limit: int = 10) -> list[Any]:
    return store.claim("w", queues=queues or [], job_types=types or TYPES, limit=limit,
                       lease_seconds=60)


def _complete(store: Store, job: Any) -> None:
    apply_one(store, transitions.complete(lease_of(job), None, "t"))


def test_a_type_limit_holds_the_rest_pending_until_a_running_job_finishes(store: Store) -> None:
    app = _app(store)
    jobs = [app.enqueue("lim.two", {"n": n}) for n in range(4)]
    free = app.enqueue("lim.free")
    claimed = _claim(store)
    assert sorted(j.id for j in claimed) == sorted([jobs[0].id, jobs[1].id, free.id])
    assert _claim(store) == []
    held = app.get(jobs[2].id)
    assert held.state is JobState.PENDING
    assert app.held_reason(held) == "held: 2/2 running for type:lim.two"
    assert app.held_reason(app.get(jobs[0].id)) is None  # running: not held
    _complete(store, claimed[0])
    assert [j.id for j in _claim(store)] == [jobs[2].id]  # room for one, in order
    assert _claim(store) == []


def test_a_paused_job_frees_its_room_and_its_resume_waits_for_room(store: Store) -> None:
    app = _app(store)
    jobs = [app.enqueue("lim.two", {"n": n}) for n in range(3)]
    first, second = _claim(store, ["lim.two"])
    apply_one(store, transitions.pause_at_checkpoint(lease_of(first), JobProgress(1, 2), "t"))
    (third,) = _claim(store, ["lim.two"])
    assert third.id == jobs[2].id
    app.resume(first.id)
    assert _claim(store, ["lim.two"]) == []  # 2/2 running: the resume waits
    assert app.held_reason(app.get(first.id)) == "held: 2/2 running for type:lim.two"
    _complete(store, second)
    assert [j.id for j in _claim(store, ["lim.two"])] == [first.id]


def test_a_key_limit_applies_to_each_tenant_apart(store: Store) -> None:
    app = _app(store)
    a = [app.enqueue("lim.tenant", {"tenant_id": 7, "n": n}) for n in range(3)]
    b = [app.enqueue("lim.tenant", {"tenant_id": 8, "n": n}) for n in range(2)]
    assert a[0].limit_key == "tenant:7"
    claimed = _claim(store)
    assert sorted(j.id for j in claimed) == sorted([a[0].id, b[0].id])  # one per tenant
    assert _claim(store) == []
    assert app.held_reason(app.get(a[1].id)) == "held: 1/1 running for tenant:7"
    _complete(store, next(j for j in claimed if j.id == b[0].id))
    assert [j.id for j in _claim(store)] == [b[1].id]  # tenant 7 is still full


def test_a_queue_limit_is_set_shown_and_removed_by_an_operator(store: Store) -> None:
    app = _app(store)
    for _ in range(3):
        app.enqueue("lim.free", queue="mail")
    other = app.enqueue("lim.free", queue="other")
    info = app.set_queue_limit("mail", max_running=1, actor="ops", reason="smtp quota")
    assert (info.max_running, info.rate_limit, info.limit_actor, info.limit_reason) == (
        1, None, "ops", "smtp quota")
    assert info.counts == {"pending": 3}
    assert sorted(j.queue for j in _claim(store)) == ["mail", "other"]
    assert _claim(store, queues=["mail"]) == []
    waiting = app.list(state="pending", queue="mail")[0]
    assert app.held_reason(waiting) == "held: 1/1 running for queue:mail"
    assert app.get(other.id).state is JobState.RUNNING
    assert not app.set_queue_limit("mail").max_running  # neither: removed
    assert [q.max_running for q in app.queues() if q.name == "mail"] == [None]
    assert len(_claim(store, queues=["mail"])) == 2


def _pass_window(store: Store, seconds: float) -> None:
    if isinstance(store, SQLiteStore):
        pass_time(store, seconds)
    else:  # the server's clock: the recorded claims are moved back instead
        _pg_execute(store, "UPDATE rate_claims SET at = at - %(s)s * interval '1 second'",
                    {"s": seconds})


def test_a_rate_limit_lets_claims_in_only_as_its_window_passes(store: Store) -> None:
    app = _app(store)
    jobs = [app.enqueue("lim.rate", {"n": n}) for n in range(5)]
    assert [j.id for j in _claim(store)] == [jobs[0].id, jobs[1].id]
    assert _claim(store) == []
    held = app.get(jobs[2].id)
    assert held.state is JobState.PENDING and held.attempt == 0  # held, not failed
    assert app.held_reason(held) == "held: rate limit type:lim.rate 2/s"
    _pass_window(store, 0.5)
    assert _claim(store) == []  # half a window: both claims still in it
    _pass_window(store, 0.6)
    assert [j.id for j in _claim(store)] == [jobs[2].id, jobs[3].id]
    assert app.held_reason(app.get(jobs[4].id)) == "held: rate limit type:lim.rate 2/s"


def test_bad_limits_are_refused_before_anything_is_written(store: Store) -> None:
    app = _app(store)
    for bad in ({"max_running": 0}, {"max_running": True}, {"rate_limit": "100/d"},
                {"rate_limit": "0/s"}, {"rate_limit": "fast"}, {"limit_key": "t:{x}"},
                {"max_running": 1, "limit_key": "t:{missing}"},
                {"max_running": 1, "limit_key": "t:{n!r}"},
                {"max_running": 1, "limit_key": "plain"}):
        with pytest.raises(ConfigurationError):
            app.job("lim.bad", **bad)(lambda ctx, n=0: None)
    assert "lim.bad" not in app.job_types
    with pytest.raises(InvalidParams, match="tenant_id"):
        app.enqueue("lim.tenant", {"tenant_id": None})
    with pytest.raises(InvalidParams, match="tenant_id"):
        app.enqueue("lim.tenant", {"tenant_id": [1]})
    for bad_queue in ({"max_running": -1}, {"rate_limit": "5/x"}):
        with pytest.raises(ConfigurationError):
            app.set_queue_limit("mail", **bad_queue)
    with pytest.raises(InvalidParams):
        app.set_queue_limit("a\x1bb", max_running=1)
    assert app.list() == []
    assert [r.scope for r in app.limits()] == ["type", "type", "type"]
