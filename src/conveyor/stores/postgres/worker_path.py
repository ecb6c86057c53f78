"""The PostgreSQL store's worker path: transitions, claims, heartbeats and progress.

A mixin of :class:`~conveyor.stores.postgres.store.PostgresStore`, kept apart so the store
module stays readable. This is the path every job takes many times, so each call is as few
round trips as it can be: a transition is one compare-and-set statement (zero rows: refused,
never overwritten), a worker's finished jobs and its next claim go in one pipeline, and a
claim takes ``FOR UPDATE SKIP LOCKED`` rows, falling back to the limited claim (see
:mod:`.limits`) only when its gate finds a limit in force.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, TypeVar, cast

import psycopg
from psycopg.types.composite import RecordBinaryLoader

from conveyor.changes import (
    CLAIM_ACTIONS,
    Change,
    ChangeRefused,
    ClaimStart,
    Lease,
    distinct_jobs,
    shape_key,
    single_job,
    wakes_workers,
)
from conveyor.errors import LeaseLost
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobProgress
from conveyor.stores.base import Landed, Signals, landed
from conveyor.stores.postgres import wire
from conveyor.stores.postgres.changes import (
    batch_of_shape,
    compile_change,
    compile_claim,
    json_value,
)
from conveyor.stores.postgres.common import QUERIES, Conn, Row
from conveyor.stores.postgres.common import fetch_rows as _fetch
from conveyor.stores.postgres.config import PgSettings
from conveyor.stores.postgres.listener import WorkListener
from conveyor.stores.postgres.rows import KnownColumns, TextArray, decode_rows, row_to_job
from conveyor.stores.postgres.statements import apply_params, brief_change

_Q = QUERIES
T = TypeVar("T")
_CURSORS_KEPT = 16
#: The two change statements, returning whole rows (the caller reads them) or brief ones.
_CHANGE_STATEMENTS = {True: (_Q["apply_change"], _Q["apply_change_batch"]),
                      False: (brief_change(_Q["apply_change"]),
                              brief_change(_Q["apply_change_batch"]))}


@functools.lru_cache(maxsize=256)
def _columns(statement: str) -> KnownColumns:
    """The statement's row factory, its column names kept from one transaction to the next."""
    return KnownColumns()


#: The claim's last steps as queries.sql writes them: what ``started`` returns beyond the job's
#: columns (the candidate's place in line), and the final order by that place.
_CLAIM_RETURNING = re.compile(
    r"RETURNING jobs\.\*, picked\.source AS old_state,\s+picked\.pick_rank,\s+"
    r"picked\.pick_priority,\s+picked\.pick_at\n")
_CLAIM_ORDERED = re.compile(
    r"SELECT \* FROM started ORDER BY pick_rank, pick_priority DESC, pick_at, seq;?\s*$")


@functools.lru_cache(maxsize=4)
def one_row_claim(claim: str) -> str:
    """The claim of one job (a worker of one slot): ``started`` returns the job's columns and
    its source only, and the final ``SELECT`` has no ``ORDER BY``. The job is the one the
    claim picks either way (``picked`` orders the candidates and takes the first); only the
    order of the rows returned went, and one row has no order. The server then builds no
    sort and no descriptors for the three ordering columns, and the worker loads none of them
    (a time among them), in every transaction of a one-slot worker."""
    returning, ordered = _CLAIM_RETURNING.findall(claim), _CLAIM_ORDERED.search(claim)
    if len(returning) != 1 or ordered is None:
        raise AssertionError("the claim no longer ends as one_row_claim expects")
    head = claim[:ordered.start()].replace(returning[0],
                                           "RETURNING jobs.*, picked.source AS old_state\n")
    return head + "SELECT * FROM started;\n"


