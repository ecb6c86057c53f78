"""Job dependencies: what an enqueue with ``depends_on`` means, decided once for every store.

A dependent job is stored pending with ``waiting_on``, the number of its dependencies not yet
completed, and is not claimable until that is zero. The stores decide nothing: they read the
dependencies' states inside the enqueue's transaction (PostgreSQL locks their rows first, so a
dependency cannot end unseen between the read and the commit) and hand them to :func:`plan`.
What a dependency's end does to its dependents is written by the schema's triggers in the same
transaction as that end (see the stores' ``0004_dependencies`` migrations).

Cycles cannot be made: a job can only depend on jobs that exist before it (or come before it in
the same ``enqueue_many`` batch), so its own id, or one not yet stored, is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from conveyor import validate
from conveyor.errors import ConfigurationError, InvalidParams, JobNotFound
from conveyor.lifecycle import JobState
from conveyor.model import Job

#: What a dependent does when a dependency is cancelled or fails for good.
ON_DEPENDENCY_FAILURE = ("cancel", "run")
#: Most dependencies one job may have.
MAX_DEPENDENCIES = 1000


@dataclass(frozen=True)
class DependencyState:
    """What :func:`plan` needs to know of a dependency, read in the enqueue's transaction."""

    state: JobState
    attempt: int
    max_attempts: int

    @property
    def failed_for_good(self) -> bool:
        """Cancelled, or failed with no retry left: it will never complete."""
        return self.state is JobState.CANCELLED or (
            self.state is JobState.FAILED and self.attempt >= self.max_attempts)


@dataclass(frozen=True)
class Plan:
    """How a new dependent starts: waiting for ``waiting_on`` jobs, or cancelled at once
    (``cancel_reason``) because a dependency already failed for good."""

    waiting_on: int
    cancel_reason: str | None = None


def linked_jobs(jobs: Iterable[Job]) -> list[dict[str, str]]:
    """A job's upstream or downstream jobs as its views list them (HTTP API, ``--json``)."""
    return [{"id": job.id, "job_type": job.job_type, "state": job.state.value} for job in jobs]


def check_depends_on(value: Iterable[str] | None) -> tuple[str, ...]:
    """The ids of ``depends_on``, each checked, duplicates dropped, order kept."""
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigurationError("depends_on must be a list of job ids, not one string")
    ids: list[str] = []
    for item in value:
        try:
            job_id = validate.job_id(item)
        except JobNotFound:
            raise InvalidParams(f"depends_on names no job: {str(item)[:100]!r}") from None
        if job_id not in ids:
            ids.append(job_id)
    if len(ids) > MAX_DEPENDENCIES:
        raise InvalidParams(f"a job may depend on at most {MAX_DEPENDENCIES} jobs, "
                            f"not {len(ids)}")
    return tuple(ids)


def check_policy(value: object) -> str:
    if value not in ON_DEPENDENCY_FAILURE:
        raise ConfigurationError("on_dependency_failure must be one of "
                                 f"{', '.join(ON_DEPENDENCY_FAILURE)}, not {value!r}")
    return str(value)


def plan(job_id: str, depends_on: Iterable[str], found: Mapping[str, DependencyState],
         policy: str) -> Plan:
    """How the new job ``job_id`` starts, given its dependencies as they are now.

    Raises (the enqueue then writes nothing) :class:`InvalidParams` for a job depending on
    itself, :class:`JobNotFound` for ids no stored job has.
    """
    ids = list(depends_on)
    if job_id in ids:
        raise InvalidParams(f"job {job_id} cannot depend on itself")
    missing = [i for i in ids if i not in found]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise JobNotFound(missing[0], f"depends_on names no stored job: {shown}")
    waiting, reason = 0, None
    for dep_id in ids:
        dep = found[dep_id]
        if dep.state is JobState.COMPLETED:
            continue
        if dep.failed_for_good:
            if policy == "cancel" and reason is None:
                ended = "was cancelled" if dep.state is JobState.CANCELLED else "failed"
                reason = f"dependency {dep_id} {ended}"
            continue
        waiting += 1
    return Plan(waiting, reason)
