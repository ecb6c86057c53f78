"""The core's vocabulary of changes, and the one-way lean between the core and the stores.

A store compiles changes; it never decides what a transition writes. These tests keep it so:
the claim a store writes comes from the core (``ClaimStart``), the compilers refuse a column
or a flag that is not on the core's whitelists, and no store module imports the core's
policy (transitions, the app, the worker).
"""

from __future__ import annotations

import ast
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest

from conveyor import transitions
from conveyor.changes import (
    CLAIM_ACTIONS,
    JSON_COLUMNS,
    REQUEST_FLAGS,
    SETTABLE_COLUMNS,
    Change,
    ClaimStart,
    DbNow,
    FirstTime,
    FreshToken,
    Increment,
    Lease,
    marker_kind,
    shape_key,
)
from conveyor.lifecycle import JobState
from conveyor.model import JobError, JobProgress
from conveyor.stores.sqlite import changes as sqlite_changes
from conveyor.stores.sqlite.changes import change_shape, compile_batch, compile_change
from conveyor.stores.sqlite.store import _Q

S = JobState


def test_a_claim_from_pending_starts_and_from_paused_resumes() -> None:
    claim = ClaimStart("w1", 30.0)
    start = claim.change("j1", S.PENDING, "tok")
    resume = claim.change("j1", S.PAUSED, "tok")
    assert (start.action, start.when, start.to_state, start.flag) == (
        "start", frozenset({S.PENDING}), S.RUNNING, None)
    assert (resume.action, resume.when, resume.to_state, resume.flag) == (
        "resume", frozenset({S.PAUSED}), S.RUNNING, "resume_requested")
    for change in (start, resume):
        assert change.actor == "w1"
        assert change.values["lease_token"] == "tok"
        assert change.values["lease_expires_at"] == DbNow(30.0)
        assert change.values["started_at"] == FirstTime()
        assert change.values["resume_requested"] is False
        assert "pause_requested" not in change.values  # a lost worker's pause request holds


def test_claim_values_leave_the_token_to_the_store() -> None:
    assert "lease_token" not in ClaimStart("w", 5.0).values
    assert set(CLAIM_ACTIONS) == {S.PENDING, S.PAUSED}


@pytest.mark.parametrize("source", [S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED])
def test_a_claim_cannot_start_a_job_from_another_state(source: JobState) -> None:
    with pytest.raises(ValueError, match=source.value):
        ClaimStart("w", 5.0).change("j1", source, "tok")


def _forged(**fields: Any) -> Change:
    """A Change that slipped past its own validation (frozen: forced with object.__setattr__)."""
    change = Change("j1", "x", frozenset({S.PENDING}), None, {"attempt": 1})
    for name, value in fields.items():
        object.__setattr__(change, name, value)
    return change


def test_the_sqlite_compiler_refuses_a_column_off_the_whitelist() -> None:
    bad = "state = 'completed', attempt"
    assert bad not in SETTABLE_COLUMNS
    with pytest.raises(ValueError, match="may not be set"):
        compile_change("{sets} {where}", _forged(values={bad: 1}), 0.0)


def test_the_sqlite_compiler_refuses_a_flag_off_the_whitelist() -> None:
    assert "1 = 1 OR cancel_requested" not in REQUEST_FLAGS
    with pytest.raises(ValueError, match="not a request flag"):
        compile_change("{sets} {where}", _forged(flag="1 = 1 OR cancel_requested"), 0.0)


def test_the_sqlite_compiler_binds_every_value() -> None:
    change = replace(_forged(), values={"error": {"message": "x'); DROP TABLE jobs; --"}})
    statement, args = compile_change("UPDATE jobs SET {sets} WHERE {where}", change, 7.0)
    assert "DROP" not in statement
    assert any(isinstance(a, str) and "DROP" in a for a in args)


