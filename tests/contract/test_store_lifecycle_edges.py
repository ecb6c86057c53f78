"""Contract: lifecycle edges where two actors meet on one job (issue 8, items 15-20 and 25).

Times are driven by each store's own clock: a job is given a tiny lease or pause timeout and
the test waits (on a condition, with a generous bound) until the store itself reports it
expired, so the same test runs unchanged on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest

from conveyor import Conveyor, transitions
from conveyor.changes import ChangeRefused, Lease
from conveyor.errors import LeaseLost
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError, JobProgress
from conveyor.stores.base import Store
from conveyor.worker import reap
from conveyor.worker.executor import failure_changes
from tests.contract.helpers import claim_one, in_state, insert, lease_of, new, pass_time

S = JobState
BACKLOG = 12


@pytest.fixture
def app(store: Store) -> Conveyor:
    """A control-only app on the contract store: the reaper and the control verbs."""
    return Conveyor(store=store, rand=lambda: 0.0)


def _ask(store: Store, job_id: str, flag: str, state: JobState) -> Job:
    (job,) = store.apply([transitions.request(job_id, flag, True, frozenset({state}), "op", "")])
    return job


def _resumed_twice(store: Store) -> tuple[Lease, Lease]:
    """A job paused then resumed: the old run's lease and the new one, with the SAME attempt."""
    job_type = "same-attempt"
    insert(store, job_type)
    first = claim_one(store, [job_type])
    old = lease_of(first)
    store.apply([transitions.pause_at_checkpoint(old, JobProgress(2, 10, {"next": 2}), "w")])
    _ask(store, first.id, "resume_requested", S.PAUSED)
    second = claim_one(store, [job_type], worker="worker-b")
    current = lease_of(second)
    assert current.attempt == old.attempt and current.token != old.token
    return old, current


def _expire_lease(store: Store, job_type: str, **fields: object) -> Job:
    """A running job whose worker died: its short lease has run out by the store's clock."""
    insert(store, job_type, **fields)
    job = claim_one(store, [job_type], lease=0.05, worker="dead-worker")
    pass_time(store, 1.0)  # past the 0.05 s lease / pause timeout by the store's clock
    assert any(j.id == job.id for j in store.expired_leases(100)), "the lease to expire"
    return job


def _claim_ids(store: Store, job_type: str, limit: int) -> list[str]:
    jobs = store.claim("w", queues=[], job_types=[job_type], limit=limit, lease_seconds=30)
    return [j.id for j in jobs]


# -- 15: the pause timer spares a resumed job ---------------------------------------------------

def test_a_resumed_job_is_not_cancelled_by_the_pause_timeout(store: Store) -> None:
    job = in_state(store, S.PAUSED, pause_timeout=0.05)
    pass_time(store, 1.0)  # past the 0.05 s lease / pause timeout by the store's clock
    assert [j.id for j in store.expired_pauses(10)] == [job.id], "the pause to time out"
    # the reaper read the job as expired; an operator's resume lands before its write
    _ask(store, job.id, "resume_requested", S.PAUSED)
    assert store.expired_pauses(10) == []
    timeout = transitions.cancel_idle(job.id, S.PAUSED, "reaper", "pause timeout",
                                      pause_expired=True)
    with pytest.raises(ChangeRefused):
        store.apply([timeout])
    kept = store.get_job(job.id)
    assert kept.state is S.PAUSED and kept.resume_requested
    resumed = claim_one(store, [job.job_type])
    assert resumed.id == job.id and resumed.state is S.RUNNING


def test_a_paused_job_without_a_resume_still_times_out(store: Store) -> None:
    job = in_state(store, S.PAUSED, pause_timeout=0.05)
    pass_time(store, 1.0)  # past the 0.05 s lease / pause timeout by the store's clock
    assert store.expired_pauses(10) != [], "the pause to time out"
    (done,) = store.apply([transitions.cancel_idle(job.id, S.PAUSED, "reaper", "pause timeout",
                                                   pause_expired=True)])
    assert done.state is S.CANCELLED


# -- 16: a cancel requested before the failure is written wins ----------------------------------

def test_a_failure_is_refused_while_a_cancel_is_requested(store: Store) -> None:
    job = in_state(store, S.RUNNING, max_attempts=3)
    lease = lease_of(job)
    _ask(store, job.id, "cancel_requested", S.RUNNING)  # between the worker's read and write
    changes = failure_changes(job, lease, JobError("RuntimeError", "boom"), "raised", "w",
                              lambda: 0.0)
    with pytest.raises(ChangeRefused):
        store.apply(changes)
    still = store.get_job(job.id)
    assert (still.state, still.attempt, still.error) == (S.RUNNING, 0, None)
    (cancelled,) = store.apply([transitions.cancel_running(lease, job.id, None, "w",
                                                           "cancelled")])
    assert cancelled.state is S.CANCELLED


