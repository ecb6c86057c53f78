"""The vocabulary of changes: what the core asks a store to write, and how a store refuses.

The core (:mod:`conveyor.transitions`, the app, the worker) speaks in :class:`Change` objects;
the stores compile them to SQL. This module is the core's, not the stores': the stores import
it, and it imports no store, so the core and the stores lean one way only.

Times that must be judged by the database's clock (leases, run_at, pause timeouts) are passed
as :class:`DbNow` markers and resolved by the store, so workers on machines with skewed clocks
still agree on when a lease has expired.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from conveyor.lifecycle import JobState, find_transition
from conveyor.model import Job


@dataclass(frozen=True)
class DbNow:
    """The database's current time plus ``offset`` seconds, resolved inside the store."""

    offset: float = 0.0


@dataclass(frozen=True)
class Increment:
    """Add ``by`` to the column's current value."""

    by: int = 1


@dataclass(frozen=True)
class FirstTime:
    """Set the column to the database's now only if it is still NULL (``started_at``)."""


@dataclass(frozen=True)
class FreshToken:
    """A new random lease token, made by the store for each row it writes (a batched claim
    takes many rows in one statement, each under a token of its own)."""


#: Columns a :class:`Change` may set, and how the store must encode them. Both stores compile
#: column names from these sets only; no store keeps a list of its own.
JSON_COLUMNS = frozenset({"result", "error", "checkpoint"})
SETTABLE_COLUMNS = frozenset({
    "started_at", "finished_at", "paused_at", "run_at", "line_at",
    "result", "error", "checkpoint", "current_step", "total_steps",
    "pause_requested", "cancel_requested", "resume_requested",
    "worker_id", "lease_token", "lease_expires_at", "attempt", "priority",
    "max_attempts",  # lowered to the attempts used by a failure for good, never raised
})

#: The boolean request columns a ``flag`` / ``unless_flag`` guard may name.
REQUEST_FLAGS = frozenset({"pause_requested", "cancel_requested", "resume_requested"})


class Lease(NamedTuple):
    """A worker's claim on a running job; every write from the worker is fenced by it.

    Immutable and hashable as a frozen dataclass was, for a tenth of its construction cost
    (a frozen dataclass sets each field through ``object.__setattr__``): a worker makes one
    per job it claims.
    """

    job_id: str
    token: str
    attempt: int


@dataclass(slots=True)
class Change:
    """One compare-and-set on one job, with the history row it leaves behind.

    Never changed once built (``dataclasses.replace`` makes a changed copy), but not declared
    frozen: a frozen dataclass sets each of its 14 fields through ``object.__setattr__``,
    which made building one 3.5 us instead of 1.0, paid for every job a worker completes.

    The update happens only if the job's state is in ``when`` and every guard holds; otherwise
    the store raises :class:`ChangeRefused` carrying the job as it is, and nothing is written.

    - ``to_state`` None means the state stays (a request such as ``pause_requested``).
    - ``lease``: the job must be running under exactly this lease token and attempt.
    - ``retryable``: ``attempt < max_attempts`` (the retry guard).
    - ``lease_expired``: the lease has expired by the database's clock (the reaper).
    - ``pause_expired``: paused for longer than the job's ``pause_timeout``.
    - ``pause_expired``: also requires no pending resume (a resumed job waiting for a slot is
      no longer paused in the user's sense, so the pause timer does not apply to it).
    - ``flag``: the named boolean column must currently be true (e.g. ``cancel_requested``).
    - ``due``: ``run_at`` has passed by the database's clock (a claim by id, ``app.start``).
    - ``unless_flag``: the named boolean column must currently be false; a failure is guarded
      by ``cancel_requested`` this way, so a cancel requested a moment before wins over it.
    """

    job_id: str
    action: str
    when: frozenset[JobState]
    to_state: JobState | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    lease: Lease | None = None
    retryable: bool = False
    lease_expired: bool = False
    pause_expired: bool = False
    due: bool = False
    flag: str | None = None
    unless_flag: str | None = None
    actor: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        if not SETTABLE_COLUMNS.issuperset(self.values):
            raise ValueError(f"Change may not set {sorted(set(self.values) - SETTABLE_COLUMNS)}")
        for name in (self.flag, self.unless_flag):
            if name is not None and name not in REQUEST_FLAGS:
                raise ValueError(f"unknown flag {name!r}")


#: The markers a store compiles to SQL of their own, each its own kind of assignment.
MARKERS: tuple[type, ...] = (DbNow, Increment, FirstTime, FreshToken)