@functools.lru_cache(maxsize=256)
def _compiled_claim(query: str, worker_id: str, queues: tuple[str, ...],
                    job_types: tuple[str, ...], limit: int, lease_seconds: float
                    ) -> tuple[str, dict[str, Any]]:
    """A claim statement and its parameters, kept: the same for every claim of a worker with
    the same free slots (a process's workers make a few, one per number of free slots)."""
    statement, params = compile_claim(query, ClaimStart(worker_id, lease_seconds), bool(queues))
    # the lists encoded once (TextArray): each of the worker's claims sends them
    params.update({"job_types": TextArray(sorted(set(job_types))),
                   "queues": TextArray(sorted(set(queues))), "limit": limit,
                   "worker_id": worker_id,
                   "start_action": CLAIM_ACTIONS[JobState.PENDING],
                   "resume_action": CLAIM_ACTIONS[JobState.PAUSED]})
    return statement, params


def _kept_cursors(conn: Conn) -> dict[str, psycopg.Cursor[Row]]:
    """The connection's cursors for the pipeline's statements, kept on the connection (and
    gone with it), one per statement: a cursor executing the same statement object again
    keeps its adaptation state (psycopg's Transformer and the dumpers it chose) instead of
    building a cursor and a Transformer for every statement of every transaction."""
    kept: dict[str, psycopg.Cursor[Row]] | None = getattr(conn, "_conveyor_cursors", None)
    if kept is None or len(kept) >= _CURSORS_KEPT:
        for cursor in (kept or {}).values():
            cursor.close()
        kept = {}
        setattr(conn, "_conveyor_cursors", kept)  # noqa: B010 - not a psycopg attribute
    return kept


def _cursor(conn: Conn, kept: dict[str, psycopg.Cursor[Row]], used: set[str],
            statement: str) -> psycopg.Cursor[Row]:
    """A cursor for one statement of this pipeline: the kept one, unless this pipeline uses
    it already (two changes compiled to the same statement; a cursor holds one result), then
    a new one, left to the garbage collector."""
    if statement in used:
        return conn.cursor(row_factory=_columns(statement))
    used.add(statement)
    cursor = kept.get(statement)
    if cursor is None or cursor.closed:
        cursor = kept[statement] = conn.cursor(row_factory=_columns(statement))
    return cursor


def _kept_fetch(conn: Conn, statement: str, params: dict[str, Any]) -> list[Row]:
    """One worker statement on its own (a claim with nothing to finish, a heartbeat, a save of
    progress), on the connection's kept cursor for it, rows in binary: what the pipeline's
    statements get, rather than a new cursor, ``dict_row`` and composed query for each call."""
    cursor = _cursor(conn, _kept_cursors(conn), set(), statement)
    cursor.execute(statement, params, binary=True)
    return cursor.fetchall()


def _job_columns(conn: Conn, width: int) -> list[str]:
    """The jobs table's column names in their order, kept on the connection (gone with it),
    read again when a composite value has another width (the schema changed under us)."""
    kept: list[str] | None = getattr(conn, "_conveyor_job_columns", None)
    if kept is None or len(kept) != width:
        cursor = conn.execute("SELECT * FROM jobs LIMIT 0")
        kept = [column.name for column in cursor.description or ()]
        setattr(conn, "_conveyor_job_columns", kept)  # noqa: B010 - not a psycopg attribute
    return kept


def spread_whole(conn: Conn, moved: dict[int, Row]) -> None:
    """Each brief row holding ``whole`` (a job with dependents: see statements.brief_change)
    gets the job's columns from it, in place, as the plain statement returns them, so it
    decodes as any row does. ``whole`` comes in PostgreSQL's binary format for a composite,
    which carries each field's type; psycopg's own record loader reads it with the
    connection's loaders (the store's times and JSON included). Rare: only a job with
    dependents sends one, so the loader and the names are looked up here."""
    wholes = [row for row in moved.values() if row.get("whole") is not None]
    if not wholes:
        return
    loader = RecordBinaryLoader(0, conn)  # the oid is unused: each field names its own type
    for row in wholes:
        values = loader.load(row.pop("whole"))
        row.update(zip(_job_columns(conn, len(values)), values, strict=True))


