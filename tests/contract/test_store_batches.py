"""Contract: ``apply_many`` writes a worker's batch of completions in one transaction, each row
still its own compare-and-set, and a batched claim takes many jobs in one statement.

Runs against every store.
"""

from __future__ import annotations

import pytest

from conveyor import Conveyor, transitions
from conveyor.changes import Lease
from conveyor.engine import Engine
from conveyor.events import JobCompleted, JobEvent
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError, JobProgress
from conveyor.stores.base import Landed, Store
from tests.contract.helpers import in_state, insert, lease_of, running

S = JobState


def test_a_batch_lands_every_row_whose_lease_holds_and_nothing_for_the_others(
        store: Store) -> None:
    held = [running(store) for _ in range(3)]
    stale = running(store)
    stale_lease = Lease(stale.id, "not-the-token", stale.attempt)
    paused = in_state(store, S.PAUSED)  # not running any more: its lease is gone
    changes = [transitions.complete(lease_of(held[0]), {"n": 0}, "w"),
               transitions.complete(stale_lease, {"stale": True}, "zombie"),
               transitions.complete(lease_of(held[1]), {"n": 1}, "w",
                                    progress=JobProgress(7, 9)),
               transitions.complete(Lease(paused.id, "gone", paused.attempt), None, "w"),
               transitions.complete(lease_of(held[2]), {"n": 2}, "w")]
    rows = store.apply_many(changes)
    assert [row is not None for row in rows] == [True, False, True, False, True]
    for n, job in enumerate(held):
        now = store.get_job(job.id)
        assert (now.state, now.result, now.lease_token) == (S.COMPLETED, {"n": n}, None)
        assert [(h.action, h.from_state, h.to_state) for h in store.history(job.id)][-1] == (
            "complete", S.RUNNING, S.COMPLETED)
    assert store.get_job(held[1].id).progress.current_step == 7  # the run's last steps
    assert store.get_job(held[1].id).progress.total_steps == 9
    untouched = store.get_job(stale.id)
    assert (untouched.state, untouched.result) == (S.RUNNING, None)
    assert [h.action for h in store.history(stale.id)] == ["create", "start"]
    assert store.get_job(paused.id).state is S.PAUSED
    returned = rows[2]
    assert returned is not None and returned.id == held[1].id
    assert returned.state is S.COMPLETED


def test_a_batch_names_each_job_once(store: Store) -> None:
    job = running(store)
    change = transitions.complete(lease_of(job), None, "w")
    with pytest.raises(ValueError, match="one change per job"):
        store.apply_many([change, change])
    assert store.get_job(job.id).state is S.RUNNING
    assert store.apply_many([]) == []


def test_the_engine_announces_only_the_rows_that_landed(store: Store) -> None:
    engine = Engine(store.url, store=store)
    seen: list[JobEvent] = []
    engine.events.subscribe(seen.append)
    good, stale = running(store), running(store)
    engine.apply_many([transitions.complete(lease_of(good), 1, "w"),
                       transitions.complete(Lease(stale.id, "x", stale.attempt), 2, "w")])
    assert [(type(e), e.job.id, e.job.state, e.from_state) for e in seen] == [
        (JobCompleted, good.id, S.COMPLETED, S.RUNNING)]


def test_one_claim_takes_many_jobs_in_order_each_under_its_own_lease(store: Store) -> None:
    ids = [insert(store, "batch", priority=p).id for p in (0, 5, 0, 5, 0)]
    taken = store.claim("w", queues=[], job_types=["batch"], limit=4, lease_seconds=30)
    assert [j.id for j in taken] == [ids[1], ids[3], ids[0], ids[2]]  # priority, then line
    tokens = {j.lease_token for j in taken}
    assert len(tokens) == 4 and all(t and len(t) == 32 for t in tokens)
    assert all(j.state is S.RUNNING and j.worker_id == "w" for j in taken)
    for job in taken:
        assert [h.action for h in store.history(job.id)] == ["create", "start"]
    assert store.get_job(ids[4]).state is S.PENDING


