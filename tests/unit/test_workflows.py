"""Chains, groups and the dependency plan: pure functions, checked without a store."""

from __future__ import annotations

import pytest

from conveyor.dependencies import MAX_DEPENDENCIES, DependencyState, plan
from conveyor.errors import ConfigurationError, InvalidParams, JobNotFound
from conveyor.lifecycle import JobState
from conveyor.stores.base import NewJob
from conveyor.workflows import chained, grouped


def _new(n: int, *depends_on: str) -> NewJob:
    return NewJob(id=f"00000000-0000-4000-8000-{n:012d}", job_type="t", params={},
                  depends_on=depends_on)


def test_a_chain_links_each_step_to_the_one_before_and_keeps_its_own() -> None:
    a, b, c = _new(1), _new(2, "x"), _new(3)
    linked = chained([a, b, c])
    assert [n.depends_on for n in linked] == [(), ("x", a.id), (b.id,)]
    with pytest.raises(ConfigurationError):
        chained([])


def test_a_group_s_final_job_depends_on_every_member_and_is_bounded() -> None:
    members = [_new(1), _new(2)]
    *same, final = grouped(members, _new(9))
    assert same == members and final.depends_on == (members[0].id, members[1].id)
    assert grouped(members, None) == members
    with pytest.raises(InvalidParams, match="at most"):
        grouped([_new(n) for n in range(MAX_DEPENDENCIES + 1)], _new(0))
    with pytest.raises(ConfigurationError):
        grouped([], _new(9))


def test_the_plan_counts_unfinished_dependencies_and_refuses_self_and_unknown() -> None:
    found = {"done": DependencyState(JobState.COMPLETED, 0, 3),
             "busy": DependencyState(JobState.RUNNING, 0, 3),
             "retrying": DependencyState(JobState.FAILED, 1, 3),
             "dead": DependencyState(JobState.FAILED, 3, 3)}
    assert plan("me", ["done", "busy", "retrying"], found, "cancel").waiting_on == 2
    assert plan("me", ["busy", "dead"], found, "cancel").cancel_reason == "dependency dead failed"
    assert plan("me", ["busy", "dead"], found, "run") == plan("me", ["busy"], found, "run")
    with pytest.raises(InvalidParams, match="itself"):
        plan("me", ["me"], {"me": found["busy"]}, "cancel")
    with pytest.raises(JobNotFound, match="no stored job: nope"):
        plan("me", ["done", "nope"], found, "cancel")
