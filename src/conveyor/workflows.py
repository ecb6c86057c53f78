"""Chains and groups: small workflows built on ``depends_on``, enqueued in one transaction.

A chain runs its steps one after another, each once the previous one completed; a group runs
its jobs side by side, and a final job (``then``) once all of them completed, reading their
results with :meth:`~conveyor.JobContext.dependency_results`. Nothing here is stored apart
from the jobs and their dependencies: the workflow is the graph they make, so cancelling or
failing a step cancels what comes after it (unless a step asked to run anyway).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from conveyor.dependencies import MAX_DEPENDENCIES
from conveyor.errors import ConfigurationError, InvalidParams
from conveyor.stores.base import NewJob


def chained(steps: Sequence[NewJob]) -> list[NewJob]:
    """``steps`` with each one depending on the one before it (and on its own depends_on)."""
    if not steps:
        raise ConfigurationError("a chain needs at least one step")
    linked = [steps[0]]
    for new in steps[1:]:
        linked.append(_after(new, [linked[-1].id]))
    return linked


def grouped(members: Sequence[NewJob], then: NewJob | None) -> list[NewJob]:
    """``members``, then ``then`` depending on every one of them (last in the list)."""
    if not members:
        raise ConfigurationError("a group needs at least one job")
    if then is None:
        return list(members)
    if len(members) + len(then.depends_on) > MAX_DEPENDENCIES:
        raise InvalidParams(f"a group's final job may depend on at most {MAX_DEPENDENCIES} "
                            f"jobs, not {len(members) + len(then.depends_on)}")
    return [*members, _after(then, [new.id for new in members])]


def _after(new: NewJob, ids: Sequence[str]) -> NewJob:
    return dataclasses.replace(new, depends_on=(*new.depends_on,
                                                *(i for i in ids if i not in new.depends_on)))