class _MarkerOfType(dict[type, type | None]):
    """The marker class each type of value is (None: a plain value), found once per type.

    A change's shape is asked for on every write a worker makes, for each of its ~7 values;
    one dict lookup per value, in C (:func:`shape_key` maps it over the values), costs a
    fraction of a Python call per value. The types a program passes are few (the markers,
    JSON's types, datetime), so this stays small.
    """

    def __missing__(self, kind: type) -> type | None:
        found = next((marker for marker in MARKERS if issubclass(kind, marker)), None)
        self[kind] = found
        return found


_MARKER_OF_TYPE = _MarkerOfType()


def marker_kind(value: Any) -> type | None:
    """The marker class ``value`` is an instance of, or None for a plain value."""
    return _MARKER_OF_TYPE[type(value)]


def shape_key(change: Change) -> Hashable:
    """What the statement a store compiles for ``change`` depends on, its values aside: the
    columns it sets (in order) with the marker each is given, the target state, the source
    states and every guard. Changes with equal keys compile to one statement and differ only
    in their parameters, so a store compiles a shape once and batches the changes of one
    shape; a change differing in any column, marker or guard gets a key of its own."""
    values = change.values
    return (tuple(values), tuple(map(_MARKER_OF_TYPE.__getitem__, map(type, values.values()))),
            change.to_state, change.when, change.lease is not None, change.retryable,
            change.lease_expired, change.pause_expired, change.due, change.flag,
            change.unless_flag)


class ChangeRefused(Exception):
    """A compare-and-set matched no row. ``job`` is the job as it is now (unchanged)."""

    def __init__(self, change: Change, job: Job):
        super().__init__(f"{change.action} refused for job {job.id} in state {job.state.value}")
        self.change = change
        self.job = job


def wakes_workers(change: Change) -> bool:
    """Whether ``change`` may make a job claimable now, so waiting workers should look."""
    return (change.to_state is JobState.PENDING or change.values.get("resume_requested") is True
            or "run_at" in change.values)


def single_job(changes: Sequence[Change]) -> str:
    """The one job ``changes`` are about; ``apply()`` refuses empty or mixed batches."""
    if not changes:
        raise ValueError("apply() needs at least one change")
    job_id = changes[0].job_id
    if any(c.job_id != job_id for c in changes):
        raise ValueError("apply() takes changes to one job only")
    return job_id


def distinct_jobs(changes: Sequence[Change]) -> None:
    """``apply_many()`` takes one change per job: each is a compare-and-set of its own."""
    ids = [c.job_id for c in changes]
    if len(set(ids)) != len(ids):
        raise ValueError("apply_many() takes one change per job")


#: The states a claim takes a job from, and the history action each one leaves.
CLAIM_ACTIONS: Mapping[JobState, str] = {JobState.PENDING: "start", JobState.PAUSED: "resume"}


@dataclass(frozen=True)
class ClaimStart:
    """What a claim writes on each job it takes: the ``start`` / ``resume`` transitions.

    Built by the core and read by the stores, so a store's claim query holds no policy of its
    own: it picks the candidates in claim order and writes :attr:`values` (plus a fresh lease
    token per job, which only the store can make at the moment it takes the row).
    """

    worker_id: str
    lease_seconds: float

    @property
    def values(self) -> dict[str, Any]:
        """The columns every claimed job gets, the lease token excepted.

        ``pause_requested`` is left alone: a pending job carries one only when its previous
        run's worker was lost after an operator asked it to pause, and the request still holds.
        ``paused_at`` is kept, so a claimed job whose ``paused_at`` is set is a resumed one
        (a retry clears it: a pending job never has one).
        """
        return {
            "started_at": FirstTime(), "worker_id": self.worker_id,
            "lease_expires_at": DbNow(self.lease_seconds), "resume_requested": False,
        }

    def change(self, job_id: str, source: JobState, token: str | FreshToken) -> Change:
        """The compare-and-set that claims ``job_id`` from ``source`` under lease ``token``."""
        if source not in CLAIM_ACTIONS or find_transition(source, JobState.RUNNING) is None:
            raise ValueError(f"a claim cannot start a job that is {source.value}")
        return Change(
            job_id, CLAIM_ACTIONS[source], frozenset({source}), JobState.RUNNING,
            {**self.values, "lease_token": token},
            flag="resume_requested" if source is JobState.PAUSED else None,
            actor=self.worker_id,
        )