def test_the_reaper_cancels_a_lost_job_whose_cancel_arrived_after_its_read(
        store: Store, app: Conveyor, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _expire_lease(store, "reap-cancel")
    real = store.expired_leases

    def read_then_cancel(limit: int) -> list[Job]:
        found = real(limit)  # the reaper has read the flags: no cancel yet
        _ask(store, job.id, "cancel_requested", S.RUNNING)
        return found

    monkeypatch.setattr(store, "expired_leases", read_then_cancel)
    assert reap(app).lost == 1
    done = store.get_job(job.id)
    assert done.state is S.CANCELLED and done.attempt == 0
    assert store.history(job.id)[-1].reason == "worker lost while cancelling"


# -- 17 and 25: a stale run of the same attempt learns nothing and writes nothing ---------------

def test_heartbeat_answers_only_the_current_lease_of_a_job(store: Store) -> None:
    old, current = _resumed_twice(store)
    _ask(store, current.job_id, "pause_requested", S.RUNNING)
    held = store.heartbeat([old, current], 30.0)
    assert set(held) == {current.token}
    assert held[current.token].pause_requested
    assert store.heartbeat([old], 30.0) == {}


@pytest.mark.parametrize("checkpoint", [True, False], ids=["checkpoint", "progress"])
def test_a_stale_lease_of_the_same_attempt_cannot_save_progress(store: Store,
                                                                checkpoint: bool) -> None:
    old, current = _resumed_twice(store)
    before = store.get_job(current.job_id).progress
    with pytest.raises(LeaseLost):
        store.save_progress(old, JobProgress(9, 10, {"next": 9, "by": "zombie"}),
                            checkpoint=checkpoint)
    assert store.get_job(current.job_id).progress == before
    store.save_progress(current, JobProgress(3, 10, {"next": 3}), checkpoint=checkpoint)
    after = store.get_job(current.job_id).progress
    assert after.current_step == 3
    assert after.last_checkpoint == ({"next": 3} if checkpoint else before.last_checkpoint)


# -- 19: an interrupted job keeps its place in line --------------------------------------------

def test_a_lost_jobs_retry_is_claimed_before_the_backlog_enqueued_after_it(
        store: Store, app: Conveyor) -> None:
    lost = _expire_lease(store, "line", backoff={"base": 0})
    store.insert_jobs([new("line") for _ in range(BACKLOG)])
    assert reap(app).lost == 1
    retried = store.get_job(lost.id)
    assert (retried.state, retried.attempt) == (S.PENDING, 1)
    assert _claim_ids(store, "line", 1) == [lost.id]


def test_a_lost_jobs_retry_still_waits_for_its_backoff(store: Store, app: Conveyor) -> None:
    _expire_lease(store, "line-wait", backoff={"base": 3600, "jitter": 0})
    backlog = store.insert_jobs([new("line-wait") for _ in range(BACKLOG)])
    assert reap(app).lost == 1
    claimed = _claim_ids(store, "line-wait", BACKLOG + 1)
    assert claimed == [j.id for j in backlog]  # the backlog, in order; the retry not yet due


def test_a_retry_after_the_job_raised_goes_to_the_back_of_the_line(store: Store) -> None:
    insert(store, "line-back", backoff={"base": 0})
    job = claim_one(store, ["line-back"])
    backlog = store.insert_jobs([new("line-back") for _ in range(3)])
    pass_time(store, 1.0)  # the job fails after the backlog was enqueued
    store.apply(failure_changes(job, lease_of(job), JobError("E", "boom"), "raised", "w",
                                lambda: 0.0))
    assert _claim_ids(store, "line-back", 10) == [*(j.id for j in backlog), job.id]


# -- 20: a pause requested before the crash still holds ----------------------------------------

def test_a_pause_request_survives_a_lost_worker(store: Store, app: Conveyor) -> None:
    insert(store, "pause-crash", backoff={"base": 0})
    job = claim_one(store, ["pause-crash"], lease=0.05, worker="dead-worker")
    app.pause(job.id, actor="alice")
    pass_time(store, 1.0)  # past the 0.05 s lease / pause timeout by the store's clock
    assert store.expired_leases(10) != [], "the lease to expire"
    assert reap(app).lost == 1
    retried = store.get_job(job.id)
    assert (retried.state, retried.attempt, retried.pause_requested) == (S.PENDING, 1, True)
    assert set(retried.legal_actions) == {"resume", "cancel"}
    rerun = claim_one(store, ["pause-crash"])
    assert rerun.id == job.id and rerun.pause_requested  # the claim keeps the request
    assert store.save_progress(lease_of(rerun), JobProgress(1, 2)).pause_requested


def test_resume_withdraws_a_pause_carried_by_a_pending_retry(store: Store,
                                                             app: Conveyor) -> None:
    insert(store, "pause-withdraw", backoff={"base": 0})
    job = claim_one(store, ["pause-withdraw"], lease=0.05, worker="dead-worker")
    app.pause(job.id)
    pass_time(store, 1.0)  # past the 0.05 s lease / pause timeout by the store's clock
    assert store.expired_leases(10) != [], "the lease to expire"
    reap(app)
    withdrawn = app.resume(job.id, actor="bob")
    assert (withdrawn.state, withdrawn.pause_requested) == (S.PENDING, False)
    assert withdrawn.legal_actions == ["cancel"]
    assert store.history(job.id)[-1].action == "withdraw_pause"
    assert not claim_one(store, ["pause-withdraw"]).pause_requested


def test_cancel_of_a_pending_retry_carrying_a_pause(store: Store, app: Conveyor) -> None:
    insert(store, "pause-cancel", backoff={"base": 0})
    job = claim_one(store, ["pause-cancel"], lease=0.05, worker="dead-worker")
    app.pause(job.id)
    pass_time(store, 1.0)  # past the 0.05 s lease / pause timeout by the store's clock
    assert store.expired_leases(10) != [], "the lease to expire"
    reap(app)
    done = app.cancel(job.id)
    assert (done.state, done.pause_requested) == (S.CANCELLED, False)


def test_a_lost_job_with_no_retry_left_ends_without_a_pending_pause(store: Store,
                                                                     app: Conveyor) -> None:
    insert(store, "pause-final", max_attempts=0)
    job = claim_one(store, ["pause-final"], lease=0.05, worker="dead-worker")
    app.pause(job.id)
    pass_time(store, 1.0)  # past the 0.05 s lease / pause timeout by the store's clock
    assert store.expired_leases(10) != [], "the lease to expire"
    assert reap(app).lost == 1
    failed = store.get_job(job.id)
    assert (failed.state, failed.pause_requested) == (S.FAILED, False)
