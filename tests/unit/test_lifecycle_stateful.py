"""Stateful property test of :class:`JobStateMachine` against an independent model.

Hypothesis drives random sequences of operations on a few jobs, legal or not. The model below
is written from SPEC section 1 by hand; it does not consult ``conveyor.lifecycle`` to decide
what is legal, so the two are checked against each other.

The pure machine is keyed by target state, so ``start`` and ``resume`` are the same call
(``transition(job, RUNNING)``): which one it is depends on the source state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conveyor.errors import InvalidStateError
from conveyor.lifecycle import TRANSITIONS, JobState, JobStateMachine
from conveyor.model import Job, JobError

N_JOBS = 3
T0 = datetime(2026, 1, 1, tzinfo=UTC)

#: The legal (from, to) pairs of SPEC section 1, typed out as plain strings.
MODEL_LEGAL: frozenset[tuple[str, str]] = frozenset(
    {
        ("pending", "running"),
        ("pending", "cancelled"),
        ("running", "paused"),
        ("running", "completed"),
        ("running", "failed"),
        ("running", "cancelled"),
        ("paused", "running"),
        ("paused", "cancelled"),
        ("failed", "pending"),
        ("running", "pending"),  # beyond the SPEC (issue 10): a job snoozing itself
    }
)
FINISHED = frozenset({"completed", "failed", "cancelled"})

OPERATIONS: dict[str, str] = {
    "start": "running",
    "pause": "paused",
    "resume": "running",
    "complete": "completed",
    "fail": "failed",
    "cancel": "cancelled",
    "retry": "pending",
}


class MonotonicClock:
    """Every read is strictly later than the one before; ``advance`` adds a bigger jump."""

    def __init__(self) -> None:
        self.now = T0
        self.last: datetime | None = None

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)
        self.last = self.now
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class ModelJob:
    """What the model believes about one job."""

    state: str
    attempt: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def terminal(self) -> bool:
        if self.state in ("completed", "cancelled"):
            return True
        return self.state == "failed" and self.attempt >= self.max_attempts

    def allows(self, target: str) -> bool:
        if (self.state, target) not in MODEL_LEGAL:
            return False
        if (self.state, target) == ("failed", "pending"):
            return self.attempt < self.max_attempts
        return True


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = MonotonicClock()
        self.machine = JobStateMachine(clock=self.clock)
        self.jobs: list[Job] = []
        self.models: list[ModelJob] = []
        self.legal_moves = 0
        self.illegal_moves = 0

    @initialize(max_attempts=st.lists(st.integers(0, 3), min_size=N_JOBS, max_size=N_JOBS))
    def create_jobs(self, max_attempts: list[int]) -> None:
        for index, limit in enumerate(max_attempts):
            created = self.clock()
            self.jobs.append(
                Job(
                    id=f"job-{index}",
                    job_type="t",
                    max_attempts=limit,
                    created_at=created,
                    updated_at=created,
                    run_at=created,
                )
            )
            self.models.append(ModelJob("pending", 0, limit, created))

    # ----------------------------------------------------------------------------------------
    # the one move, checked against the model

    def attempt(self, index: int, operation: str) -> None:
        job = self.jobs[index]
        model = self.models[index]
        target = OPERATIONS[operation]
        source = job.state
        before = copy.deepcopy(job)
        was_terminal = model.terminal()
        expected_legal = model.allows(target)

        assert self.machine.can_transition(job, JobState(target)) == expected_legal

        if not expected_legal:
            self.illegal_moves += 1
            with pytest.raises(InvalidStateError) as info:
                self.machine.transition(job, JobState(target))
            prefix = f"Cannot transition from {source.value} to {target}"
            message = str(info.value)
            assert message == prefix or message.startswith(prefix + ": ")
            assert job == before, "an illegal move changed the job"
            return

        assert not was_terminal, "a terminal job moved"
        self.legal_moves += 1
        self.machine.transition(job, JobState(target))
        now = self.clock.last
        assert now is not None

        # what a worker does around the move
        if target == "failed":
            job.error = JobError("RuntimeError", f"attempt {job.attempt} failed")
        if target == "completed":
            job.result = {"ok": True}

        assert job.state.value == target
        assert JobState(target) in TRANSITIONS[source]
        assert job.updated_at == now

        model.state = target
        if target == "pending" and source is JobState.FAILED:  # a retry; a snooze spends none
            model.attempt += 1
            model.finished_at = None
            assert job.error is None
        elif target == "pending":
            assert job.error == before.error
        else:
            assert job.error == before.error or target == "failed"
        if target == "running" and model.started_at is None:
            model.started_at = now
        if target in FINISHED:
            model.finished_at = now

    @rule(index=st.integers(0, N_JOBS - 1))
    def start(self, index: int) -> None:
        self.attempt(index, "start")

    @rule(index=st.integers(0, N_JOBS - 1))
    def pause(self, index: int) -> None:
        self.attempt(index, "pause")

    @rule(index=st.integers(0, N_JOBS - 1))
    def resume(self, index: int) -> None:
        self.attempt(index, "resume")

    @rule(index=st.integers(0, N_JOBS - 1))
    def complete(self, index: int) -> None:
        self.attempt(index, "complete")

    @rule(index=st.integers(0, N_JOBS - 1))
    def fail(self, index: int) -> None:
        self.attempt(index, "fail")

    @rule(index=st.integers(0, N_JOBS - 1))
    def cancel(self, index: int) -> None:
        self.attempt(index, "cancel")

    @rule(index=st.integers(0, N_JOBS - 1))
    def retry(self, index: int) -> None:
        self.attempt(index, "retry")

    @rule(seconds=st.integers(min_value=1, max_value=3 * 24 * 3600))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    # ----------------------------------------------------------------------------------------
    # invariants, checked after every step

    @invariant()
    def job_matches_model(self) -> None:
        for job, model in zip(self.jobs, self.models, strict=True):
            assert job.state.value == model.state
            assert job.attempt == model.attempt, "attempt changed other than by a retry"
            assert job.max_attempts == model.max_attempts
            assert job.started_at == model.started_at, "started_at changed once set"
            assert job.finished_at == model.finished_at
            assert job.created_at == model.created_at

    @invariant()
    def attempt_within_bounds(self) -> None:
        for job in self.jobs:
            assert 0 <= job.attempt <= job.max_attempts

    @invariant()
    def finished_at_iff_finished_state(self) -> None:
        for job in self.jobs:
            assert (job.finished_at is not None) == (job.state.value in FINISHED)

    @invariant()
    def timestamps_ordered(self) -> None:
        for job in self.jobs:
            if job.started_at is not None:
                assert job.created_at <= job.started_at
            if job.finished_at is not None:
                assert job.created_at <= job.finished_at
                if job.started_at is not None:
                    assert job.started_at <= job.finished_at
            assert job.created_at <= job.updated_at

    @invariant()
    def started_at_set_iff_ever_ran(self) -> None:
        for job in self.jobs:
            if job.state in (JobState.RUNNING, JobState.PAUSED, JobState.COMPLETED):
                assert job.started_at is not None
            if job.state is JobState.FAILED:
                assert job.started_at is not None
                assert job.error is not None, "a failed job lost its error"

    @invariant()
    def derived_properties_agree_with_model(self) -> None:
        for job, model in zip(self.jobs, self.models, strict=True):
            assert job.is_terminal == model.terminal()
            assert job.can_retry == (model.state == "failed" and not model.terminal())
            if model.terminal():
                assert "requeue" in job.legal_actions
                assert not {"pause", "resume", "cancel", "retry"} & set(job.legal_actions)


LifecycleMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycleStateMachine = LifecycleMachine.TestCase


def test_model_table_matches_library_table() -> None:
    """The model's hand-written table and the library's agree pair for pair."""
    library = {(src.value, dst.value) for src, targets in TRANSITIONS.items() for dst in targets}
    assert library == MODEL_LEGAL


def test_state_machine_explores_both_legal_and_illegal_moves() -> None:
    """A fixed run: the rule machine really does reach every state and refuse moves."""
    run = LifecycleMachine()
    run.create_jobs([1, 0, 3])
    for operation in ("start", "pause", "resume", "fail", "retry", "start", "fail", "retry"):
        run.attempt(0, operation)
        run.job_matches_model()
    assert run.jobs[0].state is JobState.FAILED
    assert run.jobs[0].is_terminal
    assert run.illegal_moves == 1  # the second retry: 1 of 1 used
    run.attempt(1, "cancel")
    run.attempt(1, "start")
    run.attempt(2, "start")
    run.attempt(2, "complete")
    run.attempt(2, "cancel")
    run.job_matches_model()
    run.finished_at_iff_finished_state()
    run.timestamps_ordered()
    assert [job.state for job in run.jobs] == [
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.COMPLETED,
    ]
    assert run.illegal_moves == 3
    assert run.legal_moves == 10
