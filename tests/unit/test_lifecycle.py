"""Unit tests of the pure lifecycle: the transition table, the state machine and the data model.

The expected table is written out here by hand from SPEC section 1 and the seed, never derived
from ``conveyor.lifecycle``, so a change to the library's table shows up as a failing test.
"""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.errors import ConveyorError, InvalidStateError
from conveyor.lifecycle import (
    FINAL_STATES,
    TRANSITION_TABLE,
    TRANSITIONS,
    JobState,
    JobStateMachine,
    Transition,
    find_transition,
    guard_failure,
    is_terminal,
    legal_targets,
    mermaid_diagram,
    sources_of,
    transition_error,
)
from conveyor.model import Job, JobError, JobProgress

P, R, PA, C, F, X = (
    JobState.PENDING,
    JobState.RUNNING,
    JobState.PAUSED,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.CANCELLED,
)

#: The seed's ``JobStateMachine.TRANSITIONS``, copied verbatim (section 5 of the seed).
SEED_TRANSITIONS: dict[JobState, set[JobState]] = {
    P: {R, X},
    R: {PA, C, F, X},
    PA: {R, X},
    F: {P},
    C: set(),
    X: set(),
}

#: SPEC section 1, row by row: (from, to, row name, event).
SPEC_ROWS: list[tuple[JobState, JobState, str, str]] = [
    (P, R, "start", "JobStarted"),
    (P, X, "cancel", "JobCancelled"),
    (R, PA, "pause", "JobPaused"),
    (R, C, "complete", "JobCompleted"),
    (R, F, "fail", "JobFailed"),
    (R, X, "cancel", "JobCancelled"),
    (PA, R, "resume", "JobResumed"),
    (PA, X, "cancel", "JobCancelled"),
    (F, P, "retry", "JobRetried"),
]
#: Rows beyond the SPEC (issue 10): a job snoozing itself goes back to pending, spending no
#: attempt. The SPEC's and the seed's rows above stay as they are, all of them in the table.
EXTENSION_ROWS: list[tuple[JobState, JobState, str, str]] = [
    (R, P, "snooze", "JobSnoozed"),
]
TABLE_ROWS = SPEC_ROWS + EXTENSION_ROWS
TABLE_TRANSITIONS: dict[JobState, set[JobState]] = {
    state: targets | {dst for src, dst, _, _ in EXTENSION_ROWS if src is state}
    for state, targets in SEED_TRANSITIONS.items()
}
LEGAL_PAIRS = {(src, dst) for src, dst, _, _ in TABLE_ROWS}
ILLEGAL_PAIRS = sorted(
    (pair for pair in itertools.product(JobState, JobState) if pair not in LEGAL_PAIRS),
    key=lambda pair: (pair[0].value, pair[1].value),
)

