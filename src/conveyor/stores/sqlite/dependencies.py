"""Job dependencies on SQLite: linking a new dependent inside the enqueue's write transaction,
and reading a job's upstream and downstream jobs.

The write transaction (``BEGIN IMMEDIATE``) holds the database's only write lock, so no
dependency can end between reading its state here and the commit: a dependency's end that
comes later finds the ``job_dependencies`` rows and runs the schema's triggers on them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from conveyor.dependencies import DependencyState, plan
from conveyor.lifecycle import JobState
from conveyor.stores.base import NewJob
from conveyor.stores.sqlite.changes import marks

_STATES = """SELECT id, state, attempt, max_attempts FROM jobs WHERE id IN ({ids})"""
_LINK = "INSERT INTO job_dependencies (job_id, depends_on) VALUES (?, ?)"
_MARK = "UPDATE jobs SET has_dependents = 1 WHERE has_dependents = 0 AND id IN ({ids})"
_WAIT = "UPDATE jobs SET waiting_on = ?, on_dependency_failure = ? WHERE id = ? RETURNING *"
_CANCEL = """UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?,
                             on_dependency_failure = ?
WHERE id = ? RETURNING *"""
_HISTORY = """INSERT INTO job_history (job_seq, job_id, at, action, from_state, to_state, attempt,
                                       actor, reason)
VALUES ((SELECT seq FROM jobs WHERE id = ?1), ?1, ?2, 'cancel', 'pending', 'cancelled', 0,
        'conveyor', ?3)"""
_UPSTREAM = """SELECT jobs.* FROM job_dependencies d JOIN jobs ON jobs.id = d.depends_on
WHERE d.job_id = ? ORDER BY jobs.seq"""
_DOWNSTREAM = """SELECT jobs.* FROM job_dependencies d JOIN jobs ON jobs.id = d.job_id
WHERE d.depends_on = ? ORDER BY jobs.seq"""


def link(conn: sqlite3.Connection, new: NewJob, now: float) -> sqlite3.Row:
    """Record ``new``'s dependencies (just inserted, in this transaction) and set how it
    starts: waiting, or cancelled at once when a dependency already failed for good.

    Raises InvalidParams for its own id or an unknown one; the caller's transaction then rolls
    back, so the enqueue writes nothing."""
    ids = list(new.depends_on)
    found = {row["id"]: DependencyState(JobState(row["state"]), row["attempt"],
                                        row["max_attempts"])
             for row in conn.execute(_STATES.format(ids=marks(len(ids))), ids)}
    start = plan(new.id, ids, found, new.on_dependency_failure)
    conn.executemany(_LINK, [(new.id, dep) for dep in ids])
    conn.execute(_MARK.format(ids=marks(len(ids))), ids)
    row: sqlite3.Row | None
    if start.cancel_reason is not None:
        conn.execute(_HISTORY, (new.id, now, start.cancel_reason))
        row = conn.execute(_CANCEL, (now, now, new.on_dependency_failure, new.id)).fetchone()
    else:
        row = conn.execute(_WAIT, (start.waiting_on, new.on_dependency_failure,
                                   new.id)).fetchone()
    assert row is not None  # inserted by this transaction
    return row


def upstream_downstream(conn: sqlite3.Connection,
                        job_id: str) -> tuple[Sequence[sqlite3.Row], Sequence[sqlite3.Row]]:
    return (conn.execute(_UPSTREAM, (job_id,)).fetchall(),
            conn.execute(_DOWNSTREAM, (job_id,)).fetchall())
