"""Job dependencies on PostgreSQL: linking new dependents inside the enqueue's transaction,
and reading a job's upstream and downstream jobs.

The race that matters: a dependency ending while its dependent is being enqueued. The enqueue
locks the dependencies' rows (``FOR NO KEY UPDATE``, in id order) before it reads their states,
and keeps the locks to its commit. A dependency's end locks its row too (``FOR UPDATE``), so one
of the two waits for the other: either the end commits first and the enqueue reads its final
state, or the enqueue commits first and the end (re-reading the row after the wait, with
``has_dependents`` now set) runs the schema's trigger, which sees the committed
``job_dependencies`` rows. Neither order leaves a dependent waiting for a job that has ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from conveyor.dependencies import DependencyState, plan
from conveyor.lifecycle import JobState
from conveyor.model import Job
from conveyor.stores.base import NewJob
from conveyor.stores.postgres.common import fetch_rows as fetch
from conveyor.stores.postgres.rows import row_to_job

Conn = psycopg.Connection[TupleRow]

_LOCK = """SELECT id, state, attempt, max_attempts FROM jobs WHERE id = ANY(%(ids)s::text[])
ORDER BY id FOR NO KEY UPDATE"""
_LINK = """WITH linked AS (
    INSERT INTO job_dependencies (job_id, depends_on)
    SELECT %(id)s, dep FROM unnest(%(deps)s::text[]) AS dep
)
UPDATE jobs SET has_dependents = true
WHERE id = ANY(%(deps)s::text[]) AND NOT has_dependents"""
_WAIT = """UPDATE jobs SET waiting_on = %(waiting)s, on_dependency_failure = %(policy)s
WHERE id = %(id)s RETURNING *"""
_CANCEL = """WITH cancelled AS (
    UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now(),
                    on_dependency_failure = %(policy)s
    WHERE id = %(id)s RETURNING *
), logged AS (
    INSERT INTO job_history (job_id, at, action, from_state, to_state, attempt, actor, reason)
    SELECT id, now(), 'cancel', 'pending', 'cancelled', attempt, 'conveyor', %(reason)s
    FROM cancelled
)
SELECT * FROM cancelled"""
_UPSTREAM = """SELECT jobs.* FROM job_dependencies d JOIN jobs ON jobs.id = d.depends_on
WHERE d.job_id = %(id)s ORDER BY jobs.seq"""
_DOWNSTREAM = """SELECT jobs.* FROM job_dependencies d JOIN jobs ON jobs.id = d.job_id
WHERE d.depends_on = %(id)s ORDER BY jobs.seq"""


def link_all(conn: Conn, jobs: Sequence[NewJob], stored: list[Job]) -> list[Job]:
    """Link each inserted job of the batch (``stored``: the insert's answer, in order) to its
    dependencies, which may be stored jobs or jobs earlier in the batch; returns the batch as
    linking left it. InvalidParams (the transaction rolls back) for a job depending on itself,
    on an unknown id, or on a job later in the batch."""
    ids = sorted({dep for new in jobs for dep in new.depends_on})
    found = {row["id"]: DependencyState(JobState(row["state"]), row["attempt"],
                                        row["max_attempts"])
             for row in fetch(conn, _LOCK, {"ids": ids})}
    later = {new.id for new in jobs}
    result: list[Job] = []
    for new, job in zip(jobs, stored, strict=True):
        later.discard(new.id)
        if not new.depends_on or job.existing:
            result.append(job)
            continue
        visible = {k: v for k, v in found.items() if k not in later}
        start = plan(new.id, new.depends_on, visible, new.on_dependency_failure)
        fetch(conn, _LINK, {"id": new.id, "deps": list(new.depends_on)})
        params: dict[str, Any] = {"id": new.id, "policy": new.on_dependency_failure,
                                  "waiting": start.waiting_on, "reason": start.cancel_reason}
        rows = fetch(conn, _WAIT if start.cancel_reason is None else _CANCEL, params)
        linked = row_to_job(rows[0])
        found[new.id] = DependencyState(linked.state, linked.attempt, linked.max_attempts)
        result.append(linked)
    return result


def upstream_downstream(conn: Conn, job_id: str) -> tuple[list[Job], list[Job]]:
    return ([row_to_job(r) for r in fetch(conn, _UPSTREAM, {"id": job_id})],
            [row_to_job(r) for r in fetch(conn, _DOWNSTREAM, {"id": job_id})])