def _imports(source: str) -> set[str]:
    """The modules ``source`` imports, and each ``from`` import's names as dotted paths."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _imports_under(package: str) -> dict[str, set[str]]:
    """What each ``.py`` file under ``package`` imports, read from its source."""
    found: dict[str, set[str]] = {}
    folders = [resources.files(package)]
    while folders:
        for entry in folders.pop().iterdir():
            if entry.is_dir():
                folders.append(entry)
            elif entry.name.endswith(".py"):
                found[str(entry)] = _imports(entry.read_text(encoding="utf-8"))
    return found


def test_no_store_imports_the_cores_policy() -> None:
    modules = _imports_under("conveyor.stores")
    read = {path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1] for path in modules}
    assert {"sqlite/store.py", "postgres/store.py", "sqlite/changes.py", "stores/base.py"} <= read
    policy = ("conveyor.transitions", "conveyor.app", "conveyor.worker", "conveyor.retry")
    leaks = {path: sorted(n for n in names if n.startswith(policy))
             for path, names in modules.items()}
    assert {path: names for path, names in leaks.items() if names} == {}


def test_the_vocabulary_of_changes_imports_no_store() -> None:
    source = resources.files("conveyor").joinpath("changes.py").read_text(encoding="utf-8")
    assert not [name for name in _imports(source) if name.startswith("conveyor.stores")]


def test_sqlite_batches_same_shaped_changes_into_one_statement_reading_each_rows_values(
) -> None:
    changes = [transitions.complete(Lease(f"job-{n}", f"token-{n}", 7 + n), {"n": n}, "w")
               for n in range(3)]
    shaped = [change_shape(c, 100.0, {"result": str(n)}) for n, c in enumerate(changes)]
    assert len({shape for shape, _ in shaped}) == 1
    statement, args = compile_batch(_Q["apply_change_batch"], shaped[0][0],
                                    [row for _, row in shaped])
    head, values = statement.split("VALUES")
    assert "?" not in head and values.count("?") == len(args) == 3 * len(shaped[0][1])
    assert "lease_token = batch.column" in statement and "attempt = batch.column" in statement
    width = len(shaped[0][1])
    for n in range(3):  # each VALUES row carries its own job's id, token and attempt
        row = args[n * width:(n + 1) * width]
        assert {f"job-{n}", f"token-{n}", 7 + n, str(n)} <= set(row)
        assert not {f"job-{m}" for m in range(3) if m != n} & set(row)
    with pytest.raises(ValueError, match="placeholder"):
        compile_batch(_Q["apply_change_batch"], shaped[0][0], [shaped[0][1][:-1]])


def _changes_of_every_kind() -> list[Change]:
    """Changes of many structures, each made twice (other values, same structure)."""
    made: list[Change] = []
    for n in (1, 2):
        lease = Lease(f"job-{n}", f"token-{n}", n)
        steps = JobProgress(n, 10, {"at": n})
        error = JobError("E", f"boom {n}")
        made += [
            transitions.complete(lease, {"n": n}, "w"),
            transitions.complete(lease, None, "w", progress=steps),
            transitions.fail(lease, lease.job_id, error, "raised", "w"),
            transitions.fail(None, lease.job_id, error, "lost", "reaper", lease_expired=True,
                             close_budget=n),
            transitions.snooze(lease, 2.5 * n, steps, "w"),
            transitions.pause_at_checkpoint(lease, steps, "w", resume=n == 2),
            transitions.cancel_idle(f"job-{n}", S.PAUSED, "op", "why", pause_expired=n == 1),
            transitions.request(f"job-{n}", "cancel_requested", n == 1,
                                frozenset({S.RUNNING, S.PAUSED}), "op", ""),
            transitions.retry(f"job-{n}", "op", "again", delay=n, keep_place=n == 2),
            transitions.run_now(f"job-{n}", "op", "now"),
            transitions.reschedule(f"job-{n}", "op", "", run_at=datetime(2030, 1, n, tzinfo=UTC),
                                   priority=n),
            ClaimStart("w", 30.0 * n).change(f"job-{n}", S.PAUSED, FreshToken()),
            replace(_forged(), values={"attempt": Increment(n), "priority": n},
                    due=True, unless_flag="cancel_requested"),
            # a completion's plain values of every type a caller may give (one shape)
            replace(transitions.complete(lease, [n, "x"], "w"), values={
                **transitions.complete(lease, None, "w").values,
                "result": [n, "x"], "cancel_requested": n == 1, "pause_requested": n,
                "worker_id": _When(2030, 1, n, tzinfo=UTC), "lease_token": f"t{n}",
                "lease_expires_at": _Later(n)}),  # a marker's subclass is the marker
        ]
    return made


class _Later(DbNow):
    """A marker's subclass: compiled as the marker."""


