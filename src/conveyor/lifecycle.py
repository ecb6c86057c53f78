"""The job lifecycle as data: states, the one table of transitions, the table of control verbs,
and the pure state machine.

Everything else that knows about legal moves — the stores' compare-and-set updates, the CLI's and
dashboard's list of actions, the diagram in the docs — derives from :data:`TRANSITION_TABLE`
here; everything that knows what an operator's verb does (``Job.legal_actions``, the app's
verbs, the CLI's commands, the HTTP routes, the docs' table) derives from :data:`VERB_TABLE`.
This module does no I/O and reads no clock: time is passed in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from conveyor.errors import UNDECODABLE_ROW, InvalidStateError

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
    # beyond SPEC section 1 (issue 10): a job puts itself back without failing, so no attempt
    # is spent and nothing is recorded as an error
    Transition("snooze", S.RUNNING, S.PENDING, "ctx.snooze()", "", "JobSnoozed"),
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


#: States a job may still leave, in table order: what "unfinished" means to ``watch``.
UNFINISHED_STATES: tuple[JobState, ...] = tuple(s for s in JobState if s not in FINAL_STATES)


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


# -- the control verbs ---------------------------------------------------------------------------
class Verb(StrEnum):
    """An operator's control verbs, in the order the CLI and the dashboard offer them."""

    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY = "retry"
    REQUEUE = "requeue"


class Effect(StrEnum):
    """What a verb does to a job, by name.

    Named, not pointing at the change constructors of :mod:`conveyor.transitions`, because
    those build the stores' ``Change`` objects and this module must stay pure (no store, no
    I/O): the app maps each effect to its constructor in one place.
    """

    NOTHING = "nothing"
    REQUEST_PAUSE = "request_pause"
    REQUEST_RESUME = "request_resume"
    WITHDRAW_PAUSE = "withdraw_pause"
    REQUEST_CANCEL = "request_cancel"
    CANCEL_NOW = "cancel_now"
    RETRY_NOW = "retry_now"
    COPY = "copy"


#: What each effect does, as the docs' verbs table says it.
EFFECT_TEXT: Mapping[Effect, str] = {
    Effect.NOTHING: "nothing: the job is returned unchanged (already requested)",
    Effect.REQUEST_PAUSE: "sets `pause_requested`; the job pauses at its next checkpoint",
    Effect.REQUEST_RESUME: "sets `resume_requested`; a worker with a free slot resumes it",
    Effect.WITHDRAW_PAUSE: "clears `pause_requested`",
    Effect.REQUEST_CANCEL: "sets `cancel_requested`; the job stops at its next checkpoint",
    Effect.CANCEL_NOW: "cancelled at once",
    Effect.RETRY_NOW: "pending now, `attempt` + 1",
    Effect.COPY: "enqueues a fresh copy whose `requeued_from` is this job",
}

@dataclass(frozen=True)
class VerbRule:
    """One row of the verbs table: in these states, with these request flags set and clear,
    (and, when ``retry_left`` is not None, with or without a retry left), the verb has this
    effect and emits this event ("" for none)."""

    verb: Verb
    states: frozenset[JobState]
    effect: Effect
    event: str
    requires: frozenset[str] = frozenset()
    excludes: frozenset[str] = frozenset()
    retry_left: bool | None = None

    def matches(self, job: Job) -> bool:
        if job.state not in self.states:
            return False
        if any(not getattr(job, flag) for flag in self.requires):
            return False
        if any(getattr(job, flag) for flag in self.excludes):
            return False
        return self.retry_left is None or self.retry_left == (job.attempt < job.max_attempts)


@dataclass(frozen=True)
class VerbSpec:
    """How a verb is refused: the move it asks for (named in the message, as every illegal
    move is), why when a request flag is in the way, and a hint after a failed guard.
    ``copies``: the verb enqueues a new job instead of acting on this one (requeue)."""

    verb: Verb
    target: JobState | None
    flag_reasons: tuple[tuple[str, str], ...] = ()
    guard_hint: str = ""
    copies: bool = False


V, E, S = Verb, Effect, JobState
_PAUSE, _CANCEL, _RESUME = "pause_requested", "cancel_requested", "resume_requested"
#: What each control verb does, situation by situation. Situations no row matches are refused.
#: No two rows of one verb match the same job (a unit test checks it).
VERB_TABLE: tuple[VerbRule, ...] = (
    VerbRule(V.PAUSE, frozenset({S.RUNNING}), E.REQUEST_PAUSE, "JobRequested",
             excludes=frozenset({_PAUSE, _CANCEL})),
    VerbRule(V.PAUSE, frozenset({S.RUNNING}), E.NOTHING, "",
             requires=frozenset({_PAUSE}), excludes=frozenset({_CANCEL})),
    VerbRule(V.RESUME, frozenset({S.PAUSED}), E.REQUEST_RESUME, "JobRequested",
             excludes=frozenset({_RESUME})),
    VerbRule(V.RESUME, frozenset({S.PAUSED}), E.NOTHING, "", requires=frozenset({_RESUME})),
    # a running job's pause request not yet honoured, or one that a lost worker's retry kept
    VerbRule(V.RESUME, frozenset({S.RUNNING, S.PENDING}), E.WITHDRAW_PAUSE, "JobRequested",
             requires=frozenset({_PAUSE}), excludes=frozenset({_CANCEL})),
    VerbRule(V.CANCEL, frozenset({S.PENDING, S.PAUSED}), E.CANCEL_NOW, "JobCancelled"),
    VerbRule(V.CANCEL, frozenset({S.RUNNING}), E.REQUEST_CANCEL, "JobRequested",
             excludes=frozenset({_CANCEL})),
    VerbRule(V.CANCEL, frozenset({S.RUNNING}), E.NOTHING, "", requires=frozenset({_CANCEL})),
    VerbRule(V.RETRY, frozenset({S.FAILED}), E.RETRY_NOW, "JobRetried", retry_left=True),
    VerbRule(V.REQUEUE, frozenset({S.COMPLETED, S.CANCELLED}), E.COPY, "JobCreated"),
    VerbRule(V.REQUEUE, frozenset({S.FAILED}), E.COPY, "JobCreated", retry_left=False),
)

