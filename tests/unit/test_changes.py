"""The core's vocabulary of changes, and the one-way lean between the core and the stores.

A store compiles changes; it never decides what a transition writes. These tests keep it so:
the claim a store writes comes from the core (``ClaimStart``), the compilers refuse a column
or a flag that is not on the core's whitelists, and no store module imports the core's
policy (transitions, the app, the worker).
"""

from __future__ import annotations

import ast
from dataclasses import replace
from importlib import resources
from typing import Any

import pytest

from conveyor import transitions
from conveyor.changes import (
    CLAIM_ACTIONS,
    REQUEST_FLAGS,
    SETTABLE_COLUMNS,
    Change,
    ClaimStart,
    DbNow,
    FirstTime,
    Lease,
)
from conveyor.lifecycle import JobState
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