def _moved(statements: list[tuple[list[int], str, dict[str, Any]]], results: list[list[Row]]
           ) -> dict[int, Row]:
    """Each landed change's row, by the change's place in the batch (no row for a change:
    refused, nothing written)."""
    moved: dict[int, Row] = {}
    for (members, _, _), rows in zip(statements, results, strict=True):
        for row in rows:
            moved[members[row["batch_n"] - 1] if "batch_n" in row else members[0]] = row
    return moved


class _Refused(Exception):
    """A change matched no row: unwinds the transaction, then becomes ChangeRefused."""

    def __init__(self, change: Change) -> None:
        super().__init__(change.action)
        self.change = change


class _Store(Protocol):
    _settings: PgSettings
    _listener: WorkListener

    def _run(self, what: str, work: Callable[[Conn], T], *, transaction: bool = False,
             retry: bool = False) -> T: ...
    def get_job(self, job_id: str) -> Job: ...
    def _claim_limited(self, worker_id: str, queues: Sequence[str], job_types: Sequence[str],
                       limit: int, lease_seconds: float) -> list[dict[str, Any]]: ...
    # this mixin's own methods, called through the protocol
    def finish_and_claim(self, finish: Sequence[Change], worker_id: str, *,
                         queues: Sequence[str], job_types: Sequence[str], limit: int,
                         lease_seconds: float, landed_rows: bool = True
                         ) -> tuple[list[Job | Landed | None], list[Job]]: ...
    def _finish_in_pipeline(self, conn: Conn,
                            statements: list[tuple[list[int], str, dict[str, Any]]],
                            claim: tuple[str, dict[str, Any]] | None, wakes: bool
                            ) -> tuple[dict[int, Row], list[Row]]: ...
    def _finish_statements(self, changes: Sequence[Change], rows: bool = True
                           ) -> list[tuple[list[int], str, dict[str, Any]]]: ...
    def claim(self, worker_id: str, *, queues: Sequence[str], job_types: Sequence[str],
              limit: int, lease_seconds: float) -> list[Job]: ...
    def _claim_statement(self, worker_id: str, queues: Sequence[str],
                         job_types: Sequence[str], limit: int, lease_seconds: float,
                         query: str | None = None) -> tuple[str, dict[str, Any]]: ...