def test_a_batch_of_mixed_shapes_lands_each_change_and_fences_each_row(store: Store) -> None:
    """Same-shaped completions are one statement on both stores; a fail and a completion with
    steps beside them take their own path; a stale lease among them writes nothing."""
    held = [running(store) for _ in range(4)]
    failing = running(store)
    changes = [transitions.complete(lease_of(held[0]), {"n": 0}, "w"),
               transitions.fail(lease_of(failing), failing.id, JobError("E", "boom"),
                                "raised", "w"),
               transitions.complete(Lease(held[1].id, "stale", held[1].attempt), {"n": 1}, "w"),
               transitions.complete(lease_of(held[2]), {"n": 2}, "w",
                                    progress=JobProgress(2, 2)),
               transitions.complete(lease_of(held[3]), {"n": 3}, "w")]
    rows = store.apply_many(changes)
    assert [None if row is None else (row.id, row.state) for row in rows] == [
        (held[0].id, S.COMPLETED), (failing.id, S.FAILED), None,
        (held[2].id, S.COMPLETED), (held[3].id, S.COMPLETED)]
    assert [store.get_job(j.id).result for j in held] == [{"n": 0}, None, {"n": 2}, {"n": 3}]
    assert store.get_job(held[1].id).lease_token == held[1].lease_token  # still running
    for job, action in ((held[0], "complete"), (failing, "fail"), (held[1], "start"),
                        (held[3], "complete")):
        assert [h.action for h in store.history(job.id)][-1] == action


def test_a_batch_without_rows_gives_landed_except_for_jobs_with_dependents(store: Store) -> None:
    """``landed_rows=False`` writes what the plain path writes; a landed change gives LANDED
    instead of its row, but a job with dependents still gives its row (its end may have moved
    them), and a refused one still gives None."""
    app = Conveyor(store=store)
    app.job("t")(lambda ctx: None)
    plain, upstream = app.enqueue("t"), app.enqueue("t")
    dependent = app.enqueue("t", depends_on=[upstream.id])
    lost = app.enqueue("t")
    claimed = {job.id: job for job in store.claim("w", queues=[], job_types=["t"], limit=3,
                                                 lease_seconds=30)}
    assert set(claimed) == {plain.id, upstream.id, lost.id}
    changes = [transitions.complete(lease_of(claimed[plain.id]), {"n": 1}, "w"),
               transitions.complete(Lease(lost.id, "not-the-token", 0), None, "zombie"),
               transitions.complete(lease_of(claimed[upstream.id]), {"n": 2}, "w")]
    done, next_ones = store.finish_and_claim(changes, "w", queues=[], job_types=["t"],
                                             limit=5, lease_seconds=30, landed_rows=False)
    assert done[0] is Landed.LANDED and done[1] is None
    assert isinstance(done[2], Job) and done[2] == store.get_job(upstream.id)
    assert done[2].has_dependents and done[2].state is S.COMPLETED
    assert [job.id for job in next_ones] == [dependent.id], "the dependent was released"
    written = store.get_job(plain.id)
    assert (written.state, written.result, written.lease_token) == (S.COMPLETED, {"n": 1}, None)
    assert [h.action for h in store.history(plain.id)] == ["create", "start", "complete"]
    assert store.get_job(lost.id).state is S.RUNNING


