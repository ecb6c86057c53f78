"""The verbs table: well formed, consistent with the transition table, and what the model offers."""

from __future__ import annotations

import itertools

import pytest

from conveyor import events
from conveyor.lifecycle import (
    TRANSITIONS,
    VERB_TABLE,
    VERBS,
    Effect,
    JobState,
    Verb,
    legal_verbs,
    verb_refusal,
    verb_rule,
)
from conveyor.model import Job

#: The move each effect asks for, to be checked against the transition table.
ASKS_FOR = {Effect.REQUEST_PAUSE: JobState.PAUSED, Effect.REQUEST_RESUME: JobState.RUNNING,
            Effect.REQUEST_CANCEL: JobState.CANCELLED, Effect.CANCEL_NOW: JobState.CANCELLED,
            Effect.RETRY_NOW: JobState.PENDING}


def every_situation() -> list[Job]:
    """Every state x request flags x retry left, reachable or not."""
    jobs = []
    for state, flags, attempt in itertools.product(JobState, itertools.product([False, True],
                                                                               repeat=3), (0, 1)):
        pause, cancel, resume = flags
        jobs.append(Job(id="j", state=state, attempt=attempt, max_attempts=1,
                        pause_requested=pause, cancel_requested=cancel, resume_requested=resume))
    return jobs


def test_no_two_rows_of_a_verb_match_one_job() -> None:
    for job, verb in itertools.product(every_situation(), Verb):
        matching = [rule for rule in VERB_TABLE if rule.verb is verb and rule.matches(job)]
        assert len(matching) <= 1, (job, matching)


def test_every_row_asks_for_a_move_the_transition_table_has() -> None:
    for rule in VERB_TABLE:
        if rule.effect in ASKS_FOR:
            for state in rule.states:
                assert ASKS_FOR[rule.effect] in TRANSITIONS[state], rule


def test_every_event_named_is_an_event_class() -> None:
    for rule in VERB_TABLE:
        assert (rule.event == "") == (rule.effect is Effect.NOTHING)
        if rule.event:
            assert isinstance(getattr(events, rule.event), type)


def test_every_verb_has_a_spec_and_a_row() -> None:
    assert set(VERBS) == set(Verb) == {rule.verb for rule in VERB_TABLE}
    assert [verb for verb in Verb if VERBS[verb].copies] == [Verb.REQUEUE]


def test_requeue_is_offered_exactly_for_terminal_jobs() -> None:
    for job in every_situation():
        assert (Verb.REQUEUE in legal_verbs(job)) == job.is_terminal


def test_a_repeated_request_succeeds_but_is_not_offered() -> None:
    running = Job(id="j", state=JobState.RUNNING, pause_requested=True)
    rule = verb_rule(Verb.PAUSE, running)
    assert rule is not None and rule.effect is Effect.NOTHING
    assert Verb.PAUSE not in legal_verbs(running)


@pytest.mark.parametrize(("job", "verb", "message"), [
    (Job(id="j", state=JobState.COMPLETED), Verb.RESUME,
     "Cannot transition from completed to running"),
    (Job(id="j", state=JobState.PENDING, cancel_requested=True), Verb.PAUSE,
     "Cannot transition from pending to paused: a cancel is already requested"),
    (Job(id="j", state=JobState.FAILED, attempt=2, max_attempts=2), Verb.RETRY,
     "Cannot transition from failed to pending: attempts exhausted (2 of 2 retries used); "
     "use requeue to run a copy"),
    (Job(id="j", state=JobState.PAUSED), Verb.REQUEUE,
     "Cannot requeue job j: it is paused, not completed, cancelled or failed for good"),
])
def test_refusal_wording(job: Job, verb: Verb, message: str) -> None:
    assert verb_rule(verb, job) is None
    error = verb_refusal(verb, job)
    assert str(error) == message
    assert error.from_state == job.state.value
