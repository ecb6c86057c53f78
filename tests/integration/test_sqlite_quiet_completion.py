"""A worker's change of one job alone (``finish_and_claim`` with ``landed_rows`` False, a
one-slot worker's completion every time) runs without RETURNING (``complete_one``: the
UPDATE, its rowcount, the row read back by ``select_landed``); it must write and answer what
the RETURNING statement (``landed_rows`` True) does: the same rows, the same history, the
same refusals when the lease is lost.

Each case is built once, copied, and its change applied once each way on the two copies.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor import transitions
from conveyor.changes import Change, Lease
from conveyor.model import Job, JobError
from conveyor.stores.base import Landed
from conveyor.stores.sqlite import SQLiteStore
from tests.conftest import FakeClock
from tests.contract.helpers import claim_one, insert, lease_of

_Case = Callable[[SQLiteStore], Change]


def _complete(store: SQLiteStore) -> Change:
    job = claim_one(store)
    return transitions.complete(lease_of(job), {"ok": 1}, "w")


def _fail(store: SQLiteStore) -> Change:
    job = claim_one(store)
    return transitions.fail(lease_of(job), job.id, JobError("E", "boom"), "raised", "w")


def _fail_cancel_requested(store: SQLiteStore) -> Change:
    """Refused: a cancel requested before the job raised wins (``unless_flag``)."""
    change = _fail(store)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (change.job_id,))
    return change


def _lost_token(store: SQLiteStore) -> Change:
    job = claim_one(store)
    return transitions.complete(Lease(job.id, "not-the-token", job.attempt), None, "w")


def _lost_attempt(store: SQLiteStore) -> Change:
    job = claim_one(store)
    assert job.lease_token is not None
    return transitions.complete(Lease(job.id, job.lease_token, job.attempt + 1), None, "w")


def _no_such_job(store: SQLiteStore) -> Change:
    claim_one(store)
    return transitions.complete(Lease("no-such-job", "token", 1), None, "w")


def _with_dependents(store: SQLiteStore) -> Change:
    """A job others wait for (see :func:`_jobs`): its whole row comes back, and its
    dependent is released."""
    return _complete(store)


def _apply(path: Path, make: _Case, rows: bool) -> tuple[Any, list[tuple[Any, ...]],
                                                         list[tuple[Any, ...]], list[str]]:
    store = SQLiteStore(f"sqlite:///{path}", clock=FakeClock(1_900_000_000.0))
    store.migrate()
    change = make(store)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    (done,), claimed = store.finish_and_claim([change], "w", queues=(), job_types=(), limit=0,
                                              lease_seconds=30.0, landed_rows=rows)
    store._conn.set_trace_callback(None)
    assert claimed == []
    jobs = [tuple(row) for row in store._conn.execute("SELECT * FROM jobs ORDER BY seq")]
    history = [tuple(row) for row in store._conn.execute("SELECT * FROM job_history ORDER BY id")]
    store.close()
    return done, jobs, history, statements


@pytest.mark.parametrize("make", [_complete, _fail, _fail_cancel_requested, _lost_token,
                                  _lost_attempt, _no_such_job, _with_dependents])
def test_one_change_without_returning_writes_what_the_returning_statement_writes(
        tmp_path: Path, make: _Case) -> None:
    _jobs(tmp_path / "quiet.db", make is _with_dependents)
    shutil.copy(tmp_path / "quiet.db", tmp_path / "whole.db")
    quiet, quiet_jobs, quiet_history, statements = _apply(tmp_path / "quiet.db", make, False)
    whole, whole_jobs, whole_history, _ = _apply(tmp_path / "whole.db", make, True)
    # the lease tokens differ (random at each claim): everything else is the same
    assert _without_tokens(quiet_jobs) == _without_tokens(whole_jobs)
    assert quiet_history == whole_history
    bare = ["\n".join(line for line in s.splitlines() if not line.lstrip().startswith("--"))
            for s in statements]  # without their comments
    writes = [s for s in bare if "UPDATE jobs SET" in s]
    assert writes and all("RETURNING" not in s for s in writes)
    if whole is None:
        assert quiet is None
    elif make is _with_dependents:  # read in full: its dependents' release is in it
        assert isinstance(quiet, Job) and isinstance(whole, Job)
        assert (quiet.id, quiet.state, quiet.attempt) == (whole.id, whole.state, whole.attempt)
    else:
        assert quiet is Landed.LANDED


def _jobs(path: Path, dependent: bool) -> None:
    """A store with two pending jobs (the case claims the first), and a third that waits for
    the first when ``dependent``."""
    store = SQLiteStore(f"sqlite:///{path}", clock=FakeClock(1_800_000_000.0))
    store.migrate()
    first = insert(store, "t")
    insert(store, "t")
    if dependent:
        insert(store, "t", depends_on=(first.id,))
    store.close()


def _without_tokens(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(value if not (isinstance(value, str) and len(value) == 32) else "token"
                  for value in row) for row in rows]