def test_a_batch_without_rows_mixes_lone_and_multi_source_changes(store: Store) -> None:
    """``landed_rows=False`` beside a change allowed from several states (read first, its own
    statement) and a lone completion of a job with dependents (one statement of its shape):
    each lands, each leaves its own history row, and the dependent's upstream comes back
    whole, as the plain path gives it."""
    app = Conveyor(store=store)
    app.job("t")(lambda ctx: None)
    upstream, other = app.enqueue("t"), app.enqueue("t")
    app.enqueue("t", depends_on=[upstream.id])
    claimed = {job.id: job for job in store.claim("w", queues=[], job_types=["t"], limit=2,
                                                 lease_seconds=30)}
    ask = transitions.request(other.id, "pause_requested", True,
                              frozenset({S.PENDING, S.RUNNING}), "op", "asked")
    done_up = transitions.complete(lease_of(claimed[upstream.id]), {"up": 1}, "w")
    done, _ = store.finish_and_claim([ask, done_up], "w", queues=[], job_types=[], limit=0,
                                     lease_seconds=30, landed_rows=False)
    assert done[0] is Landed.LANDED
    assert isinstance(done[1], Job) and done[1] == store.get_job(upstream.id)
    assert (done[1].state, done[1].result) == (S.COMPLETED, {"up": 1})
    assert [h.action for h in store.history(other.id)] == ["create", "start", "request_pause"]
    assert [(h.action, h.from_state) for h in store.history(upstream.id)][-1] == (
        "complete", S.RUNNING)
    assert store.get_job(other.id).pause_requested


@pytest.mark.parametrize("subscribed", [False, True])
def test_a_worker_batch_reads_rows_only_for_subscribers_and_dependents(
        store: Store, subscribed: bool) -> None:
    """Through the engine: with or without a subscriber, a dependency's end releases its
    dependent and wakes workers; completions are counted as landed either way."""
    app = Conveyor(store=store)
    app.job("t")(lambda ctx: None)
    events: list[JobEvent] = []
    if subscribed:
        app.subscribe(events.append)
    upstream, alone = app.enqueue("t"), app.enqueue("t")
    dependent = app.enqueue("t", depends_on=[upstream.id])
    engine: Engine = app.engine
    _, first = engine.finish_and_claim([], "w", queues=[], job_types=["t"], limit=2,
                                       lease_seconds=30)
    done, then = engine.finish_and_claim(
        [transitions.complete(lease_of(job), None, "w") for job in first], "w", queues=[],
        job_types=["t"], limit=2, lease_seconds=30)
    assert [job.id for job in then] == [dependent.id]
    assert all(row is not None for row in done)
    by_id = {job.id: row for job, row in zip(first, done, strict=True)}
    assert isinstance(by_id[upstream.id], Job)
    assert (by_id[alone.id] is Landed.LANDED) is not subscribed
    completed = [e.job.id for e in events if isinstance(e, JobCompleted)]
    assert sorted(completed) == (sorted([upstream.id, alone.id]) if subscribed else [])


def test_a_lone_change_and_the_next_claim_write_their_history_in_one_transaction(
        store: Store) -> None:
    """A worker's usual transaction: one completion (its shape alone in the batch) and the
    claim of the next job. Each lands with its own history row; a lone stale completion lands
    nothing and writes none, and the claim still takes its job."""
    done = running(store, job_type="lone")
    stale = running(store, job_type="lone")
    queued = [insert(store, "lone-next") for _ in range(2)]
    finished, claimed = store.finish_and_claim(
        [transitions.complete(lease_of(done), {"ok": 1}, "w")], "w", queues=[],
        job_types=["lone-next"], limit=1, lease_seconds=30)
    assert [(j.id, j.state) for j in finished if isinstance(j, Job)] == [(done.id, S.COMPLETED)]
    assert [j.id for j in claimed] == [queued[0].id]
    assert [(h.action, h.from_state, h.to_state, h.attempt, h.actor)
            for h in store.history(done.id)][-1] == (
        "complete", S.RUNNING, S.COMPLETED, 0, "w")
    assert [(h.action, h.from_state, h.to_state, h.actor)
            for h in store.history(queued[0].id)] == [
        ("create", None, S.PENDING, "test"), ("start", S.PENDING, S.RUNNING, "w")]
    finished, claimed = store.finish_and_claim(
        [transitions.complete(Lease(stale.id, "stale", stale.attempt), None, "w")], "w",
        queues=[], job_types=["lone-next"], limit=1, lease_seconds=30)
    assert finished == [None] and [j.id for j in claimed] == [queued[1].id]
    assert [h.action for h in store.history(stale.id)] == ["create", "start"]
    assert store.get_job(stale.id).state is S.RUNNING


