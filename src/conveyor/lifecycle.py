"""The job lifecycle as data: states, the one table of transitions, and the pure state machine.

Everything else that knows about legal moves — the stores' compare-and-set updates, the CLI's and
dashboard's list of actions, the diagram in the docs — derives from :data:`TRANSITION_TABLE`
here. This module does no I/O and reads no clock: time is passed in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from conveyor.errors import InvalidStateError

if TYPE_CHECKING:
    from conveyor.model import Job


class JobState(StrEnum):
    """The six states; values are the lowercase strings stored in the database."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Transition:
    """One row of the lifecycle table: a named move from one state to another."""

    name: str
    source: JobState
    target: JobState
    trigger: str
    guard: str
    event: str


S = JobState
#: The lifecycle, row by row, exactly as SPEC section 1 gives it.
TRANSITION_TABLE: tuple[Transition, ...] = (
    Transition("start", S.PENDING, S.RUNNING, "start()", "a worker slot is free", "JobStarted"),
    Transition("cancel", S.PENDING, S.CANCELLED, "cancel()", "", "JobCancelled"),
    Transition("pause", S.RUNNING, S.PAUSED, "pause()", "at a checkpoint", "JobPaused"),
    Transition("complete", S.RUNNING, S.COMPLETED, "job returned", "", "JobCompleted"),
    Transition("fail", S.RUNNING, S.FAILED, "job raised / timed out / worker lost", "",
               "JobFailed"),
    Transition("cancel", S.RUNNING, S.CANCELLED, "cancel()", "at a checkpoint or after grace",
               "JobCancelled"),
    Transition("resume", S.PAUSED, S.RUNNING, "resume()", "a worker slot is free", "JobResumed"),
    Transition("cancel", S.PAUSED, S.CANCELLED, "cancel() / pause timeout", "", "JobCancelled"),
    Transition("retry", S.FAILED, S.PENDING, "retry()", "attempt < max_attempts", "JobRetried"),
)
del S

#: ``{from: {to, ...}}`` as in the seed; derived from the table, never typed twice.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    state: frozenset(t.target for t in TRANSITION_TABLE if t.source is state) for state in JobState
}

#: States no job ever leaves (a failed job is terminal too once its attempts are used up).
FINAL_STATES: frozenset[JobState] = frozenset(
    state for state, targets in TRANSITIONS.items() if not targets
)


def find_transition(source: JobState, target: JobState) -> Transition | None:
    """The table's row for ``source -> target``, or None when the move is illegal."""
    for row in TRANSITION_TABLE:
        if row.source is source and row.target is target:
            return row
    return None


def sources_of(target: JobState) -> frozenset[JobState]:
    """Every state from which ``target`` can be reached: the stores' ``state IN (...)`` guard."""
    return frozenset(t.source for t in TRANSITION_TABLE if t.target is target)


def transition_error(source: JobState, target: JobState, why: str = "") -> InvalidStateError:
    """The one wording of an illegal move, so every layer says the same thing."""
    message = f"Cannot transition from {source.value} to {target.value}"
    if why:
        message += f": {why}"
    return InvalidStateError(message, from_state=source.value, to_state=target.value)


def guard_failure(
    source: JobState, target: JobState, *, attempt: int, max_attempts: int
) -> str | None:
    """Why a move the table lists is still refused for this job, or None when it is allowed."""
    if target not in TRANSITIONS[source]:
        return ""
    if source is JobState.FAILED and target is JobState.PENDING and attempt >= max_attempts:
        return f"attempts exhausted ({attempt} of {max_attempts} retries used)"
    return None


def is_terminal(state: JobState, *, attempt: int, max_attempts: int) -> bool:
    """Completed and cancelled always; failed once no retry is left."""
    if state in FINAL_STATES:
        return True
    return state is JobState.FAILED and attempt >= max_attempts


def legal_targets(state: JobState, *, attempt: int, max_attempts: int) -> frozenset[JobState]:
    """The states a job can move to now, guards included."""
    return frozenset(
        t
        for t in TRANSITIONS[state]
        if guard_failure(state, t, attempt=attempt, max_attempts=max_attempts) is None
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class JobStateMachine:
    """The seed's pure, in-memory machine, with the retry guard enforced.

    The stores do not call this class: they compile the same table into conditional updates.
    It serves in-memory use (tests, the eager testing mode) and as the executable reference
    that the stores' behaviour is checked against.
    """

    TRANSITIONS: Mapping[JobState, frozenset[JobState]] = TRANSITIONS

    def __init__(self, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock

    def can_transition(self, job: Job, to_state: JobState) -> bool:
        """Whether ``job`` may move to ``to_state`` now (table and guards)."""
        return (
            guard_failure(job.state, to_state, attempt=job.attempt, max_attempts=job.max_attempts)
            is None
        )

    def transition(self, job: Job, to_state: JobState) -> Job:
        """Move ``job`` to ``to_state`` in place and apply the row's side effects.

        Raises :class:`InvalidStateError` naming both states, and leaves ``job`` untouched,
        when the move is illegal.
        """
        why = guard_failure(job.state, to_state, attempt=job.attempt, max_attempts=job.max_attempts)
        if why is not None:
            raise transition_error(job.state, to_state, why)
        now = self._clock()
        job.state = to_state
        if to_state is JobState.RUNNING and job.started_at is None:
            job.started_at = now
        if to_state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
            job.finished_at = now
        if to_state is JobState.PENDING:
            job.attempt += 1
            job.error = None
            job.finished_at = None
        job.updated_at = now
        return job

    def transitioned(self, job: Job, to_state: JobState) -> Job:
        """Like :meth:`transition` but returns a moved copy and leaves ``job`` as it was."""
        return self.transition(copy.deepcopy(job), to_state)


def mermaid_diagram(rows: Iterable[Transition] = TRANSITION_TABLE) -> str:
    """The lifecycle as a Mermaid state diagram; the docs embed this text verbatim."""
    lines = ["stateDiagram-v2", "    [*] --> pending: enqueue()"]
    for row in rows:
        lines.append(f"    {row.source.value} --> {row.target.value}: {row.name}")
    lines.extend(f"    {s.value} --> [*]" for s in sorted(FINAL_STATES, key=lambda s: s.value))
    return "\n".join(lines)
