"""Contract: the verbs table is what the control verbs do, on every store.

A job is driven into an arbitrary reachable situation (state x request flags x retries left)
by real operations — an operator's verbs, a worker's claim and its fenced writes, a lost
worker's failure and retry — and then one verb is called on it. The verb is in
``Job.legal_actions`` exactly when the call succeeds and changes something. A refused verb
raises InvalidStateError and writes nothing; a repeated request (the table's ``nothing`` rows)
succeeds, returns the job unchanged, and is not offered.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor import Conveyor, transitions
from conveyor.changes import Change, ChangeRefused, Lease
from conveyor.errors import InvalidStateError
from conveyor.events import JobEvent
from conveyor.lifecycle import VERB_TABLE, Effect, JobState, Verb, VerbRule, verb_rule
from conveyor.model import Job, JobError, JobProgress
from conveyor.stores.base import Store
from tests.contract.helpers import insert

S = JobState

#: The moves a job can be put through. Operator verbs are refused or succeed as the app
#: decides; a worker's write is skipped when the job is not running under a lease.
OPERATIONS = ("claim", "pause", "resume", "cancel", "retry", "worker_pauses", "worker_hands_back",
              "worker_cancels", "worker_completes", "job_raises", "worker_lost",
              "fail_without_retry")

#: One path to each situation the verbs table tells apart (a test checks they cover it all).
SITUATIONS: dict[str, tuple[int, tuple[str, ...]]] = {
    "pending": (1, ()),
    "pending, pause requested (lost worker)": (1, ("claim", "pause", "worker_lost")),
    "running": (1, ("claim",)),
    "running, pause requested": (1, ("claim", "pause")),
    "running, cancel requested": (1, ("claim", "cancel")),
    "running, both requested": (1, ("claim", "pause", "cancel")),
    "paused": (1, ("claim", "pause", "worker_pauses")),
    "paused, resume requested": (1, ("claim", "worker_hands_back")),
    "paused, cancel requested": (1, ("claim", "pause", "cancel", "worker_pauses")),
    "completed": (1, ("claim", "worker_completes")),
    "cancelled": (1, ("cancel",)),
    "cancelled while running": (1, ("claim", "cancel", "worker_cancels")),
    "failed, a retry left": (1, ("claim", "fail_without_retry")),
    "failed for good": (0, ("claim", "job_raises")),
}


@dataclass
class Driver:
    """One job and the lease of its current run, moved by real operations."""

    app: Conveyor
    job_type: str = field(default_factory=lambda: f"verbs-{uuid.uuid4().hex[:10]}")
    job_id: str = ""
    lease: Lease | None = None

    @property
    def store(self) -> Store:
        return self.app.store

    def create(self, max_attempts: int) -> None:
        self.job_id = insert(self.store, self.job_type, max_attempts=max_attempts,
                             backoff={"base": 0, "jitter": 0}).id

    def do(self, operation: str) -> None:
        try:
            if operation in ("pause", "resume", "cancel", "retry"):
                getattr(self.app, operation)(self.job_id, actor="op")
            elif operation == "claim":
                claimed = self.store.claim("w", queues=[], job_types=[self.job_type], limit=1,
                                           lease_seconds=60)
                if claimed:
                    job = claimed[0]
                    assert job.lease_token is not None
                    self.lease = Lease(job.id, job.lease_token, job.attempt)
            elif self.lease is not None:
                self.store.apply(self.worker_changes(operation, self.lease))
                self.lease = None
        except (InvalidStateError, ChangeRefused):
            pass

    def worker_changes(self, operation: str, lease: Lease) -> list[Change]:
        job = self.store.get_job(self.job_id)
        if operation in ("worker_pauses", "worker_hands_back"):
            return [transitions.pause_at_checkpoint(
                lease, JobProgress(1, 2), "w", resume=operation == "worker_hands_back")]
        if operation == "worker_cancels":
            return [transitions.cancel_running(lease, job.id, None, "w", "cancelled")]
        if operation == "worker_completes":
            return [transitions.complete(lease, {"ok": True}, "w")]
        lost = operation == "worker_lost"
        retry_left = job.attempt < job.max_attempts and operation != "fail_without_retry"
        changes = [transitions.fail(lease, job.id, JobError("E", "boom"), "raised", "w",
                                    keep_pause=lost and retry_left)]
        if retry_left:
            changes.append(transitions.retry(job.id, "w", "automatic retry", keep_place=lost))
        return changes


def _written(store: Store, job_id: str) -> tuple[object, ...]:
    """Everything a verb could write about the job: its row, its history, the jobs stored."""
    job = store.get_job(job_id)
    counts = store.count_by_state()
    return (job.to_dict(), len(store.history(job_id)), sum(counts.values()))


@pytest.fixture
def app(store: Store) -> Conveyor:
    return Conveyor(store=store)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(max_attempts=st.integers(0, 2),
       operations=st.lists(st.sampled_from(OPERATIONS), max_size=10),
       verb=st.sampled_from(list(Verb)))
def test_a_verb_is_legal_exactly_when_it_succeeds_and_changes_something(
        app: Conveyor, max_attempts: int, operations: list[str], verb: Verb) -> None:
    check_verb(app, max_attempts, operations, verb)


def test_every_row_of_the_verbs_table_is_reached_and_holds(app: Conveyor) -> None:
    """The same check on a path to every situation, so no row depends on luck."""
    reached = set()
    for max_attempts, operations in SITUATIONS.values():
        for verb in Verb:
            reached.add(check_verb(app, max_attempts, operations, verb))
    assert reached == set(VERB_TABLE) | {None}


def check_verb(app: Conveyor, max_attempts: int, operations: Sequence[str],
               verb: Verb) -> VerbRule | None:
    """Drive a new job through ``operations``, call ``verb``; return the table's row used."""
    driver = Driver(app)
    driver.create(max_attempts)
    for operation in operations:
        driver.do(operation)
    before = app.get(driver.job_id)
    written = _written(app.store, driver.job_id)
    events: list[JobEvent] = []
    unsubscribe = app.subscribe(events.append)
    try:
        outcome: Job | InvalidStateError = (
            app.requeue(before.id) if verb is Verb.REQUEUE
            else getattr(app, verb.value)(before.id, actor="op"))
    except InvalidStateError as refused:
        outcome = refused
    finally:
        unsubscribe()
    rule = verb_rule(verb, before)
    if verb.value in before.legal_actions:
        assert isinstance(outcome, Job), f"{verb} offered but refused: {outcome}"
        assert rule is not None and rule.effect is not Effect.NOTHING
        assert _written(app.store, driver.job_id) != written
        assert [type(event).__name__ for event in events] == [rule.event]
    elif isinstance(outcome, Job):  # a repeated request: fine, and nothing happens
        assert rule is not None and rule.effect is Effect.NOTHING
        assert outcome.to_dict() == before.to_dict()
        assert _written(app.store, driver.job_id) == written and events == []
    else:
        assert rule is None
        assert _written(app.store, driver.job_id) == written and events == []
    return rule