def test_a_batch_and_a_many_job_claim_write_each_jobs_own_history_row(store: Store) -> None:
    """Each history row of one transaction (a batch of completions, a claim of several jobs)
    carries its own job's attempt and states, and the claimed jobs come back in claim order."""
    kind = "own-history"
    retried = [running(store, job_type=kind) for _ in range(3)]
    for job in retried:  # attempt 1 each: a row's attempt is read from that row
        store.apply([transitions.fail(lease_of(job), job.id, JobError("E", "x"), "raised",
                                      "w"),
                     transitions.retry(job.id, "w", "again")])
    first = store.claim("w", queues=[], job_types=[kind], limit=2, lease_seconds=30)
    (last,) = [j for j in retried if j.id not in {f.id for f in first}]
    finished, second = store.finish_and_claim(
        [transitions.complete(lease_of(j), {"n": n}, "w") for n, j in enumerate(first)]
        + [transitions.complete(Lease(last.id, "stale", 1), None, "w")],
        "w", queues=[], job_types=[kind], limit=3, lease_seconds=30)
    assert [j is not None for j in finished] == [True, True, False]
    assert [(j.id, j.attempt) for j in second] == [(last.id, 1)]
    for job in retried:
        ends = [(h.action, h.from_state, h.to_state, h.attempt)
                for h in store.history(job.id)][-2:]
        assert ends == ([("retry", S.FAILED, S.PENDING, 1), ("start", S.PENDING, S.RUNNING, 1)]
                        if job is last else
                        [("start", S.PENDING, S.RUNNING, 1),
                         ("complete", S.RUNNING, S.COMPLETED, 1)])


def test_a_lone_change_without_rows_lands_fenced_and_reads_a_job_with_dependents(
        store: Store) -> None:
    """A one-slot worker's transaction (one completion, ``landed_rows=False``, the next
    claim): LANDED for a plain job, the row for one with dependents, None and no history for
    a stale lease, and the claim takes its job each time."""
    app = Conveyor(store=store)
    app.job("lone-t")(lambda ctx: None)
    upstream = app.enqueue("lone-t")
    dependent = app.enqueue("lone-t", depends_on=[upstream.id])
    plain, stale, last = (app.enqueue("lone-t") for _ in range(3))
    (first,) = store.claim("w", queues=[], job_types=["lone-t"], limit=1, lease_seconds=30)
    assert first.id == upstream.id
    done, claimed = store.finish_and_claim(
        [transitions.complete(lease_of(first), {"up": 1}, "w")], "w", queues=[],
        job_types=["lone-t"], limit=1, lease_seconds=30, landed_rows=False)
    assert isinstance(done[0], Job) and done[0] == store.get_job(upstream.id)
    assert done[0].state is S.COMPLETED and done[0].result == {"up": 1}
    assert [j.id for j in claimed] == [dependent.id]
    done, claimed = store.finish_and_claim(
        [transitions.complete(lease_of(claimed[0]), None, "w")], "w", queues=[],
        job_types=["lone-t"], limit=1, lease_seconds=30, landed_rows=False)
    assert done == [Landed.LANDED] and [j.id for j in claimed] == [plain.id]
    assert [(h.action, h.from_state, h.to_state, h.actor)
            for h in store.history(dependent.id)][-1] == (
        "complete", S.RUNNING, S.COMPLETED, "w")
    store.claim("w", queues=[], job_types=["lone-t"], limit=1, lease_seconds=30)  # stale's
    done, claimed = store.finish_and_claim(
        [transitions.complete(Lease(stale.id, "not-the-token", 0), {"no": 1}, "zombie")], "w",
        queues=[], job_types=["lone-t"], limit=1, lease_seconds=30, landed_rows=False)
    assert done == [None] and [j.id for j in claimed] == [last.id]
    assert [h.action for h in store.history(stale.id)] == ["create", "start"]
    kept = store.get_job(stale.id)
    assert (kept.state, kept.result) == (S.RUNNING, None)
