"""Contract: every stored transition is a compare-and-set built from the lifecycle table.

Runs against every store. For each named transition and each state a job can be in, the move
succeeds exactly when the lifecycle table allows it; a refused move writes nothing (no state
change, no history row).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conveyor import transitions
from conveyor.changes import Change, ChangeRefused, Lease
from conveyor.errors import JobNotFound
from conveyor.lifecycle import TRANSITIONS, JobState
from conveyor.model import Job, JobError, JobProgress
from conveyor.stores.base import Store
from tests.contract.helpers import claim_one, in_state, insert, lease_of, pass_time, running

S = JobState
ERROR = JobError("ValueError", "boom", "Traceback ...")

# Each named move, as a function of a job (leased ones use the job's own lease if it has one).
MOVES: dict[str, tuple[JobState, Callable[[Job], Change]]] = {
    "complete": (S.COMPLETED, lambda j: transitions.complete(_lease(j), {"r": 1}, "w")),
    "fail": (S.FAILED, lambda j: transitions.fail(_lease(j), j.id, ERROR, "raised", "w")),
    "pause": (S.PAUSED, lambda j: transitions.pause_at_checkpoint(_lease(j), None, "w")),
    "retry": (S.PENDING, lambda j: transitions.retry(j.id, "op", "manual")),
    "cancel_pending": (S.CANCELLED, lambda j: transitions.cancel_idle(j.id, S.PENDING, "op", "")),
    "cancel_paused": (S.CANCELLED, lambda j: transitions.cancel_idle(j.id, S.PAUSED, "op", "")),
}


def _lease(job: Job) -> Lease:
    return Lease(job.id, job.lease_token or "no-lease", job.attempt)


def _history_len(store: Store, job: Job) -> int:
    return len(store.history(job.id))


@pytest.mark.parametrize("state", list(JobState))
@pytest.mark.parametrize("move", sorted(MOVES))
def test_each_move_succeeds_exactly_where_the_table_allows(store: Store, state: JobState,
                                                           move: str) -> None:
    target, build = MOVES[move]
    job = in_state(store, state)
    change = build(job)
    allowed = state in change.when and target in TRANSITIONS[state]
    before = _history_len(store, job)
    if allowed:
        (after,) = store.apply([change])
        assert after.state is target
        history = store.history(job.id)
        assert len(history) == before + 1
        assert (history[-1].from_state, history[-1].to_state) == (state, target)
    else:
        with pytest.raises(ChangeRefused) as refused:
            store.apply([change])
        assert refused.value.job.state is state
        assert store.get_job(job.id) == job
        assert _history_len(store, job) == before


def test_side_effects_of_a_full_life(store: Store) -> None:
    job = insert(store, max_attempts=2)
    assert job.started_at is None
    job = claim_one(store, [job.job_type])
    started = job.started_at
    assert started is not None and job.state is S.RUNNING and job.worker_id == "worker-a"
    assert job.lease_expires_at is not None and job.lease_expires_at > store.now()
    (job,) = store.apply([transitions.pause_at_checkpoint(lease_of(job),
                                                          JobProgress(2, 5, {"i": 2}), "w")])
    assert job.state is S.PAUSED and job.paused_at is not None and job.lease_token is None
    assert job.progress == JobProgress(2, 5, {"i": 2})
    (job,) = store.apply([transitions.request(job.id, "resume_requested", True,
                                              frozenset({S.PAUSED}), "op", "")])
    assert job.resume_requested
    job = claim_one(store, [job.job_type])
    assert job.started_at == started, "started_at is set on the first start only"
    assert not job.resume_requested and job.paused_at is not None
    (job,) = store.apply([transitions.fail(lease_of(job), job.id, ERROR, "raised", "w")])
    assert job.state is S.FAILED and job.finished_at is not None and job.error == ERROR
    assert job.worker_id is None and job.lease_token is None
    (job,) = store.apply([transitions.retry(job.id, "op", "manual")])
    assert (job.state, job.attempt, job.error, job.finished_at) == (S.PENDING, 1, None, None)
    assert job.progress.last_checkpoint == {"i": 2}, "checkpoints survive retries"
    job = claim_one(store, [job.job_type])
    (job,) = store.apply([transitions.complete(lease_of(job), None, "w")])
    assert job.state is S.COMPLETED and job.result is None and job.finished_at is not None
    actions = [h.action for h in store.history(job.id)]
    assert actions == ["create", "start", "pause", "request_resume", "resume", "fail", "retry",
                       "start", "complete"]


def test_result_values_round_trip(store: Store) -> None:
    for result in ({"a": [1, 2.5, "x"]}, [1, 2], "text", 42, 0, False, None):
        job = running(store)
        (done,) = store.apply([transitions.complete(lease_of(job), result, "w")])
        assert done.result == result
        assert store.get_job(job.id).result == result


def test_retry_guard_refuses_exhausted_jobs(store: Store) -> None:
    job = in_state(store, S.FAILED, max_attempts=1)
    (job,) = store.apply([transitions.retry(job.id, "op", "")])
    job = claim_one(store, [job.job_type])
    (job,) = store.apply([transitions.fail(lease_of(job), job.id, ERROR, "raised", "w")])
    assert job.attempt == 1
    with pytest.raises(ChangeRefused):
        store.apply([transitions.retry(job.id, "op", "")])
    assert store.get_job(job.id).state is S.FAILED


def test_zero_max_attempts_never_retries(store: Store) -> None:
    job = in_state(store, S.FAILED, max_attempts=0)
    with pytest.raises(ChangeRefused):
        store.apply([transitions.retry(job.id, "op", "")])


def test_fencing_refuses_a_stale_token_or_attempt(store: Store) -> None:
    job = running(store)
    real = lease_of(job)
    for stale in (Lease(job.id, "someone-else", job.attempt),
                  Lease(job.id, real.token, job.attempt + 1)):
        with pytest.raises(ChangeRefused):
            store.apply([transitions.complete(stale, {"stale": True}, "zombie")])
    assert store.get_job(job.id).state is S.RUNNING
    assert store.apply([transitions.complete(real, {}, "w")])[0].state is S.COMPLETED


def test_multi_change_apply_is_atomic(store: Store) -> None:
    job = running(store, max_attempts=0)
    lease = lease_of(job)
    before = _history_len(store, job)
    # fail succeeds but the retry is refused (no attempts): the fail must be rolled back too
    with pytest.raises(ChangeRefused):
        store.apply([transitions.fail(lease, job.id, ERROR, "raised", "w"),
                     transitions.retry(job.id, "w", "")])
    assert store.get_job(job.id).state is S.RUNNING
    assert _history_len(store, job) == before
    job2 = running(store, max_attempts=3)
    failed, after = store.apply([
        transitions.fail(lease_of(job2), job2.id, ERROR, "raised", "w"),
        transitions.retry(job2.id, "w", "automatic", delay=60)])
    assert (after.state, after.attempt) == (S.PENDING, 1)
    assert after.run_at > store.now()
    assert [h.action for h in store.history(job2.id)][-2:] == ["fail", "retry"]
    # one row per change, each as that change left it (read in the transaction)
    assert (failed.state, failed.attempt, failed.error) == (S.FAILED, 0, ERROR)
    assert failed.finished_at is not None and failed.lease_token is None
    assert (after.error, after.finished_at) == (None, None)


def test_apply_returns_each_changes_own_row(store: Store) -> None:
    job = running(store)
    asked, cancelled = store.apply([
        transitions.request(job.id, "cancel_requested", True, frozenset({S.RUNNING}), "op", ""),
        transitions.cancel_running(lease_of(job), job.id, JobProgress(3, 7), "w", "at once")])
    assert (asked.state, asked.cancel_requested, asked.lease_token) == (
        S.RUNNING, True, job.lease_token)
    assert asked.progress.current_step == 0 and asked.finished_at is None
    assert (cancelled.state, cancelled.lease_token) == (S.CANCELLED, None)
    assert cancelled.progress.current_step == 3 and cancelled.finished_at is not None
    assert cancelled == store.get_job(job.id)


def test_apply_on_an_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFound):
        store.apply([transitions.retry("missing", "op", "")])


def test_requests_set_flags_without_moving(store: Store) -> None:
    job = running(store)
    (after,) = store.apply([transitions.request(job.id, "pause_requested", True,
                                                frozenset({S.RUNNING}), "alice", "maintenance")])
    assert after.state is S.RUNNING and after.pause_requested
    last = store.history(job.id)[-1]
    assert (last.action, last.from_state, last.to_state, last.actor, last.reason) == (
        "request_pause", S.RUNNING, S.RUNNING, "alice", "maintenance")
    pending = insert(store)
    with pytest.raises(ChangeRefused):
        store.apply([transitions.request(pending.id, "pause_requested", True,
                                         frozenset({S.RUNNING}), "alice", "")])


def test_cancel_of_a_running_job_needs_the_request(store: Store) -> None:
    job = running(store)
    with pytest.raises(ChangeRefused):
        store.apply([transitions.cancel_running(lease_of(job), job.id, None, "w", "checkpoint")])
    store.apply([transitions.request(job.id, "cancel_requested", True, frozenset({S.RUNNING}),
                                     "op", "")])
    (done,) = store.apply([transitions.cancel_running(lease_of(job), job.id, JobProgress(4, 9),
                                                      "w", "cancelled at checkpoint")])
    assert done.state is S.CANCELLED and done.progress.current_step == 4
    assert done.finished_at is not None and done.lease_token is None


def test_lease_expired_guard(store: Store) -> None:
    job = running(store, lease=30)
    lease = lease_of(job)
    reaper_fail = transitions.fail(lease, job.id, ERROR, "worker lost", "reaper",
                                   lease_expired=True)
    with pytest.raises(ChangeRefused):
        store.apply([reaper_fail])
    assert store.expired_leases(10) == []
    pass_time(store, 31)
    assert [j.id for j in store.expired_leases(10)] == [job.id]
    assert store.apply([reaper_fail])[0].state is S.FAILED
    assert store.expired_leases(10) == []


def test_heartbeat_extends_only_held_leases(store: Store) -> None:
    job = running(store, lease=5)
    other = running(store, lease=60)
    held = store.heartbeat([lease_of(job), Lease(other.id, "stale", other.attempt)], 30.0)
    assert set(held) == {job.lease_token}
    pass_time(store, 10)
    assert store.expired_leases(10) == [], "the heartbeat moved the expiry forward"
    store.apply([transitions.request(job.id, "cancel_requested", True, frozenset({S.RUNNING}),
                                     "op", "")])
    signals = store.heartbeat([lease_of(job)], 30.0)[lease_of(job).token]
    assert signals.cancel_requested and not signals.pause_requested


def test_save_progress_is_fenced(store: Store) -> None:
    from conveyor.errors import LeaseLost

    job = running(store)
    signals = store.save_progress(lease_of(job), JobProgress(5, 10, {"ignored": True}))
    assert not signals.pause_requested
    got = store.get_job(job.id)
    assert (got.progress.current_step, got.progress.total_steps) == (5, 10)
    assert got.progress.last_checkpoint == {}, "plain progress does not touch the checkpoint"
    store.save_progress(lease_of(job), JobProgress(6, 10, {"page": 6}), checkpoint=True)
    assert store.get_job(job.id).progress == JobProgress(6, 10, {"page": 6})
    with pytest.raises(LeaseLost):
        store.save_progress(Lease(job.id, "stale", job.attempt), JobProgress(9, 10))
    assert store.get_job(job.id).progress.current_step == 6


def test_pause_timeout_guard(store: Store) -> None:
    job = in_state(store, S.PAUSED, pause_timeout=30)
    cancel = transitions.cancel_idle(job.id, S.PAUSED, "reaper", "pause timeout",
                                     pause_expired=True)
    with pytest.raises(ChangeRefused):
        store.apply([cancel])
    assert store.expired_pauses(10) == []
    pass_time(store, 31)
    assert [j.id for j in store.expired_pauses(10)] == [job.id]
    (done,) = store.apply([cancel])
    assert done.state is S.CANCELLED
    assert store.history(job.id)[-1].reason == "pause timeout"
