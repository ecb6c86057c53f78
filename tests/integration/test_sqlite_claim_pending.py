"""The SQLite claim's usual forms (``claim_pending``'s one statement, and for one job
``claim_one``'s read of ``pending_candidates`` and UPDATE by seq) take what the plain claim
(``claim_candidates``, then the UPDATE by id) takes: the same jobs, in the same order, with
the same history rows; and they step aside whenever a limit is set or a job waits to be
resumed, so those claims are the plain ones.

Each case is built twice on two copies of one database file and claimed once with the usual
forms and once with them disabled (``claim_pending`` and ``pending_candidates`` that
match nothing).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor import transitions
from conveyor.lifecycle import JobState
from conveyor.limits import LimitRule
from conveyor.model import Job
from conveyor.stores.sqlite import SQLiteStore
from conveyor.stores.sqlite.queries import QUERIES
from tests.contract.helpers import insert, lease_of


def _mixed(store: SQLiteStore) -> None:
    """Priorities, delays, two queues, a dependency, a paused queue, another type."""
    for n in range(12):
        insert(store, "t", priority=n % 3, queue="a" if n % 2 else "b")
    insert(store, "t", queue="a", delay=3600.0)
    up = insert(store, "t", priority=9)
    insert(store, "t", priority=9, depends_on=(up.id,))
    insert(store, "t", queue="held", priority=8)
    store.set_queue_paused("held", True, actor="op", reason="")
    insert(store, "other", priority=7)


def _with_resumable(store: SQLiteStore) -> None:
    _mixed(store)
    slow = insert(store, "slow")
    (claimed,) = store.claim("w0", queues=[], job_types=["slow"], limit=1, lease_seconds=30)
    assert claimed.id == slow.id
    store.apply([transitions.pause_at_checkpoint(lease_of(claimed), claimed.progress, "w0",
                                                 resume=True)])


def _with_resumable_in_b(store: SQLiteStore) -> None:
    """A job of the claims' own type waits to be resumed, in queue b."""
    _mixed(store)
    (claimed,) = store.claim("w0", queues=["b"], job_types=["t"], limit=1, lease_seconds=30)
    store.apply([transitions.pause_at_checkpoint(lease_of(claimed), claimed.progress, "w0",
                                                 resume=True)])


def _with_limit(store: SQLiteStore) -> None:
    _mixed(store)
    store.save_type_limits(["t"], [LimitRule("type", "t", max_running=2)])


def _claims(url: str, plain: bool, monkeypatch: pytest.MonkeyPatch,
            claims: list[dict[str, Any]], asked: list[bool]) -> list[list[tuple[Any, ...]]]:
    """Each claim's jobs as :func:`_seen` shows them; ``asked``: whether each claim ran
    ``claim_candidates``."""
    store = SQLiteStore(url)
    store.migrate()
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        with monkeypatch.context() as patch:
            if plain:
                patch.setitem(QUERIES, "claim_pending",
                              QUERIES["claim_pending"].replace("RETURNING", "AND 0 RETURNING"))
                patch.setitem(QUERIES, "pending_candidates", QUERIES[
                    "pending_candidates"].replace("ORDER BY", "AND seq < 0 ORDER BY"))
            taken: list[list[tuple[Any, ...]]] = []
            for claim in claims:
                statements.clear()
                jobs = store.claim("w", lease_seconds=30, **claim)
                asked.append(any("AS source" in statement for statement in statements))
                taken.append([_seen(store, job) for job in jobs])
        return taken
    finally:
        store.close()


def _seen(store: SQLiteStore, job: Job) -> tuple[Any, ...]:
    """What a claim wrote, but for the random lease token and the clock."""
    assert job == store.get_job(job.id)
    history = [(h.action, h.from_state, h.to_state, h.attempt, h.actor, h.reason)
               for h in store.history(job.id)]
    return (job.id, job.state, job.attempt, job.worker_id, job.queue, job.priority,
            job.resume_requested, len(job.lease_token or ""), history)