def test_a_paused_job_with_a_cancel_request_is_offered_cancel(app: Conveyor) -> None:
    """The situation the four copies disagreed on: cancel was refused by the list, not the app."""
    driver = Driver(app)
    driver.create(1)
    for operation in ("claim", "pause", "cancel", "worker_pauses"):
        driver.do(operation)
    job = app.get(driver.job_id)
    assert (job.state, job.cancel_requested) == (S.PAUSED, True)
    assert "cancel" in job.legal_actions
    assert app.cancel(job.id).state is S.CANCELLED


@pytest.mark.parametrize(("verb", "message"), [
    (Verb.PAUSE, "Cannot transition from running to paused: a cancel is already requested"),
    (Verb.RESUME, "Cannot transition from running to running"),
    (Verb.RETRY, "Cannot transition from running to pending"),
    (Verb.REQUEUE, "Cannot requeue job {id}: it is running, not completed, cancelled or "
                   "failed for good"),
])
def test_refusals_keep_their_wording(app: Conveyor, verb: Verb, message: str) -> None:
    driver = Driver(app)
    driver.create(1)
    driver.do("claim")
    driver.do("cancel")
    call = app.requeue if verb is Verb.REQUEUE else getattr(app, verb.value)
    with pytest.raises(InvalidStateError) as refused:
        call(driver.job_id)
    assert str(refused.value) == message.format(id=driver.job_id)
