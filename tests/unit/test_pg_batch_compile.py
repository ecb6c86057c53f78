"""The PostgreSQL store writes a batch of same-shaped changes as one statement."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from conveyor import transitions
from conveyor.changes import (
    Change,
    ClaimStart,
    DbNow,
    FirstTime,
    Increment,
    Lease,
    shape_key,
)
from conveyor.lifecycle import JobState
from conveyor.model import JobError, JobProgress
from conveyor.stores.postgres import changes as changes_module
from conveyor.stores.postgres.changes import (
    Params,
    _compile,
    batch_of_shape,
    compile_batch,
    compile_change,
    compile_claim,
)
from conveyor.stores.postgres.store import _Q


def _complete(n: int, progress: JobProgress | None = None) -> Change:
    return transitions.complete(Lease(f"job-{n}", f"token-{n}", n % 2), {"n": n}, "w",
                                progress=progress)


def test_same_shaped_changes_become_one_statement_with_a_column_per_varying_value() -> None:
    changes = [_complete(n) for n in range(3)]
    assert len({shape_key(c) for c in changes}) == 1
    compiled = compile_batch(_Q["apply_change_batch"], changes)
    assert compiled is not None
    _, params = compiled
    assert params["a_job_id"] == ["job-0", "job-1", "job-2"]
    arrays = {name: values for name, values in params.items() if name.startswith("a_")}
    assert ["token-0", "token-1", "token-2"] in arrays.values()  # each row's own lease
    assert [0, 1, 0] in arrays.values()  # and attempt
    assert params["a_actor"] == ["w", "w", "w"]


def test_changes_of_different_shapes_are_not_one_statement() -> None:
    plain, with_steps = _complete(1), _complete(2, progress=JobProgress(3, 4))
    assert shape_key(plain) != shape_key(with_steps)
    assert compile_batch(_Q["apply_change_batch"], [plain, with_steps]) is None


# -- the shape cache -----------------------------------------------------------------------------

def test_same_shaped_changes_share_one_cached_statement() -> None:
    first, second = _complete(1), _complete(2)
    (one, one_params), (two, two_params) = (compile_change(_Q["apply_change"], c)
                                            for c in (first, second))
    assert one is two  # the same rendered text, compiled once
    assert (one_params["job_id"], two_params["job_id"]) == ("job-1", "job-2")
    assert "token-1" in one_params.values() and "token-2" in two_params.values()
    small = batch_of_shape(_Q["apply_change_batch"], shape_key(first), [first, second])
    large = batch_of_shape(_Q["apply_change_batch"], shape_key(first),
                           [_complete(n) for n in range(5)])
    assert small is not None and large is not None
    assert small[0] is large[0]  # one statement whatever the batch's size
    assert large[1]["a_job_id"] == [f"job-{n}" for n in range(5)]


def _variants(base: Change) -> dict[str, Change]:
    """``base`` changed in one guard, column, marker or state at a time."""
    values = dict(base.values)
    return {
        "lease": replace(base, lease=None),
        "retryable": replace(base, retryable=True),
        "lease_expired": replace(base, lease=None, lease_expired=True),
        "pause_expired": replace(base, lease=None, pause_expired=True),
        "due": replace(base, due=True),
        "flag": replace(base, flag="cancel_requested"),
        "unless_flag": replace(base, unless_flag="cancel_requested"),
        "to_state": replace(base, to_state=None),
        "when": replace(base, when=frozenset({JobState.PAUSED})),
        "column": replace(base, values={**values, "priority": 3}),
        "marker": replace(base, values={**values, "finished_at": datetime.now(UTC)}),
        "order": replace(base, values=dict(reversed(values.items()))),
    }


#: What each variant's statement must say that the base's does not (None: same text, since
#: the variant differs in a parameter only, but it is still a shape of its own).
_SAYS = {"retryable": "jobs.attempt < jobs.max_attempts", "due": "jobs.run_at <=",
         "lease_expired": "FOR UPDATE SKIP LOCKED", "pause_expired": "jobs.pause_timeout",
         "flag": '"jobs"."cancel_requested" IS TRUE',
         "unless_flag": '"jobs"."cancel_requested" IS FALSE', "column": '"priority" =',
         "lease": None, "to_state": None, "when": None, "marker": None, "order": None}


def test_a_change_differing_in_any_guard_column_or_marker_has_a_statement_of_its_own() -> None:
    base = _complete(1)
    statement, _ = compile_change(_Q["apply_change"], base)
    variants = _variants(base)
    assert set(variants) == set(_SAYS)
    keys = {shape_key(base), *(shape_key(v) for v in variants.values())}
    assert len(keys) == len(variants) + 1
    for name, variant in variants.items():
        other, other_params = compile_change(_Q["apply_change"], variant)
        says = _SAYS[name]
        if says is not None:
            assert says in other and says not in statement, name
        elif name in ("lease", "to_state", "marker", "order"):
            assert other != statement, name  # fewer or other placeholders
        assert _fresh(variant) == (other, _unwrapped(other_params)), name
        assert compile_batch(_Q["apply_change_batch"], [base, variant]) is None, name


def _fresh(change: Change) -> tuple[str, dict[str, Any]]:
    """``change`` compiled the slow way, without the cache (what the cache must give)."""
    params = Params({"job_id": change.job_id, "action": change.action,
                     "actor": change.actor, "reason": change.reason, "moment": None})
    statement = _compile(_Q["apply_change"], change, params).as_string(None)
    return statement, _unwrapped(params.values)


def _unwrapped(params: dict[str, Any]) -> dict[str, Any]:
    """JSON parameters by what they hold (their wrappers never compare equal)."""
    return {name: value.obj if isinstance(value, Jsonb) else value
            for name, value in params.items()}


def test_cached_statements_bind_what_compiling_binds() -> None:
    at = datetime(2030, 1, 2, tzinfo=UTC)
    changes = [_complete(3, JobProgress(4, 5)), _complete(4, JobProgress(6, 7)),
               transitions.fail(Lease("j", "tok", 2), "j", JobError("E", "boom"), "r", "w"),
               replace(_complete(5), values={"run_at": at, "attempt": Increment(2),
                                             "line_at": DbNow(7.5), "started_at": FirstTime()})]
    for change in changes:
        statement, params = compile_change(_Q["apply_change"], change)
        assert (statement, _unwrapped(params)) == _fresh(change)


def test_the_statement_cache_is_bounded_and_still_right_past_its_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes_module, "_cache", {})
    monkeypatch.setattr(changes_module, "CACHE_SIZE", 4)
    shapes = [replace(_complete(n), values={"priority": n, **dict.fromkeys(fields, 1)})
              for n, fields in enumerate(itertools.combinations(
                  ["current_step", "total_steps", "attempt", "max_attempts"], 2))]
    for change in shapes + shapes:
        statement, params = compile_change(_Q["apply_change"], change)
        assert len(changes_module._cache) <= 4
        assert (statement, _unwrapped(params)) == _fresh(change)


def test_a_claim_statement_is_compiled_once_per_query_and_queue_filter() -> None:
    start, other = ClaimStart("w1", 30.0), ClaimStart("w2", 5.0)
    all_queues, one_worker = (compile_claim(_Q["claim"], s, False) for s in (start, other))
    assert all_queues[0] is one_worker[0]
    assert "v2" in all_queues[1] and (all_queues[1]["v2"], one_worker[1]["v2"]) == (30.0, 5.0)
    queued, _ = compile_claim(_Q["claim"], start, True)
    assert queued is not all_queues[0] and "queue = ANY" in queued
    assert "queue = ANY" not in all_queues[0]


def test_the_worker_statements_stay_short_enough_for_psycopg_to_parse_them_once() -> None:
    """psycopg converts a statement's %(name)s placeholders once and caches the result, but
    only for statements up to 4 KB: a longer one is parsed again at every execution (a brief
    row written out column by column crossed that and cost more than it saved)."""
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

    from conveyor.stores.postgres.statements import brief_change
    from conveyor.stores.postgres.worker_path import _CHANGE_STATEMENTS

    leases = [Lease(f"job-{n}", f"token-{n}", 1) for n in range(3)]
    done = [transitions.complete(lease, {"n": 1}, "w") for lease in leases]
    for single, batched in _CHANGE_STATEMENTS.values():
        statements = [compile_change(single, done[0])[0], compile_change(single, done[1])[0]]
        batch = compile_batch(batched, done)
        assert batch is not None
        statements.append(batch[0])
        assert all(len(s.encode()) <= MAX_CACHED_STATEMENT_LENGTH for s in statements)
    brief_single, brief_batch = _CHANGE_STATEMENTS[False]
    assert "SELECT changed.whole," in brief_single and "batch_n" not in brief_single
    assert "(changed.whole).*" not in brief_single + brief_batch  # one value, not 37 columns
    assert "RETURNING jobs.*" not in brief_single and "RETURNING jobs.*" not in brief_batch
    assert "changed.batch_n" in brief_batch
    with pytest.raises(AssertionError):
        brief_change("SELECT 1")