class PostgresWorkerPath:
    """Changing jobs' states (one job's changes, or a worker's batch with its next claim),
    claiming, heartbeats and progress."""

    # -- transitions -----------------------------------------------------------------------------
    def apply(self: _Store, changes: Sequence[Change]) -> list[Job]:
        job_id = single_job(changes)
        compiled = [compile_change(_Q["apply_change"], change) for change in changes]
        wakes = any(wakes_workers(c) for c in changes)

        def work(conn: Conn) -> list[Row]:
            moved: list[Row] = []
            for change, (statement, params) in zip(changes, compiled, strict=True):
                # one transaction, one time: the later changes take the first one's moment
                moment = moved[0].get("moved_at") if moved else None
                rows = _fetch(conn, statement, apply_params(params, moment, self._settings))
                if not rows:
                    raise _Refused(change)
                moved.append(rows[0])  # the job as this change left it
            if wakes:
                conn.execute(_Q["notify"], {"channel": self._settings.channel})
            return moved

        what = "apply " + ", ".join(c.action for c in changes)
        try:
            # One change that wakes nobody is a single atomic statement: no transaction needed.
            rows = self._run(what, work, transaction=len(changes) > 1 or wakes)
        except _Refused as refused:
            raise ChangeRefused(refused.change, self.get_job(job_id)) from None
        if wakes:
            self._listener.wake()
        return [row_to_job(row) for row in rows]

    def apply_many(self: _Store, changes: Sequence[Change]) -> list[Job | None]:
        done = self.finish_and_claim(changes, "", queues=(), job_types=(), limit=0,
                                     lease_seconds=0.0)[0]
        return cast(list[Job | None], done)  # landed_rows: every landed change gives its row

    def finish_and_claim(self: _Store, finish: Sequence[Change], worker_id: str, *,
                         queues: Sequence[str], job_types: Sequence[str], limit: int,
                         lease_seconds: float, landed_rows: bool = True
                         ) -> tuple[list[Job | Landed | None], list[Job]]:
        distinct_jobs(finish)
        claiming = limit > 0 and bool(job_types)
        if not finish:
            return [], self.claim(worker_id, queues=queues, job_types=job_types, limit=limit,
                                  lease_seconds=lease_seconds) if claiming else []
        statements = self._finish_statements(finish, landed_rows)
        claim = (self._claim_statement(worker_id, queues, job_types, limit, lease_seconds)
                 if claiming else None)
        wakes = any(wakes_workers(c) for c in finish)

        def work(conn: Conn) -> tuple[dict[int, Row], list[Row]]:
            try:
                moved, claimed = self._finish_in_pipeline(conn, statements, claim, wakes)
            except BaseException:
                if not conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()  # an explicit transaction stopped before COMMIT
                raise
            if not landed_rows:  # brief rows: a job with dependents sent its row as one value
                spread_whole(conn, moved)
            return moved, claimed

        # the work makes its own transaction; never sent twice, as any transaction whose
        # outcome is unknown once a part of it was sent
        moved, claimed = self._run(f"apply {len(finish)} changes", work)
        if claim is not None and not claimed:  # the gate: limits apply (see limits.py)
            claimed = self._claim_limited(worker_id, queues, job_types, limit, lease_seconds)
        if wakes and moved:
            self._listener.wake()
        return ([landed(moved.get(n), row_to_job, landed_rows) for n in range(len(finish))],
                decode_rows(claimed))

    def _finish_in_pipeline(self: _Store, conn: Conn,
                            statements: list[tuple[list[int], str, dict[str, Any]]],
                            claim: tuple[str, dict[str, Any]] | None, wakes: bool
                            ) -> tuple[dict[int, Row], list[Row]]:
        """One transaction sent as one pipeline: the statements and the claim, one round trip
        for all of them and the commit's flush. Without a BEGIN, the statements of a pipeline
        are one transaction (PostgreSQL's implicit one, committed at the pipeline's sync, rolled
        back whole if any fails); a NOTIFY that wakes workers is sent only if a change landed,
        so then the transaction is explicit and commits after it."""
        batched = any(len(members) > 1 for members, _, _ in statements)
        sent = [(statement, apply_params(params, None, self._settings))
                for _, statement, params in statements]
        if not wakes:
            # a batch statement: its plan for this transaction (see queries.sql); the others
            # (one change, the claim) turn generic by themselves after five runs
            results = wire.run(conn, [*([(_Q["generic_plans"], {})] if batched else []),
                                      *sent, *([claim] if claim is not None else [])])
            if results is not None:
                results = results[1:] if batched else results
                claimed = results.pop() if claim is not None else []
                return _moved(statements, results), claimed
        # the same through psycopg: a wake-up's transaction, or a parameter wire leaves to it
        cursors: list[psycopg.Cursor[Row]] = []
        with conn.pipeline():
            if wakes:
                conn.execute("BEGIN")
            if batched:
                conn.execute(_Q["generic_plans"])
            kept, used = _kept_cursors(conn), set[str]()
            for statement, params in sent:
                cursor = _cursor(conn, kept, used, statement)
                cursor.execute(statement, params, binary=True)
                cursors.append(cursor)
            if claim is not None:
                claimer = _cursor(conn, kept, used, claim[0])
                claimer.execute(*claim, binary=True)
        moved = _moved(statements, [cursor.fetchall() for cursor in cursors])
        claimed = claimer.fetchall() if claim is not None else []
        if wakes:
            if moved:
                conn.execute(_Q["notify"], {"channel": self._settings.channel})
            conn.execute("COMMIT")
        return moved, claimed

    def _finish_statements(self: _Store, changes: Sequence[Change], rows: bool = True
                           ) -> list[tuple[list[int], str, dict[str, Any]]]:
        """Same-shaped changes (a batch of completions) in one statement each shape; any
        others one statement each, in job id order (one lock order for every batch).
        ``rows`` False: the statements return brief rows (see ``brief_change``)."""
        single, batched = _CHANGE_STATEMENTS[rows]
        if len(changes) == 1:  # a worker of one slot: no shapes to group
            return [([0], *compile_change(single, changes[0]))]
        groups: dict[Hashable, list[int]] = {}
        for n, change in enumerate(changes):
            groups.setdefault(shape_key(change), []).append(n)
        statements: list[tuple[list[int], str, dict[str, Any]]] = []
        for key, members in groups.items():
            batch = (batch_of_shape(batched, key,
                                    [changes[n] for n in members])
                     if len(members) > 1 else None)
            if batch is not None:
                statements.append((members, *batch))
            else:
                statements += [([n], *compile_change(single, changes[n]))
                               for n in sorted(members, key=lambda n: changes[n].job_id)]
        return statements

    # -- workers ---------------------------------------------------------------------------------
    def claim(self: _Store, worker_id: str, *, queues: Sequence[str], job_types: Sequence[str],
              limit: int, lease_seconds: float) -> list[Job]:
        if limit <= 0 or not job_types:
            return []
        statement, params = self._claim_statement(worker_id, queues, job_types, limit,
                                                  lease_seconds)
        rows = self._run("claim jobs", lambda c: _kept_fetch(c, statement, params))
        if not rows:  # the gate: limits apply (see limits.py)
            rows = self._claim_limited(worker_id, queues, job_types, limit, lease_seconds)
        return decode_rows(rows)

    def _claim_statement(self: _Store, worker_id: str, queues: Sequence[str],
                         job_types: Sequence[str], limit: int, lease_seconds: float,
                         query: str | None = None) -> tuple[str, dict[str, Any]]:
        """The claim statement and its parameters (a copy the caller may change), built once
        and kept (:func:`_compiled_claim`) rather than compiled again for each transaction;
        the plain claim of one job is :func:`one_row_claim`'s."""
        if query is None:
            query = one_row_claim(_Q["claim"]) if limit == 1 else _Q["claim"]
        statement, params = _compiled_claim(query, worker_id, tuple(queues),
                                            tuple(job_types), limit, lease_seconds)
        return statement, dict(params)

    def heartbeat(self: _Store, leases: Sequence[Lease], lease_seconds: float
                  ) -> dict[str, Signals]:
        if not leases:
            return {}
        ordered = sorted(leases, key=lambda lease: lease.job_id)  # one lock order for all
        params = {"ids": [lease.job_id for lease in ordered],
                  "tokens": [lease.token for lease in ordered],
                  "attempts": [lease.attempt for lease in ordered],
                  "lease_seconds": float(lease_seconds)}
        # lease-fenced and idempotent: safe to repeat on a fresh connection
        rows = self._run("heartbeat", lambda c: _kept_fetch(c, _Q["heartbeat"], params),
                         retry=True)
        return {r["lease_token"]: Signals(r["pause_requested"], r["cancel_requested"],
                                          r["renewed"])
                for r in rows}

    def save_progress(self: _Store, lease: Lease, progress: JobProgress, *,
                      checkpoint: bool = False) -> Signals:
        params: dict[str, Any] = {
            "id": lease.job_id, "token": lease.token, "attempt": lease.attempt,
            "current_step": progress.current_step, "total_steps": progress.total_steps,
        }
        query = _Q["save_progress"]
        if checkpoint:
            query = _Q["save_checkpoint"]
            params["checkpoint"] = json_value("checkpoint", progress.last_checkpoint)
        rows = self._run("save progress", lambda c: _kept_fetch(c, query, params), retry=True)
        if not rows:
            raise LeaseLost(f"lease on job {lease.job_id} is no longer held")
        return Signals(rows[0]["pause_requested"], rows[0]["cancel_requested"])