class _When(datetime):
    """A datetime's subclass: bound as a datetime."""


def _uncached(change: Change, now: float, json_values: dict[str, Any]
              ) -> tuple[tuple[str, str], list[Any]]:
    sets, set_args = sqlite_changes._assignments(change, now, json_values)
    where, where_args = sqlite_changes._guards(change, now)
    return (", ".join(sets), " AND ".join(where)), [*set_args, *where_args]


def test_sqlite_shapes_compiled_once_give_what_compiling_each_change_gives() -> None:
    for now in (10.0, 20.5):
        for change in _changes_of_every_kind():
            json_values = {c: sqlite_changes.encode_json(c, v) for c, v in change.values.items()
                           if c in JSON_COLUMNS}
            for given in (json_values, {}):
                shaped = change_shape(change, now, given)
                assert shaped == _uncached(change, now, given)
                # equal as bound: 0 for False, not False (sqlite3 binds both alike, but the
                # compiled arguments are what the plain compiler gives, type and all)
                assert ([type(arg) for arg in shaped[1]]
                        == [type(arg) for arg in _uncached(change, now, given)[1]])
            shape, args = _uncached(change, now, {})
            assert compile_change("{sets} | {where}", change, now) == (
                f"{shape[0]} | {shape[1]}", args)
            statement, claim_args = sqlite_changes.compile_claim(
                "{sets} | {where}", change, ["a", "b"], now)
            assert statement == f"{shape[0]} | id IN (?,?){shape[1][len('id = ?'):]}"
            assert claim_args == [*args[:args.index(change.job_id)], "a", "b",
                                  *args[args.index(change.job_id) + 1:]]
    assert len(sqlite_changes._SHAPES) <= sqlite_changes._MAX_SHAPES


def test_sqlite_lookup_keys_are_finer_than_shape_keys() -> None:
    """The SQLite store finds a change's shape by its own key (``lookup_key``, cheaper to
    build and hash): changes with equal lookup keys must have equal shape keys (else one
    would be compiled with the other's statement); a completion's results of several JSON
    types may make several lookup keys, all for one shape."""
    changes = _changes_of_every_kind()
    lease = Lease("j1", "tok", 1)
    changes += [transitions.complete(lease, result, "w")
                for result in (None, {"a": 1}, "done", [1, 2], 7, 2.5, True)]
    for one in changes:
        for other in changes:
            if sqlite_changes.lookup_key(one) == sqlite_changes.lookup_key(other):
                assert shape_key(one) == shape_key(other)
    completions = changes[-7:]
    # one shape for every result but None, which is written in the text (null_literal)
    assert len({sqlite_changes.prepare(c)[0][:-1] for c in completions[1:]}) == 1  # but build
    assert len({sqlite_changes.prepare(c)[0][:-1] for c in completions}) == 2
    assert len({shape_key(c) for c in completions}) == 1


def test_sqlite_writes_a_none_as_a_literal_not_a_bound_none() -> None:
    """A None is part of the statement (``NULL``; ``'{}'`` for the NOT NULL checkpoint), not
    a parameter: sqlite3 binds a None through a failed adapter lookup each. The statements
    write what binding it wrote, and the prepared and the plain compiler agree."""
    lease = Lease("j1", "tok", 3)
    changes = [transitions.complete(lease, None, "w"),
               replace(_forged(), values={"checkpoint": None, "result": None, "error": None,
                                          "worker_id": None, "priority": 4})]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id TEXT, state TEXT, lease_token TEXT, attempt INTEGER, "
                 "updated_at REAL, result TEXT, finished_at REAL, cancel_requested INTEGER, "
                 "pause_requested INTEGER, worker_id TEXT, lease_expires_at REAL, "
                 "checkpoint TEXT, error TEXT, priority INTEGER)")
    for change in changes:
        (sets, where), args = change_shape(change, 5.0, {})
        assert None not in args
        for column, value in change.values.items():
            if value is None:
                assert f"{column} = {sqlite_changes.null_literal(column)}" in sets
        shape, prepared = sqlite_changes.prepare(change)
        assert sqlite_changes.place_now(prepared, shape.now_at, 5.0) == args
        conn.execute("DELETE FROM t")
        conn.execute("INSERT INTO t VALUES (?, ?, ?, ?, 0, 'r', 0, 1, 1, 'w', 9, 'c', 'e', 0)",
                     (change.job_id, next(iter(change.when)).value,
                      change.lease.token if change.lease else None,
                      change.lease.attempt if change.lease else None))
        conn.execute(f"UPDATE t SET {sets} WHERE {where.replace('+state', 'state')}", args)
        row = conn.execute("SELECT checkpoint, result, error, worker_id FROM t").fetchone()
        expected = tuple(sqlite_changes.encode_json(column, None) if column in JSON_COLUMNS
                         else None for column in ("checkpoint", "result", "error", "worker_id"))
        kept = ("c", "r", "e", "w")
        assert row == tuple(want if column in change.values else old for column, want, old in
                            zip(("checkpoint", "result", "error", "worker_id"), expected, kept,
                                strict=True))
    assert sqlite_changes.null_literal("checkpoint") == "'{}'"
    assert sqlite_changes.null_literal("result") == "NULL"


