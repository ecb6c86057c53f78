"""The decisions every client of an app takes the same way, sync or async.

:class:`~conveyor.Conveyor` and :class:`~conveyor.aio.AsyncConveyor` differ only in how they
reach the database; what a call means (which arguments are refused, what a verb does to the
job as it is, when a waiter is done, what a result is) is decided here, once.
"""

from __future__ import annotations

import builtins
import dataclasses
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from conveyor import lifecycle, transitions, validate
from conveyor.changes import Change
from conveyor.engine import Decide
from conveyor.errors import ConfigurationError, InvalidParams, JobNotCompleted
from conveyor.filters import Search, checked
from conveyor.lifecycle import Effect, JobState, Verb, transition_error
from conveyor.model import JOB_ID_PATTERN, Job
from conveyor.registry import check_seconds
from conveyor.stores.base import JobQuery

#: The largest page :meth:`Conveyor.list` returns.
MAX_PAGE = 1000


def list_query(state: JobState | str | Iterable[JobState | str] | None = None, *,
               job_type: str | Iterable[str] | None = None,
               queue: str | Iterable[str] | None = None, limit: int = 50,
               before: str | None = None, search: Search | None = None) -> JobQuery:
    """The checked query of :meth:`Conveyor.list` (every client's: sync or async), with the
    search filters of :mod:`conveyor.filters` when given.

    A ``before`` that is not an id at all is a bad option (ConfigurationError); the caller
    checks that a well-formed one names a stored job (JobNotFound otherwise).
    """
    if not isinstance(limit, int) or not 0 < limit <= MAX_PAGE:
        raise ConfigurationError(f"limit must be between 1 and {MAX_PAGE}, not {limit!r}")
    if before is not None and (not isinstance(before, str)
                               or not re.fullmatch(JOB_ID_PATTERN, before)):
        raise ConfigurationError(f"before must be a job id (the next_before of the previous "
                                 f"page), not {repr(before)[:80]}")
    query = JobQuery(
        states=frozenset(_states(state)), job_types=frozenset(_names("job type", job_type)),
        queues=frozenset(_names("queue", queue)), limit=limit, before=before)
    return query if search is None else checked(query, search)


def verb_decision(verb: Verb, job_id: str, actor: str, reason: str) -> Decide:
    """What ``verb`` does to the job as it is when applied (checked arguments first).

    A repeated request changes nothing; a refused verb raises InvalidStateError.
    """
    _control_args(job_id, actor, reason)

    def decide(job: Job) -> builtins.list[Change]:
        rule = lifecycle.verb_rule(verb, job)
        if rule is None:
            raise lifecycle.verb_refusal(verb, job)
        return changes_for(rule.effect, job, actor, reason)

    return decide


def start_decision(job_id: str, worker: str,
                   lease_seconds: float) -> Callable[[Job, datetime], builtins.list[Change]]:
    """The claim-by-id of :meth:`Conveyor.start`, decided on the job and the store's time."""
    validate.job_id(job_id)
    validate.actor(worker)
    check_seconds("lease_seconds", lease_seconds)
    token = uuid.uuid4().hex

    def decide(job: Job, now: datetime) -> builtins.list[Change]:
        why = lifecycle.start_refusal(job, now)
        if why is not None:
            raise transition_error(job.state, JobState.RUNNING, why)
        claim = transitions.start(job.id, job.state, worker, token, lease_seconds)
        # a pending job must still be due when the claim lands, not only when decided
        return [dataclasses.replace(claim, due=job.state is JobState.PENDING)]

    return decide


def has_stopped(job: Job, *, until_paused: bool) -> bool:
    """Whether a waiter for ``job`` is done: terminal, or paused for good (not resuming)."""
    return job.is_terminal or (until_paused and job.state is JobState.PAUSED
                               and not job.resume_requested)


def check_wait_timeout(timeout: float | None) -> None:
    if timeout is not None:
        check_seconds("timeout", timeout, zero_ok=True)


def result_of(job: Job) -> Any:
    """The result of a completed job; :class:`JobNotCompleted` for any other."""
    if job.state is JobState.COMPLETED:
        return job.result
    raise JobNotCompleted(job)


def _states(value: JobState | str | Iterable[JobState | str] | None) -> list[JobState]:
    if value is None:
        return []
    items = [value] if isinstance(value, JobState | str) else list(value)
    states = []
    for item in items:
        try:
            states.append(JobState(item))
        except ValueError:
            valid = ", ".join(s.value for s in JobState)
            raise InvalidParams(f"unknown state {item!r} (valid: {valid})") from None
    return states


def _names(what: str, value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    names = [value] if isinstance(value, str) else list(value)
    return [validate.name(what, name) for name in names]


def _control_args(job_id: str, actor: str, reason: str) -> None:
    """The arguments every control verb takes, refused before any store is touched."""
    validate.job_id(job_id)
    validate.actor(actor)
    validate.reason(reason)


def changes_for(effect: Effect, job: Job, actor: str, reason: str) -> list[Change]:
    """The one place a verb's effect (from the verbs table) becomes its named changes."""
    here = frozenset({job.state})
    match effect:
        case Effect.NOTHING:
            return []
        case Effect.REQUEST_PAUSE:
            return [transitions.request(job.id, "pause_requested", True, here, actor, reason)]
        case Effect.REQUEST_RESUME:
            return [transitions.request(job.id, "resume_requested", True, here, actor, reason)]
        case Effect.WITHDRAW_PAUSE:
            return [transitions.request(job.id, "pause_requested", False, here, actor, reason)]
        case Effect.REQUEST_CANCEL:
            return [transitions.request(job.id, "cancel_requested", True, here, actor, reason)]
        case Effect.CANCEL_NOW:
            return [transitions.cancel_idle(job.id, job.state, actor, reason or "cancelled")]
        case Effect.RETRY_NOW:
            return [transitions.retry(job.id, actor, reason or "manual retry")]
        case Effect.COPY:
            raise ValueError("requeue enqueues a copy: it makes no change to the job")