@pytest.mark.parametrize("case", [_mixed, _with_resumable, _with_resumable_in_b, _with_limit])
def test_the_one_statement_claim_takes_what_the_two_statement_claim_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        case: Callable[[SQLiteStore], None]) -> None:
    first, second = tmp_path / "one.db", tmp_path / "two.db"
    store = SQLiteStore(f"sqlite:///{first}")
    store.migrate()
    case(store)
    store.close()
    shutil.copy(first, second)
    claims: list[dict[str, Any]] = [
        {"queues": [], "job_types": ["t"], "limit": 1},
        {"queues": [], "job_types": ["t", "other", "slow"], "limit": 3},
        {"queues": ["a"], "job_types": ["t"], "limit": 4},
        {"queues": ["held"], "job_types": ["t"], "limit": 2},
        {"queues": ["a", "a"], "job_types": ["t", "t"], "limit": 2},
        {"queues": ["a", "b"], "job_types": ["t"], "limit": 2},
        {"queues": [], "job_types": ["t", "other", "slow"], "limit": 50},
        {"queues": [], "job_types": ["t"], "limit": 5},
        {"queues": ["a"], "job_types": ["t"], "limit": 1},  # one job: ``id = (...)``
        {"queues": [], "job_types": ["t", "other"], "limit": 1},
        {"queues": ["b"], "job_types": ["t", "slow"], "limit": 1},
    ]
    asked: list[bool] = []
    one = _claims(f"sqlite:///{first}", False, monkeypatch, claims, asked)
    two = _claims(f"sqlite:///{second}", True, monkeypatch, claims, [])
    assert one == two
    assert any(one), "the case claims something"
    if case is _with_limit:  # every claim obeys the limit: the plain claim
        assert all(asked)
    else:  # the one-statement claim while it takes jobs; a plain one now and then
        assert not all(asked)
    if case is _mixed:
        assert not asked[0]
    elif case is _with_resumable:  # plain for the claim of its type, which resumes it first
        assert asked[1] and one[1][0][-1][-1][:3] == ("resume", JobState.PAUSED,
                                                      JobState.RUNNING)
    elif case is _with_resumable_in_b:  # the first claim (any queue, its type) resumes it
        assert asked[0] and one[0][0][-1][-1][:3] == ("resume", JobState.PAUSED,
                                                      JobState.RUNNING)


def _bare(statement: str) -> str:
    """A statement without its leading comment lines."""
    return "\n".join(line for line in statement.splitlines()
                     if not line.lstrip().startswith("--")).lstrip()


def test_a_claim_that_found_nothing_tries_one_statement_again_once_a_plain_one_could_have(
        tmp_path: Path) -> None:
    """After a claim that found nothing, the next claims are plain (an idle worker's poll,
    a store with limits: one statement each, as before) until one takes pending jobs only
    with no limit set; then they are one statement again."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)

    def claim() -> tuple[int, int]:
        statements.clear()
        taken = store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=30)
        return len(taken), sum(_bare(s).startswith(("SELECT", "UPDATE")) for s in statements)

    try:
        assert claim() == (0, 2)  # the usual claim's read, then the plain one: nothing
        assert claim() == (0, 1)  # idle: the plain claim's read alone
        insert(store, "t")
        insert(store, "t")
        assert claim() == (1, 2)  # plain: candidates, then the UPDATE by id
        assert claim() == (1, 3)  # the usual one again: read, UPDATE by seq, row read back
        store.save_type_limits(["t"], [LimitRule("type", "t", max_running=9)])
        insert(store, "t")
        assert claim()[0] == 1  # a limit set: the plain claim (limits.py) from now on
        insert(store, "t")
        assert claim()[0] == 1
        assert all("flow_limits" not in s or "AS source" in s or "UPDATE" not in s
                   for s in statements)  # claim_pending was not asked
    finally:
        store.close()


def test_a_claim_of_one_job_reads_the_head_of_the_line_then_takes_it_by_seq(
        tmp_path: Path) -> None:
    """A claim of one job (a one-slot worker's) reads its candidate, then takes it with
    ``seq = ?`` and no RETURNING (then reads the row back); one of several takes them with
    ``seq IN (subquery)``; both take the head of the line, and each the jobs the plain claim
    would (see the comparison above, which claims one job in several ways)."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        jobs = [insert(store, "t", priority=n % 2) for n in range(5)]
        in_line = [job.id for job in jobs if job.priority == 1] + [
            job.id for job in jobs if job.priority == 0]
        statements.clear()
        (first,) = store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=30)
        (update,) = [_bare(s) for s in statements if _bare(s).startswith("UPDATE")]
        assert re.search(r"WHERE seq = \d+ AND", update)  # the trace shows it bound
        assert "RETURNING" not in update and "WHERE seq IN (" not in update
        statements.clear()
        more = store.claim("w", queues=[], job_types=["t"], limit=3, lease_seconds=30)
        (update,) = [_bare(s) for s in statements if _bare(s).startswith("UPDATE")]
        assert "WHERE seq IN (" in update
        assert [first.id, *(job.id for job in more)] == in_line[:4]
        statements.clear()
        (last,) = store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=30)
        assert last.id == in_line[4]
        assert store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=30) == []
    finally:
        store.close()