@pytest.mark.parametrize("now", [10.0, 20.5, 1_764_620_000.123456, 0.1 + 0.2])
def test_sqlite_changes_prepared_before_the_clock_bind_what_compiling_at_it_binds(
        now: float) -> None:
    """The worker path compiles a change before its transaction reads the clock
    (``prepare``) and adds it after (``place_now``): the arguments are the same, bit for
    bit, as the change compiled at that clock; and so are a kept claim plan's."""
    for change in _changes_of_every_kind():
        shape, args = sqlite_changes.prepare(change)
        placed = sqlite_changes.place_now(list(args), shape.now_at, now)
        assert (shape.sql, placed) == change_shape(change, now, {})
        assert [type(a) for a in placed] == [type(a) for a in change_shape(change, now, {})[1]]
        for ids in (["a"], ["a", "b", "c"]):
            plan = sqlite_changes.claim_plan("{sets} | {where}", change, len(ids))
            assert ((plan.statement, plan.arguments(ids, now))
                    == sqlite_changes.compile_claim("{sets} | {where}", change, ids, now))
            assert (plan.action, plan.actor, plan.reason) == (change.action, change.actor,
                                                              change.reason)


def test_marker_kind_names_the_marker_of_each_value_and_none_for_plain_values() -> None:
    class Later(DbNow):
        """A marker's subclass is still that marker (the store compiles it as one)."""

    for value in (None, True, 3, 2.5, "x", {"a": 1}, [1], datetime.now(UTC)):
        assert marker_kind(value) is None, value
    for marker in (DbNow(), Increment(), FirstTime(), FreshToken()):
        assert marker_kind(marker) is type(marker)
    assert marker_kind(Later(5.0)) is DbNow


def test_changes_differing_in_plain_values_only_share_a_shape_and_markers_do_not() -> None:
    lease = Lease("j1", "tok", 1)
    shapes = {shape_key(transitions.complete(lease, result, "w"))
              for result in (None, {"a": 1}, "done", [1, 2], 7)}
    assert len(shapes) == 1
    plain = Change("j1", "reschedule", frozenset({S.PENDING}), None, {"run_at": datetime.now(UTC)})
    marked = replace(plain, values={"run_at": DbNow(5.0)})
    assert shape_key(plain) != shape_key(marked)
    assert shape_key(plain) != shape_key(replace(plain, values={"priority": 1}))


@pytest.mark.parametrize("source", [S.PENDING, S.PAUSED])
def test_a_claims_change_built_once_compiles_as_one_built_for_its_first_job(
        source: JobState) -> None:
    """The SQLite claim keeps its change per worker (its id is never bound): the statement
    and arguments are those of the change built for the claim's first job."""
    from conveyor.stores.sqlite.worker_path import _claim_change

    start = ClaimStart("w", 30.0)
    kept = _claim_change(start, source)
    assert kept is _claim_change(ClaimStart("w", 30.0), source)
    for ids in (["a"], ["a", "b", "c"]):
        fresh = start.change(ids[0], source, FreshToken())
        assert (sqlite_changes.compile_claim(_Q["apply_change"], kept, ids, 5.0)
                == sqlite_changes.compile_claim(_Q["apply_change"], fresh, ids, 5.0))
        assert (kept.action, kept.actor, kept.reason) == (fresh.action, fresh.actor,
                                                          fresh.reason)