#: How to reach each state from pending with legal moves only.
PATHS: dict[JobState, list[JobState]] = {
    P: [],
    R: [R],
    PA: [R, PA],
    C: [R, C],
    F: [R, F],
    X: [X],
}

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock that moves one second forward on every read, and records what it returned."""

    def __init__(self, start: datetime = T0 + timedelta(hours=1)) -> None:
        self.now = start
        self.calls: list[datetime] = []

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        self.calls.append(self.now)
        return self.now


def make_job(**overrides: object) -> Job:
    fields: dict[str, object] = {
        "id": "job-1",
        "job_type": "reports.generate",
        "params": {"month": "2026-10"},
        "created_at": T0,
        "updated_at": T0,
        "run_at": T0,
    }
    fields.update(overrides)
    return Job(**fields)  # type: ignore[arg-type]


def job_in(state: JobState, machine: JobStateMachine, **overrides: object) -> Job:
    job = make_job(**overrides)
    for step in PATHS[state]:
        machine.transition(job, step)
    assert job.state is state
    return job


def pair_id(pair: tuple[JobState, JobState]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


# --------------------------------------------------------------------------------------------
# The table


def test_states_are_the_six_lowercase_strings() -> None:
    assert [s.value for s in JobState] == [
        "pending",
        "running",
        "paused",
        "completed",
        "failed",
        "cancelled",
    ]
    assert JobState("paused") is JobState.PAUSED
    assert str(JobState.CANCELLED) == "cancelled"
    assert f"{JobState.RUNNING}" == "running"
    assert isinstance(JobState.FAILED, str)
    assert JobState.FAILED.value == "failed"


def test_transitions_equal_the_seed_table_and_its_extensions_exactly() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert {state: set(targets) for state, targets in TRANSITIONS.items()} == TABLE_TRANSITIONS
    assert JobStateMachine.TRANSITIONS == TRANSITIONS


def test_transition_table_rows_match_spec() -> None:
    assert [(t.source, t.target, t.name, t.event) for t in TRANSITION_TABLE] == TABLE_ROWS
    assert len(set(LEGAL_PAIRS)) == len(TRANSITION_TABLE) == 10


def test_transition_rows_are_immutable() -> None:
    row = TRANSITION_TABLE[0]
    with pytest.raises(AttributeError):
        row.target = JobState.COMPLETED  # type: ignore[misc]


def test_final_states_are_completed_and_cancelled() -> None:
    assert frozenset({C, X}) == FINAL_STATES


@pytest.mark.parametrize("target", list(JobState), ids=lambda s: s.value)
def test_sources_of(target: JobState) -> None:
    expected = {src for src, targets in TABLE_TRANSITIONS.items() if target in targets}
    assert sources_of(target) == expected


def test_sources_of_spelled_out() -> None:
    assert sources_of(R) == {P, PA}
    assert sources_of(X) == {P, R, PA}
    assert sources_of(P) == {F, R}
    assert sources_of(C) == {R}


@pytest.mark.parametrize(("source", "target", "name", "event"), TABLE_ROWS)
def test_find_transition_returns_the_row(
    source: JobState, target: JobState, name: str, event: str
) -> None:
    row = find_transition(source, target)
    assert isinstance(row, Transition)
    assert (row.source, row.target, row.name, row.event) == (source, target, name, event)


@pytest.mark.parametrize("pair", ILLEGAL_PAIRS, ids=pair_id)
def test_find_transition_is_none_for_illegal_pairs(pair: tuple[JobState, JobState]) -> None:
    assert find_transition(*pair) is None


@pytest.mark.parametrize("state", [P, R, PA, C, X], ids=lambda s: s.value)
def test_legal_targets_without_guards_is_the_table(state: JobState) -> None:
    assert legal_targets(state, attempt=0, max_attempts=3) == TABLE_TRANSITIONS[state]
    # the attempt counter only matters to the retry guard
    assert legal_targets(state, attempt=3, max_attempts=3) == TABLE_TRANSITIONS[state]


def test_legal_targets_of_failed_depends_on_attempts() -> None:
    assert legal_targets(F, attempt=0, max_attempts=3) == {P}
    assert legal_targets(F, attempt=2, max_attempts=3) == {P}
    assert legal_targets(F, attempt=3, max_attempts=3) == frozenset()
    assert legal_targets(F, attempt=5, max_attempts=3) == frozenset()
    assert legal_targets(F, attempt=0, max_attempts=0) == frozenset()


def test_guard_failure() -> None:
    assert guard_failure(P, R, attempt=0, max_attempts=3) is None
    assert guard_failure(C, R, attempt=0, max_attempts=3) == ""
    reason = guard_failure(F, P, attempt=3, max_attempts=3)
    assert reason
    assert "3" in reason
    assert guard_failure(F, P, attempt=2, max_attempts=3) is None


def test_is_terminal_function() -> None:
    assert is_terminal(C, attempt=0, max_attempts=3)
    assert is_terminal(X, attempt=0, max_attempts=3)
    assert not is_terminal(F, attempt=2, max_attempts=3)
    assert is_terminal(F, attempt=3, max_attempts=3)
    for state in (P, R, PA):
        assert not is_terminal(state, attempt=3, max_attempts=3)


def test_transition_error_wording() -> None:
    err = transition_error(C, R)
    assert isinstance(err, InvalidStateError)
    assert str(err) == "Cannot transition from completed to running"
    assert (err.from_state, err.to_state) == ("completed", "running")
    assert str(transition_error(F, P, "no retries left")) == (
        "Cannot transition from failed to pending: no retries left"
    )


# --------------------------------------------------------------------------------------------
# The machine: legal moves and their side effects


@pytest.mark.parametrize(("source", "target", "name", "event"), TABLE_ROWS)
def test_every_legal_transition_succeeds(
    source: JobState, target: JobState, name: str, event: str
) -> None:
    clock = FakeClock()
    machine = JobStateMachine(clock=clock)
    job = job_in(source, machine)
    if source is F:
        job.error = JobError("ValueError", "boom", "Traceback ...")
    before = copy.deepcopy(job)

    assert machine.can_transition(job, target)
    returned = machine.transition(job, target)

    now = clock.calls[-1]
    assert returned is job
    assert job.state is target
    assert job.updated_at == now
    # configuration is never touched
    assert (job.id, job.job_type, job.params, job.max_attempts, job.created_at) == (
        before.id,
        before.job_type,
        before.params,
        before.max_attempts,
        before.created_at,
    )
    if target in (C, F, X):
        assert job.finished_at == now
    else:
        assert job.finished_at is None
    if target is P and source is F:
        assert job.attempt == before.attempt + 1
        assert job.error is None
    else:
        assert job.attempt == before.attempt
        assert job.error == before.error
    if target is R:
        expected_start = before.started_at if before.started_at is not None else now
        assert job.started_at == expected_start
    else:
        assert job.started_at == before.started_at


def test_first_start_sets_started_at() -> None:
    clock = FakeClock()
    machine = JobStateMachine(clock=clock)
    job = make_job()
    assert job.started_at is None
    machine.transition(job, R)
    assert job.started_at == clock.calls[-1]
    assert job.finished_at is None


def test_resume_keeps_started_at() -> None:
    clock = FakeClock()
    machine = JobStateMachine(clock=clock)
    job = job_in(PA, machine)
    first = job.started_at
    assert first is not None
    machine.transition(job, R)
    assert job.state is R
    assert job.started_at == first
    assert job.updated_at > first


def test_start_after_retry_keeps_first_started_at() -> None:
    clock = FakeClock()
    machine = JobStateMachine(clock=clock)
    job = job_in(F, machine)
    first = job.started_at
    machine.transition(job, P)
    machine.transition(job, R)
    assert job.started_at == first
    assert job.attempt == 1


def test_retry_increments_attempt_clears_error_and_finished_at() -> None:
    clock = FakeClock()
    machine = JobStateMachine(clock=clock)
    job = job_in(F, machine)
    job.error = JobError("TimeoutError", "took too long")
    assert job.finished_at is not None
    moved = machine.transition(job, P)  # in place: ``moved`` is ``job``
    assert moved is job
    assert moved.state is P
    assert moved.attempt == 1
    assert moved.error is None
    assert moved.finished_at is None


@pytest.mark.parametrize("target", [C, F, X], ids=lambda s: s.value)
def test_finishing_sets_finished_at(target: JobState) -> None:
    clock = FakeClock()
    machine = JobStateMachine(clock=clock)
    job = job_in(R, machine)
    machine.transition(job, target)
    assert job.finished_at == clock.calls[-1]
    assert job.started_at is not None
    assert job.started_at < job.finished_at


def test_cancel_of_pending_job_sets_finished_at_but_not_started_at() -> None:
    clock = FakeClock()
    machine = JobStateMachine(clock=clock)
    job = make_job()
    machine.transition(job, X)
    assert job.finished_at == clock.calls[-1]
    assert job.started_at is None


def test_happy_path_pending_running_completed() -> None:
    clock = FakeClock()
    machine = JobStateMachine(clock=clock)
    job = make_job()
    machine.transition(job, R)
    machine.transition(job, C)
    assert job.state is C
    assert job.is_terminal
    assert job.started_at is not None
    assert job.finished_at is not None
    assert job.created_at < job.started_at < job.finished_at


def test_pause_resume_keeps_progress() -> None:
    machine = JobStateMachine(clock=FakeClock())
    job = job_in(R, machine)
    job.progress = JobProgress(current_step=40, total_steps=100, last_checkpoint={"row": 40})
    machine.transition(job, PA)
    machine.transition(job, R)
    assert job.progress == JobProgress(40, 100, {"row": 40})


def test_retry_loop_until_exhausted() -> None:
    machine = JobStateMachine(clock=FakeClock())
    job = make_job(max_attempts=2)
    runs = 0
    while True:
        machine.transition(job, R)
        machine.transition(job, F)
        runs += 1
        if not job.can_retry:
            break
        machine.transition(job, P)
    # attempt counts retries: a job runs at most 1 + max_attempts times
    assert runs == 3
    assert job.attempt == 2
    assert job.state is F
    assert job.is_terminal


def test_injected_clock_is_used_for_every_timestamp() -> None:
    stamps = iter([T0 + timedelta(minutes=m) for m in (5, 10, 15)])
    machine = JobStateMachine(clock=lambda: next(stamps))
    job = make_job()
    machine.transition(job, R)
    assert job.started_at == job.updated_at == T0 + timedelta(minutes=5)
    machine.transition(job, PA)
    assert job.updated_at == T0 + timedelta(minutes=10)
    assert job.started_at == T0 + timedelta(minutes=5)
    machine.transition(job, X)
    assert job.finished_at == job.updated_at == T0 + timedelta(minutes=15)


def test_default_clock_is_aware_utc_now() -> None:
    machine = JobStateMachine()
    job = make_job()
    lower = datetime.now(UTC)
    machine.transition(job, R)
    upper = datetime.now(UTC)
    assert job.started_at is not None
    assert job.started_at.tzinfo is not None
    assert job.started_at.utcoffset() == timedelta(0)
    assert lower <= job.started_at <= upper


def test_transitioned_returns_a_moved_copy() -> None:
    machine = JobStateMachine(clock=FakeClock())
    job = make_job()
    before = copy.deepcopy(job)
    moved = machine.transitioned(job, R)
    assert moved is not job
    assert moved.state is R
    assert moved.started_at is not None
    assert job == before


def test_transitioned_raises_on_illegal_move() -> None:
    machine = JobStateMachine(clock=FakeClock())
    job = make_job()
    before = copy.deepcopy(job)
    with pytest.raises(InvalidStateError, match=r"^Cannot transition from pending to completed$"):
        machine.transitioned(job, C)
    assert job == before


# --------------------------------------------------------------------------------------------
# The machine: illegal moves


@pytest.mark.parametrize("pair", ILLEGAL_PAIRS, ids=pair_id)
def test_every_illegal_transition_raises_and_changes_nothing(
    pair: tuple[JobState, JobState],
) -> None:
    source, target = pair
    machine = JobStateMachine(clock=FakeClock())
    job = job_in(source, machine)
    if source is F:
        job.error = JobError("ValueError", "boom")
    before = copy.deepcopy(job)

    assert not machine.can_transition(job, target)
    with pytest.raises(InvalidStateError) as info:
        machine.transition(job, target)

    message = str(info.value)
    expected = f"Cannot transition from {source.value} to {target.value}"
    assert message == expected or message.startswith(expected + ": ")
    assert info.value.from_state == source.value
    assert info.value.to_state == target.value
    assert isinstance(info.value, ConveyorError)
    assert job == before


def test_there_are_27_illegal_pairs() -> None:
    assert len(ILLEGAL_PAIRS) == 36 - 10
    assert (C, R) in ILLEGAL_PAIRS
    assert (F, R) in ILLEGAL_PAIRS
    assert (PA, C) in ILLEGAL_PAIRS


def test_spec_example_message() -> None:
    machine = JobStateMachine(clock=FakeClock())
    job = job_in(C, machine)
    with pytest.raises(InvalidStateError) as info:
        machine.transition(job, R)
    assert str(info.value) == "Cannot transition from completed to running"


@pytest.mark.parametrize("source", list(JobState), ids=lambda s: s.value)
def test_nothing_but_a_retry_or_a_snooze_enters_pending(source: JobState) -> None:
    machine = JobStateMachine(clock=FakeClock())
    job = job_in(source, machine)
    assert machine.can_transition(job, P) == (source in (F, R))


# --------------------------------------------------------------------------------------------
# The retry guard


@pytest.mark.parametrize(("attempt", "max_attempts"), [(3, 3), (4, 3), (0, 0), (1, 1)])
def test_retry_guard_refuses_exhausted_job(attempt: int, max_attempts: int) -> None:
    machine = JobStateMachine(clock=FakeClock())
    job = job_in(F, machine, max_attempts=max_attempts)
    job.attempt = attempt
    job.error = JobError("ValueError", "boom")
    before = copy.deepcopy(job)

    assert not machine.can_transition(job, P)
    with pytest.raises(InvalidStateError) as info:
        machine.transition(job, P)
    assert str(info.value).startswith("Cannot transition from failed to pending: ")
    assert job == before
    # the exhausted failure keeps its error and is terminal
    assert job.error == JobError("ValueError", "boom")
    assert job.is_terminal
    assert not job.can_retry
    assert job.legal_actions == ["requeue"]


@pytest.mark.parametrize(("attempt", "max_attempts"), [(0, 3), (2, 3), (0, 1), (9, 10)])
def test_retry_guard_allows_job_with_attempts_left(attempt: int, max_attempts: int) -> None:
    machine = JobStateMachine(clock=FakeClock())
    job = job_in(F, machine, max_attempts=max_attempts)
    job.attempt = attempt
    assert not job.is_terminal
    assert job.can_retry
    assert machine.can_transition(job, P)
    machine.transition(job, P)
    assert job.attempt == attempt + 1
    assert job.state is P


def test_exhausted_failed_job_cannot_move_anywhere() -> None:
    machine = JobStateMachine(clock=FakeClock())
    job = job_in(F, machine, max_attempts=0)
    for target in JobState:
        assert not machine.can_transition(job, target)
        with pytest.raises(InvalidStateError):
            machine.transition(job, target)


# --------------------------------------------------------------------------------------------
# The model


@pytest.mark.parametrize(
    ("state", "overrides", "actions"),
    [
        (P, {}, ["cancel"]),
        (R, {}, ["pause", "cancel"]),
        (R, {"pause_requested": True}, ["resume", "cancel"]),
        (R, {"cancel_requested": True}, []),
        (R, {"pause_requested": True, "cancel_requested": True}, []),
        (PA, {}, ["resume", "cancel"]),
        (PA, {"resume_requested": True}, ["cancel"]),
        (C, {}, ["requeue"]),
        (X, {}, ["requeue"]),
        (F, {}, ["retry"]),
        (F, {"max_attempts": 0}, ["requeue"]),
    ],
    ids=[
        "pending",
        "running",
        "running-pause-requested",
        "running-cancel-requested",
        "running-both-requested",
        "paused",
        "paused-resume-requested",
        "completed",
        "cancelled",
        "failed-retryable",
        "failed-exhausted",
    ],
)
def test_legal_actions(state: JobState, overrides: dict[str, object], actions: list[str]) -> None:
    job = job_in(state, JobStateMachine(clock=FakeClock()), **overrides)
    assert job.legal_actions == actions


@pytest.mark.parametrize("state", list(JobState), ids=lambda s: s.value)
def test_is_terminal_and_can_retry_by_state(state: JobState) -> None:
    job = job_in(state, JobStateMachine(clock=FakeClock()))
    assert job.is_terminal == (state in (C, X))
    assert job.can_retry == (state is F)


def test_failed_job_becomes_terminal_when_attempts_run_out() -> None:
    job = job_in(F, JobStateMachine(clock=FakeClock()), max_attempts=3)
    job.attempt = 2
    assert (job.is_terminal, job.can_retry) == (False, True)
    job.attempt = 3
    assert (job.is_terminal, job.can_retry) == (True, False)


def test_job_defaults() -> None:
    job = Job(id="j")
    assert job.state is P
    assert job.attempt == 0
    assert job.max_attempts == 3
    assert job.started_at is None
    assert job.finished_at is None
    assert job.progress == JobProgress()
    assert job.created_at.tzinfo is not None


def test_job_to_dict_reports_state_and_actions() -> None:
    job = job_in(R, JobStateMachine(clock=FakeClock()))
    data = job.to_dict()
    assert data["state"] == "running"
    assert data["legal_actions"] == ["pause", "cancel"]
    assert data["is_terminal"] is False
    assert data["started_at"] == job.started_at.isoformat()  # type: ignore[union-attr]
    assert data["finished_at"] is None


@pytest.mark.parametrize(
    ("current", "total", "percent"),
    [
        (0, 0, 0.0),
        (7, 0, 0.0),
        (0, 10, 0.0),
        (1, 4, 25.0),
        (50, 100, 50.0),
        (100, 100, 100.0),
        (150, 100, 100.0),
        (10**9, 1, 100.0),
    ],
)
def test_progress_percent(current: int, total: int, percent: float) -> None:
    assert JobProgress(current_step=current, total_steps=total).percent == pytest.approx(percent)


def test_progress_to_dict_rounds_percent() -> None:
    progress = JobProgress(current_step=1, total_steps=3, last_checkpoint={"cursor": "abc"})
    assert progress.to_dict() == {
        "current_step": 1,
        "total_steps": 3,
        "percent": 33.33,
        "last_checkpoint": {"cursor": "abc"},
    }


def test_job_error_str() -> None:
    assert str(JobError("ValueError", "bad month")) == "ValueError: bad month"
    assert str(JobError("KeyboardInterrupt", "")) == "KeyboardInterrupt"


# --------------------------------------------------------------------------------------------
# The diagram


def test_mermaid_diagram_has_one_line_per_row() -> None:
    text = mermaid_diagram()
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    edge_lines = [line for line in lines if "-->" in line and "[*]" not in line]
    assert len(edge_lines) == len(TRANSITION_TABLE)
    for source, target, name, _ in TABLE_ROWS:
        matching = [line for line in lines if line.strip() == f"{source} --> {target}: {name}"]
        assert len(matching) == 1, (source, target)


def test_mermaid_diagram_marks_start_and_final_states() -> None:
    lines = [line.strip() for line in mermaid_diagram().splitlines()]
    assert sum(line.startswith("[*] --> pending") for line in lines) == 1
    assert "completed --> [*]" in lines
    assert "cancelled --> [*]" in lines
    assert not any(line.startswith("failed --> [*]") for line in lines)


def test_mermaid_diagram_of_custom_rows() -> None:
    rows = [find_transition(P, R)]
    assert rows[0] is not None
    text = mermaid_diagram([r for r in rows if r is not None])
    edges = [line for line in text.splitlines() if "-->" in line and "[*]" not in line]
    assert edges == ["    pending --> running: start"]
