"""The SQLite store's worker path: state changes, claims, heartbeats and progress.

A mixin of :class:`~conveyor.stores.sqlite.store.SQLiteStore`, kept apart so the store module
stays about connections, schema and reads. These are the writes a worker makes for every job,
so they are the store's hot path: changes are compiled and their JSON encoded before the write
lock is taken, a worker's completions of one shape share one UPDATE, and a claim's jobs are
picked and taken by one UPDATE (``claim_pending``; one per source state after a read of the
candidates when a limit is set or a job waits to be resumed), with every history row of the
transaction written by one statement.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast

from conveyor import payload
from conveyor.changes import (
    Change,
    ChangeRefused,
    ClaimStart,
    FreshToken,
    Lease,
    distinct_jobs,
    single_job,
    wakes_workers,
)
from conveyor.errors import JobNotFound, LeaseLost
from conveyor.lifecycle import JobState
from conveyor.limits import LimitRule
from conveyor.model import Job, JobProgress
from conveyor.stores.base import Landed, Signals, landed
from conveyor.stores.sqlite.changes import (
    ClaimPlan,
    Shape,
    claim_plan,
    compile_batch,
    marks,
    place_now,
    prepare,
    single_statement,
    subquery_claim_plan,
)
from conveyor.stores.sqlite.queries import QUERIES as _Q
from conveyor.stores.sqlite.rows import decode_rows, picker, row_to_job

#: Most jobs one batched UPDATE writes (its placeholders stay far below SQLite's limit).
_BATCH_ROWS = 200


@functools.lru_cache(maxsize=64)
def candidates_statement(types: int, one_queue: bool) -> str:
    """``claim_candidates`` for ``types`` job types, from one queue or from any (each claim
    of a worker asks the same: formatted once)."""
    return _Q["claim_candidates"].format(
        job_types=marks(types), in_queue="queue = ? AND" if one_queue else "",
        pending_index="jobs_pending_queue" if one_queue else "jobs_pending_any")


_Pick = Callable[[sqlite3.Row], tuple[Any, ...]]  # a decoder's picker (rows.picker)


class _Layout(NamedTuple):
    """Where a changed row (``RETURNING``) holds what the worker path reads: its history
    row's seq, id, state and attempt, ``has_dependents``, and the picker that decodes it
    into a job (None when it lacks a job's columns)."""

    seq: int
    id: int
    state: int
    attempt: int
    has_dependents: int | None  # None: not returned (read only from ``*_landed`` rows)
    pick: _Pick | None
    order: Callable[[sqlite3.Row], tuple[Any, ...]] | None  # a claimed row's place in line


#: Layouts by the statement that returned the rows: looked up once per statement text, not
#: by each row's ``keys()`` (a list of ~37 names) at every write. An older schema's swapped
#: statement (the migration tests) is another text, so another entry.
_LAYOUTS: dict[str, _Layout] = {}
_MAX_LAYOUTS = 512


def _layout_of(statement: str, row: sqlite3.Row) -> _Layout:
    """The layout of the rows ``statement`` returns (``row`` is one of them)."""
    found = _LAYOUTS.get(statement)
    if found is None:
        keys = tuple(row.keys())
        seq, priority, line_at = (keys.index(key) if key in keys else None
                                  for key in ("seq", "priority", "line_at"))
        assert seq is not None
        found = _Layout(seq, keys.index("id"), keys.index("state"), keys.index("attempt"),
                        keys.index("has_dependents") if "has_dependents" in keys else None,
                        picker(keys), None if priority is None or line_at is None
                        else _in_line(priority, line_at, seq))
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[statement] = found
    return found


def _in_line(priority: int, line_at: int, seq: int) -> Callable[[sqlite3.Row], tuple[Any, ...]]:
    """A pending job's place in claim order, from its row (``claim_candidates``' ORDER BY)."""
    return lambda row: (-row[priority], row[line_at], row[seq])


@functools.lru_cache(maxsize=64)
def pending_plan(template: str, candidates: str, worker_id: str, lease_seconds: float,
                 types: int, one_queue: bool) -> ClaimPlan:
    """A worker's claim of pending jobs in one statement (``claim_pending``, ``template``,
    its ``{candidates}`` from ``pending_candidates``, for ``types`` job types, from one queue
    or from any), made once per worker. A claim of one job is :func:`one_job_plan`'s
    instead."""
    parts = _candidate_parts(types, one_queue)
    return subquery_claim_plan(
        template, _claim_change(ClaimStart(worker_id, lease_seconds), JobState.PENDING),
        candidates=candidates.strip().format(**parts), **parts)


class OneJobPlan(NamedTuple):
    """A worker's claim of one pending job (a one-slot worker's, every time), made once per
    worker: ``pick`` reads the head of the line (``pending_candidates``, LIMIT 1), ``claim``
    starts it by seq (``claim_seq``), then the row is read back (``select_changed``).
    ``claim_pending``'s one statement, with its RETURNING, makes SQLite build a temporary
    table for the returned row at every claim; the three statements cost less."""

    pick: str
    claim: ClaimPlan


@functools.lru_cache(maxsize=64)
def one_job_plan(template: str, candidates: str, worker_id: str, lease_seconds: float,
                 types: int, one_queue: bool) -> OneJobPlan:
    """:class:`OneJobPlan` of ``claim_seq`` (``template``, made as :func:`pending_plan`
    makes ``claim_pending``) and ``pending_candidates`` (``candidates``), for ``types`` job
    types, from one queue or from any."""
    return OneJobPlan(candidates.format(**_candidate_parts(types, one_queue)), pending_plan(
        template, candidates, worker_id, lease_seconds, types, one_queue))


def _candidate_parts(types: int, one_queue: bool) -> dict[str, str]:
    return {"job_types": marks(types), "in_queue": "queue = ? AND" if one_queue else "",
            "pending_index": "jobs_pending_queue" if one_queue else "jobs_pending_any"}


def claim_one(conn: sqlite3.Connection, plan: OneJobPlan, candidate_args: list[Any],
              now: float) -> sqlite3.Row | None:
    """The claim of one pending job by ``plan``, inside the caller's write transaction: the
    job's row as the claim left it, or None when ``pending_candidates`` finds none (with
    ``candidate_args``, its arguments but the limit) or a limit is set (``claim_seq`` then
    writes nothing). The store's, and the benchmark's floor (``bench/loops.py``), so that
    both run the same statements."""
    found = conn.execute(plan.pick, [*candidate_args, 1]).fetchone()
    if found is None:
        return None
    # the write lock is held since the read: the job is still pending, so the guards hold
    written = conn.execute(plan.claim.statement, plan.claim.arguments(found, now)).rowcount
    if not written:
        return None  # a limit is set somewhere: the claim asks claim_candidates instead
    row: sqlite3.Row = conn.execute(_Q["select_changed"], found).fetchone()
    return row


def complete_one(conn: sqlite3.Connection, shape: tuple[str, str], args: Sequence[Any],
                 job_id: str) -> sqlite3.Row | None:
    """One change of ``shape`` to job ``job_id`` alone (its ``args`` from :func:`prepare`,
    at now), as ``apply_change_landed`` writes it and with the columns it returns (None: it
    did not land), without RETURNING: SQLite builds a temporary table for a RETURNING statement's
    rows at each run, dearer than the read back of the one row (``select_landed``). Used
    where only whether the change landed matters (a worker's completion)."""
    if conn.execute(single_statement(_Q["apply_change_quiet"], shape), args).rowcount != 1:
        return None  # refused (guards: fencing by token and attempt), or no such job
    # the write lock is held: the row is as the change left it
    row: sqlite3.Row = conn.execute(_Q["select_landed"], (job_id,)).fetchone()
    return row


_PENDING = JobState.PENDING.value

#: The states a claim takes jobs from, in claim order (resumed jobs first).
_CLAIM_SOURCES = (JobState.PAUSED, JobState.PENDING)


@functools.lru_cache(maxsize=64)
def _claim_change(start: ClaimStart, source: JobState) -> Change:
    """What a claim writes on each job it takes from ``source``, built once per worker (the
    same at every claim but for the jobs' ids, which :func:`compile_claim` puts in its
    statement: the change's own id, empty here, is never bound)."""
    return start.change("", source, FreshToken())


@functools.lru_cache(maxsize=256)
def _claim_plan(template: str, worker_id: str, lease_seconds: float, source: JobState,
                count: int) -> ClaimPlan:
    """A worker's claim of ``count`` jobs from ``source``: the same statement and arguments
    at every claim but for the ids and the clock, so made once (keyed by plain values: a
    ``ClaimStart`` would be built and hashed through Python at every claim)."""
    return claim_plan(template, _claim_change(ClaimStart(worker_id, lease_seconds), source),
                      count)


def _lenient(row: sqlite3.Row) -> Job:
    """A changed row read back as a job, however it was stored (see ``row_to_job``)."""
    return row_to_job(row, lenient=True)


class _Refused(Exception):
    def __init__(self, change: Change):
        self.change = change


class _Store(Protocol):
    _one_statement_claims: bool

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def _clock(self) -> float: ...
    def notify_work(self) -> None: ...
    def get_job(self, job_id: str) -> Job: ...
    def finish_and_claim(self, finish: Sequence[Change], worker_id: str, *,
                         queues: Sequence[str], job_types: Sequence[str], limit: int,
                         lease_seconds: float, landed_rows: bool = True
                         ) -> tuple[list[Job | Landed | None], list[Job]]: ...
    def _apply_one(self, conn: sqlite3.Connection, change: Change, now: float, shape: Shape,
                   args: list[Any]) -> sqlite3.Row | None: ...
    def _apply_batch(self, conn: sqlite3.Connection, changes: Sequence[Change], now: float,
                     prepared: Sequence[tuple[Shape, list[Any]]],
                     history: list[tuple[Any, ...]], *,
                     whole_rows: bool = True) -> list[sqlite3.Row | None]: ...
    def _claim_in(self, conn: sqlite3.Connection, worker_id: str, lease_seconds: float,
                  queues: Sequence[str], job_types: Sequence[str], limit: int, now: float,
                  history: list[tuple[Any, ...]]) -> tuple[list[sqlite3.Row], _Pick | None]: ...
    def _candidates(self, conn: sqlite3.Connection, queues: Sequence[str],
                    job_types: Sequence[str], limit: int,
                    now: float) -> tuple[list[tuple[str, JobState]], bool]: ...
    def _claim_rules(self, conn: sqlite3.Connection, queues: Sequence[str],
                     job_types: Sequence[str]) -> list[LimitRule]: ...
    def _limited_candidates(self, conn: sqlite3.Connection, rules: Sequence[LimitRule],
                            queues: Sequence[str], job_types: Sequence[str], limit: int,
                            now: float) -> list[tuple[str, JobState]]: ...


class SQLiteWorkerPath:
    """Applying changes, claiming, heartbeats and progress: the writes of running jobs."""

    # -- transitions -----------------------------------------------------------------------------
    def apply(self: _Store, changes: Sequence[Change]) -> list[Job]:
        job_id = single_job(changes)
        # compiled (and JSON encoded, up to 1 MiB each) before the write lock is taken
        prepared = [prepare(c) for c in changes]
        rows: list[sqlite3.Row] = []
        try:
            with self._write() as conn:
                now = self._clock()
                for change, (shape, args) in zip(changes, prepared, strict=True):
                    # each change's own row (RETURNING, inside the transaction): the job as
                    # that change left it, not as a later change or another worker did
                    row = self._apply_one(conn, change, now, shape,
                                          place_now(args, shape.now_at, now))
                    if row is None:
                        raise _Refused(change)
                    rows.append(row)
        except _Refused as refused:
            raise ChangeRefused(refused.change, self.get_job(job_id)) from None
        if any(wakes_workers(c) for c in changes):
            self.notify_work()
        return [row_to_job(row, lenient=True) for row in rows]

    def apply_many(self: _Store, changes: Sequence[Change]) -> list[Job | None]:
        done = self.finish_and_claim(changes, "", queues=(), job_types=(), limit=0,
                                     lease_seconds=0.0)[0]
        return cast(list[Job | None], done)  # landed_rows: every landed change gives its row

    def _apply_one(self, conn: sqlite3.Connection, change: Change, now: float, shape: Shape,
                   args: list[Any]) -> sqlite3.Row | None:
        """``change`` alone (its ``args`` at ``now``, from :func:`prepare`), with its history
        row; a change allowed from several states reads the one it moves the job from."""
        if len(change.when) == 1:  # the state it came from, if it moved at all
            source = shape.states[0]
        else:
            before = conn.execute(_Q["select_state"], (change.job_id,)).fetchone()
            if before is None:
                raise JobNotFound(change.job_id)
            source = before["state"]
        row: sqlite3.Row | None = conn.execute(single_statement(_Q["apply_change"], shape.sql),
                                               args).fetchone()
        if row is None:
            return None  # refused (or no such job: the caller's read back tells which)
        conn.execute(_Q["insert_history_seq"], (
            row["seq"], change.job_id, now, change.action, source, row["state"],
            row["attempt"], change.actor, change.reason,
        ))
        return row

    def _apply_batch(self, conn: sqlite3.Connection, changes: Sequence[Change], now: float,
                     prepared: Sequence[tuple[Shape, list[Any]]],
                     history: list[tuple[Any, ...]], *,
                     whole_rows: bool = True) -> list[sqlite3.Row | None]:
        """Each change's row (None: refused), changes of one shape written by one statement
        (a worker's completions mostly share one): each row still fenced by its own guards.
        ``prepared``: each change's :func:`prepare`, its arguments not yet at ``now``.
        The history rows of those from one known state (all but changes allowed from
        several, which read theirs first and write it at once), in the order of ``changes``,
        are added to ``history`` (``insert_history_seq`` arguments) for the caller to write
        in this transaction, with the claim's: one statement.

        ``whole_rows`` False (nobody reads the rows but :func:`~conveyor.stores.base.landed`):
        a landed change's row holds only its history's columns and ``has_dependents``
        (``apply_change_landed``), except a job with dependents, read in full after its
        write. A worker's completion then costs a fifth of the columns to return and convert.
        """
        single, batched = (("apply_change", "apply_change_batch") if whole_rows
                           else ("apply_change_landed", "apply_change_batch_landed"))
        done: list[sqlite3.Row | None] = [None] * len(changes)
        layout: _Layout | None = None  # the shaped statements' rows share one column layout
        shapes: dict[tuple[str, str], list[int]] = {}
        alone: list[int] = []
        for n, (change, (shape, args)) in enumerate(zip(changes, prepared, strict=True)):
            place_now(args, shape.now_at, now)
            if len(change.when) == 1:  # a known source state, for its history row
                shapes.setdefault(shape.sql, []).append(n)
            else:
                alone.append(n)
        for sql, group in shapes.items():
            if len(group) == 1:  # the plain statement; its history row joins the others'
                n = group[0]
                if whole_rows:
                    statement = single_statement(_Q[single], sql)
                    row = done[n] = conn.execute(statement, prepared[n][1]).fetchone()
                else:  # a worker's completion of one job: without RETURNING
                    statement = _Q["select_landed"]
                    row = done[n] = complete_one(conn, sql, prepared[n][1], changes[n].job_id)
                if row is not None and layout is None:
                    layout = _layout_of(statement, row)
                continue
            for start in range(0, len(group), _BATCH_ROWS):
                part = group[start:start + _BATCH_ROWS]
                statement, flat = compile_batch(_Q[batched], sql,
                                                [prepared[n][1] for n in part])
                found = conn.execute(statement, flat).fetchall()
                if not found:
                    continue
                if layout is None:
                    layout = _layout_of(statement, found[0])
                at = layout.id
                landed = {row[at]: row for row in found}
                for n in part:
                    done[n] = landed.get(changes[n].job_id)
        for n in alone:
            shape, args = prepared[n]
            done[n] = self._apply_one(conn, changes[n], now, shape, args)
        if layout is None:
            return done
        seq, state, attempt = layout.seq, layout.state, layout.attempt
        history.extend(
            (row[seq], change.job_id, now, change.action, shape.states[0], row[state],
             row[attempt], change.actor, change.reason)
            for n, (change, row, (shape, _)) in enumerate(zip(changes, done, prepared,
                                                              strict=True))
            if row is not None and n not in alone)
        if not whole_rows:  # as the change left it: this transaction still holds the lock
            dependents = layout.has_dependents
            assert dependents is not None  # apply_change_landed returns it
            for n, row in enumerate(done):
                if row is not None and n not in alone and row[dependents]:
                    done[n] = conn.execute(_Q["select_changed"], (row[seq],)).fetchone()
        return done

    # -- workers ---------------------------------------------------------------------------------
    def claim(self: _Store, worker_id: str, *, queues: Sequence[str], job_types: Sequence[str],
              limit: int, lease_seconds: float) -> list[Job]:
        return self.finish_and_claim((), worker_id, queues=queues, job_types=job_types,
                                     limit=limit, lease_seconds=lease_seconds)[1]

    def finish_and_claim(self: _Store, finish: Sequence[Change], worker_id: str, *,
                         queues: Sequence[str], job_types: Sequence[str], limit: int,
                         lease_seconds: float, landed_rows: bool = True
                         ) -> tuple[list[Job | Landed | None], list[Job]]:
        if len(finish) > 1:
            distinct_jobs(finish)
        if not finish and (limit <= 0 or not job_types):
            return [], []
        # compiled and JSON encoded before the write lock is taken, not while holding it
        prepared = [prepare(c) for c in finish]
        history: list[tuple[Any, ...]] = []  # the batch's and the claim's: one statement
        pick = None
        with self._write() as conn:
            now = self._clock()
            done = (self._apply_batch(conn, finish, now, prepared, history,
                                      whole_rows=landed_rows) if finish else [])
            if limit > 0 and job_types:
                rows, pick = self._claim_in(conn, worker_id, lease_seconds, queues, job_types,
                                            limit, now, history)
            else:
                rows = []
            if history:
                conn.executemany(_Q["insert_history_seq"], history)
        if any(row is not None and wakes_workers(c)
               for c, row in zip(finish, done, strict=True)):
            self.notify_work()
        return ([landed(row, _lenient, landed_rows) for row in done],
                decode_rows(rows, pick) if rows else [])

    def _claim_in(self: _Store, conn: sqlite3.Connection, worker_id: str, lease_seconds: float,
                  queues: Sequence[str], job_types: Sequence[str], limit: int, now: float,
                  history: list[tuple[Any, ...]]) -> tuple[list[sqlite3.Row], _Pick | None]:
        """The claim's writes, inside the caller's write transaction (its history rows added to
        ``history``, for the caller to write in it); the rows in claim order, and the picker
        that decodes them (:func:`~conveyor.stores.sqlite.rows.decode_rows`)."""
        one_scope = len(queues) < 2 or len(set(queues)) == 1
        if one_scope and self._one_statement_claims:
            # the usual claim (no limit set, no job of its types to resume): candidates and
            # start in one statement; it writes nothing otherwise, and the claim goes on below
            # (and the next ones too, until one finds only pending jobs and no limit set)
            types = sorted(set(job_types))
            scope = queues[:1]
            candidate_args = [*scope, now, *types, *scope, *types]
            if limit == 1:  # a one-slot worker's, every time: without RETURNING
                one = one_job_plan(_Q["claim_seq"], _Q["pending_candidates"], worker_id,
                                   lease_seconds, len(types), bool(queues))
                row = claim_one(conn, one, candidate_args, now)
                claimed = [] if row is None else [row]
                plan, statement = one.claim, _Q["select_changed"]
            else:
                plan = pending_plan(_Q["claim_pending"], _Q["pending_candidates"], worker_id,
                                    lease_seconds, len(types), bool(queues))
                statement = plan.statement
                claimed = conn.execute(plan.statement, plan.arguments(
                    [*candidate_args, limit], now)).fetchall()
            if claimed:
                columns = _layout_of(statement, claimed[0])
                seq, job_id, state, attempt = (columns.seq, columns.id, columns.state,
                                               columns.attempt)
                action, actor, reason = plan.action, plan.actor, plan.reason
                for row in claimed:
                    history.append((row[seq], row[job_id], now, action, _PENDING, row[state],
                                    row[attempt], actor, reason))
                if len(claimed) > 1:  # as claim_candidates orders them
                    assert columns.order is not None
                    claimed.sort(key=columns.order)
                return claimed, columns.pick
            self._one_statement_claims = False
        rows: list[sqlite3.Row] = []
        picked, limited = self._candidates(conn, queues, job_types, limit, now)
        if one_scope and not limited and picked and all(
                source is JobState.PENDING for _, source in picked):
            self._one_statement_claims = True  # what claim_pending would have taken
        if limited:  # a limit is set somewhere: those this claim obeys (limits.py), if any
            rules = self._claim_rules(conn, queues, job_types)
            if rules:
                picked = self._limited_candidates(conn, rules, queues, job_types, limit, now)
        if not picked:
            return rows, None
        layout: _Layout | None = None
        template = _Q["apply_change"]
        for source in _CLAIM_SOURCES:
            ids = [job_id for job_id, from_state in picked if from_state is source]
            if not ids:
                continue
            # one UPDATE for all of them, each row under a fresh token (RETURNING *: the
            # claimed rows themselves, no read back); the write lock keeps them as picked
            plan = _claim_plan(template, worker_id, lease_seconds, source, len(ids))
            claimed = conn.execute(plan.statement, plan.arguments(ids, now)).fetchall()
            if not claimed:
                continue
            # by position: sqlite3.Row finds a name by a linear scan of its ~37 columns
            layout = _layout_of(plan.statement, claimed[0])
            seq, job_id, state, attempt = layout.seq, layout.id, layout.state, layout.attempt
            action, actor, reason, value = plan.action, plan.actor, plan.reason, source.value
            for row in claimed:
                rows.append(row)
                history.append((row[seq], row[job_id], now, action, value, row[state],
                                row[attempt], actor, reason))
        if len(rows) > 1:
            assert layout is not None
            place = {job_id: n for n, (job_id, _) in enumerate(picked)}
            at = layout.id
            rows.sort(key=lambda row: place[row[at]])
        return rows, None if layout is None else layout.pick

    def _candidates(self, conn: sqlite3.Connection, queues: Sequence[str],
                    job_types: Sequence[str], limit: int,
                    now: float) -> tuple[list[tuple[str, JobState]], bool]:
        """The claim's candidates in claim order, without limits, and whether any limit is set
        (then the caller asks which apply). One statement per queue asked for (or one for
        any queue) reads both the resumable and the pending candidates, and the flag."""
        types = sorted(set(job_types))
        scopes: list[list[Any]] = [[q] for q in sorted(set(queues))] if queues else [[]]
        statement = candidates_statement(len(types), bool(queues))
        resumable: list[tuple[float, str]] = []
        pending: list[tuple[int, float, int, str]] = []  # (-priority, line_at, seq, id)
        limited = False
        for qargs in scopes:
            # by position, in claim_candidates' column order: sqlite3.Row finds a name by a
            # linear scan, six of them per candidate
            for source, job_id, paused_at, priority, line_at, seq, limits_set in conn.execute(
                    statement, [*qargs, *types, limit, *qargs, now, *types, limit]):
                limited = limited or bool(limits_set)
                if source == "paused":
                    resumable.append((paused_at, job_id))
                else:
                    pending.append((-priority, line_at, seq, job_id))
        picked = [(job_id, JobState.PAUSED) for _, job_id in sorted(resumable)]
        picked += [(row[3], JobState.PENDING) for row in sorted(pending)]
        return picked[:limit], limited

    def heartbeat(self: _Store, leases: Sequence[Lease],
                  lease_seconds: float) -> dict[str, Signals]:
        held: dict[str, Signals] = {}
        if not leases:
            return held
        with self._write() as conn:
            now = self._clock()
            for lease in leases:
                row = conn.execute(_Q["heartbeat"], (now + lease_seconds, now, lease.job_id,
                                                     lease.token, lease.attempt)).fetchone()
                if row is not None:
                    held[lease.token] = Signals(bool(row[0]), bool(row[1]))
        return held

    def save_progress(self: _Store, lease: Lease, progress: JobProgress, *,
                      checkpoint: bool = False) -> Signals:
        encoded = payload.dumps(progress.last_checkpoint) if checkpoint else None
        with self._write() as conn:  # encoded first: the write lock is held for SQL only
            now = self._clock()
            fence = (lease.job_id, lease.token, lease.attempt)
            if checkpoint:
                row = conn.execute(_Q["save_checkpoint"], (
                    progress.current_step, progress.total_steps, encoded, now,
                    *fence)).fetchone()
            else:
                row = conn.execute(_Q["save_progress"], (
                    progress.current_step, progress.total_steps, now, *fence)).fetchone()
        if row is None:
            raise LeaseLost(f"lease on job {lease.job_id} is no longer held")
        return Signals(bool(row[0]), bool(row[1]))
