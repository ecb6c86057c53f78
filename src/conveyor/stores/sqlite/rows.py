"""SQLite rows to model objects and back, tolerant of rows the core would never write.

Times are stored as seconds since the epoch (:func:`epoch` writes them, :func:`ts` reads them).

A row written by hand, by an older conveyor or by a bug must not take down every reader: an
out-of-range time is clamped (the row stays readable and cancellable), a list skips a row it
cannot decode and logs its id, and reading one job by id decodes what it can and says what
it could not in the job's ``error`` (so ``show`` explains it and ``cancel`` works).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from conveyor import payload
from conveyor.errors import UNDECODABLE_ROW, StoreError
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job, JobError, JobProgress
from conveyor.stores.base import NewJob

log = logging.getLogger("conveyor.store")
# What an out-of-range time decodes to: a day inside datetime's limits, so that converting it
# to local time for display still works.
_MIN_TIME = datetime(1, 1, 2, tzinfo=UTC)
_MAX_TIME = datetime(9999, 12, 30, tzinfo=UTC)
_NO_PROGRESS = JobProgress()


_STATES = {state.value: state for state in JobState}


def ts(value: float | None) -> datetime | None:
    """A stored time (seconds since the epoch); out of range is clamped."""
    if value is None:
        return None
    kind = type(value)
    if kind is not float and kind is not int:  # bool (a subclass of int) included
        raise ValueError(f"a time column holds {value!r}, not a number")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        return _MIN_TIME if value < 0 else _MAX_TIME


def epoch(value: datetime) -> float:
    """A time as stored; a naive datetime is refused (it would be read in local time)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use an aware UTC datetime")
    return value.timestamp()


def new_job_rows(jobs: Iterable[NewJob], now: float) -> list[tuple[Any, ...]]:
    """The ``insert_job`` arguments for each job; its place in line is the run_at it is given.

    A batch of one type shares one backoff dict: it is encoded once per batch, not per job.
    """
    backoffs: dict[int, str] = {}
    rows = []
    for new in jobs:
        progress = new.progress or _NO_PROGRESS
        run_at = epoch(new.run_at) if new.run_at else now + (new.delay or 0.0)
        params = new.params_json if new.params_json is not None else payload.dumps(new.params)
        backoff = new.backoff_json or backoffs.get(id(new.backoff))
        if backoff is None:
            backoff = backoffs[id(new.backoff)] = payload.dumps(new.backoff)
        checkpoint = ("{}" if not progress.last_checkpoint
                      else payload.dumps(progress.last_checkpoint))
        rows.append((
            new.id, new.job_type, new.queue, new.priority, params,
            new.max_attempts, run_at, run_at, new.timeout,
            new.pause_timeout, backoff, now, now,
            progress.current_step, progress.total_steps, checkpoint, new.requeued_from,
            new.unique_key, new.trace, new.limit_key,
        ))
    return rows


def new_history_rows(jobs: Iterable[NewJob], now: float, actor: str) -> list[tuple[Any, ...]]:
    """The ``insert_history`` arguments of each new job's ``create`` row."""
    pending = JobState.PENDING.value  # once: an enum member is read through a descriptor
    return [(new.id, now, "create", None, pending, 0, actor, "") for new in jobs]


def decode_rows(rows: Iterable[sqlite3.Row]) -> list[Job]:
    """The jobs of ``rows``, skipping (and logging) any row that cannot be decoded, so one
    corrupt row never takes down a list, the reaper or a worker."""
    jobs = []
    for row in rows:
        try:
            jobs.append(row_to_job(row))
        except StoreError as exc:
            log.error("%s; skipped", exc)
    return jobs


def row_to_job(stored: sqlite3.Row, *, lenient: bool = False) -> Job:
    """A row as a Job; a row that cannot be decoded is a StoreError naming the job.

    ``lenient`` (reading one job by id): a JSON column that cannot be decoded is replaced by
    its empty value, and the job's ``error`` says which columns were lost.
    """
    # sqlite3.Row finds a column by name with a linear, case-insensitive scan; a dict is
    # several times faster over the ~30 lookups a job takes (decoding is on the claim's path)
    row: dict[str, Any] = dict(zip(stored.keys(), stored, strict=True))
    lost: list[str] = []

    def json(column: str, default: Any) -> Any:
        text = row[column]
        if text is None:
            return None
        if text == "{}":  # most checkpoints, params and backoffs: no parser needed
            return {}
        try:
            return payload.loads(text)
        except ValueError as exc:
            if not lenient:
                raise ValueError(f"{column} is not valid JSON ({exc})") from None
            lost.append(column)
            return default

    try:
        job = _decode(row, json)
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"job {row['id']!r} cannot be decoded: {exc}") from exc
    if lost:
        log.error("job %r: stored %s cannot be decoded", row["id"], ", ".join(lost))
        job.error = JobError(UNDECODABLE_ROW, f"stored {', '.join(lost)} cannot be decoded; "
                                          "the job can only be cancelled")
    return job


def _decode(row: dict[str, Any], json: Callable[[str, Any], Any]) -> Job:
    error = json("error", None)
    return Job(
        id=row["id"],
        state=_STATES[row["state"]],
        created_at=ts(row["created_at"]) or datetime.now(UTC),
        started_at=ts(row["started_at"]),
        finished_at=ts(row["finished_at"]),
        job_type=row["job_type"],
        params=json("params", {}),
        max_attempts=row["max_attempts"],
        attempt=row["attempt"],
        progress=JobProgress(row["current_step"], row["total_steps"],
                             json("checkpoint", {}) or {}),
        result=json("result", None),
        error=JobError(**error) if error else None,
        queue=row["queue"],
        priority=row["priority"],
        run_at=ts(row["run_at"]) or datetime.now(UTC),
        timeout=row["timeout"],
        pause_timeout=row["pause_timeout"],
        backoff=json("backoff", {}) or {},
        updated_at=ts(row["updated_at"]) or datetime.now(UTC),
        paused_at=ts(row["paused_at"]),
        pause_requested=bool(row["pause_requested"]),
        cancel_requested=bool(row["cancel_requested"]),
        resume_requested=bool(row["resume_requested"]),
        worker_id=row["worker_id"],
        lease_token=row["lease_token"],
        lease_expires_at=ts(row["lease_expires_at"]),
        requeued_from=row["requeued_from"],
        unique_key=row["unique_key"],
        trace=row.get("trace"),
        limit_key=row["limit_key"],
        waiting_on=row["waiting_on"],
        has_dependents=bool(row["has_dependents"]),
        on_dependency_failure=row["on_dependency_failure"],
    )


def row_to_history(row: sqlite3.Row) -> HistoryEntry:
    return HistoryEntry(
        id=row["id"], job_id=row["job_id"], at=ts(row["at"]) or datetime.now(UTC),
        action=row["action"],
        from_state=JobState(row["from_state"]) if row["from_state"] else None,
        to_state=JobState(row["to_state"]), attempt=row["attempt"], actor=row["actor"],
        reason=row["reason"],
    )