VERBS: Mapping[Verb, VerbSpec] = {
    V.PAUSE: VerbSpec(V.PAUSE, S.PAUSED,
                      flag_reasons=((_CANCEL, "a cancel is already requested"),)),
    V.RESUME: VerbSpec(V.RESUME, S.RUNNING),
    V.CANCEL: VerbSpec(V.CANCEL, S.CANCELLED),
    V.RETRY: VerbSpec(V.RETRY, S.PENDING, guard_hint="; use requeue to run a copy"),
    V.REQUEUE: VerbSpec(V.REQUEUE, None, copies=True),
}
del V, E, S, _PAUSE, _CANCEL, _RESUME


def verb_rule(verb: Verb, job: Job) -> VerbRule | None:
    """The table's row for ``verb`` on ``job`` as it is now, or None when it is refused."""
    return next((rule for rule in VERB_TABLE if rule.verb is verb and rule.matches(job)), None)


def legal_verbs(job: Job) -> list[Verb]:
    """The verbs that would change something now: a refused verb is not legal, and neither
    is a repeated request (it succeeds but changes nothing, so there is nothing to offer)."""
    return [verb for verb in Verb
            if (rule := verb_rule(verb, job)) is not None and rule.effect is not Effect.NOTHING]


def verb_refusal(verb: Verb, job: Job) -> InvalidStateError:
    """The error of a refused verb: the illegal move it asks for, and why when known."""
    spec = VERBS[verb]
    if spec.target is None:
        return InvalidStateError(
            f"Cannot {verb.value} job {job.id}: it is {job.state.value}, not completed, "
            "cancelled or failed for good", from_state=job.state.value)
    why = next((text for flag, text in spec.flag_reasons if getattr(job, flag)), "")
    if not why:
        why = guard_failure(job.state, spec.target, attempt=job.attempt,
                            max_attempts=job.max_attempts) or ""
        why += spec.guard_hint if why else ""
    return transition_error(job.state, spec.target, why)


def start_refusal(job: Job, now: datetime) -> str | None:
    """Why ``job`` cannot be claimed by id at ``now`` (the store's clock), or None when it can.

    The same jobs a worker's claim takes: pending and due, or paused with a resume requested
    (a paused job nobody resumed stays paused); a row the store cannot decode is never run.
    """
    if job.error is not None and job.error.type == UNDECODABLE_ROW:
        return "its stored row cannot be decoded"
    if job.state is JobState.PENDING and job.waiting_on > 0:
        return f"waiting for {job.waiting_on} dependency job(s) to complete"
    if job.state is JobState.PENDING:
        return None if job.run_at <= now else f"not due until {job.run_at.isoformat()}"
    if job.state is JobState.PAUSED:
        return None if job.resume_requested else "resume it first"
    return ""


def verbs_markdown(rows: Iterable[VerbRule] = VERB_TABLE) -> str:
    """The verbs table as Markdown; the docs embed this text verbatim."""

    def when(rule: VerbRule) -> str:
        parts = [flag.replace("_", " ") for flag in sorted(rule.requires)]
        parts += [f"no {flag.replace('_requested', '')} requested"
                  for flag in sorted(rule.excludes)]
        if rule.retry_left is not None:
            parts.append("a retry left" if rule.retry_left else "no retry left")
        return ", ".join(parts) or "—"

    lines = ["| verb | in state | when | effect | event |", "|---|---|---|---|---|"]
    for rule in rows:
        states = ", ".join(s.value for s in JobState if s in rule.states)
        lines.append(f"| `{rule.verb.value}` | {states} | {when(rule)} | "
                     f"{EFFECT_TEXT[rule.effect]} | {rule.event or '—'} |")
    return "\n".join(lines)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class JobStateMachine:
    """The seed's pure, in-memory machine, with the retry guard enforced.

    The stores do not call this class: they compile the same table into conditional updates.
    It serves in-memory use (tests) and as the executable reference that the stores'
    behaviour is checked against. The eager testing mode (:func:`conveyor.testing.eager`)
    does not use it either: it runs jobs through a store like a worker, so that their
    history is the real one.
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
        source, job.state = job.state, to_state
        if to_state is JobState.RUNNING and job.started_at is None:
            job.started_at = now
        if to_state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
            job.finished_at = now
        if to_state is JobState.PENDING and source is JobState.FAILED:  # a snooze spends none
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
