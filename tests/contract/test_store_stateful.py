"""Stateful property test of the real stores against a model built on ``conveyor.lifecycle``.

tests/unit/test_lifecycle_stateful.py checks the pure in-memory machine. This one drives each
real store (SQLite on a file with a fake clock, and the real PostgreSQL server) through what
really moves jobs: the app's control verbs (enqueue, pause, resume, cancel, retry) and the
worker's store operations (claim, heartbeat, progress and checkpoints, outcomes, the reaper),
in random order, legal or not, on a few jobs. The model moves its copy of each job with
:class:`JobStateMachine` (so :data:`TRANSITIONS` and its guards decide what is legal) and keeps
the request flags, leases and history rows the store should have. After every step each job
must match the model: state, attempt, flags, lease, progress and the exact history; an illegal
verb raises :class:`InvalidStateError` and writes nothing; a write under any lease but the
current one is refused; no job ever has two leases that a heartbeat accepts.

Each example uses a job type of its own, so the examples share one database (and the reaper
may also reap an earlier example's leftovers, which are no longer watched).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conveyor import Conveyor, JobContext, transitions
from conveyor.changes import Change, ChangeRefused, Lease
from conveyor.errors import InvalidStateError, LeaseLost
from conveyor.lifecycle import TRANSITIONS, JobState, JobStateMachine
from conveyor.model import Job, JobError, JobProgress
from conveyor.retry import Backoff
from conveyor.stores.base import Signals, Store
from conveyor.stores.sqlite import SQLiteStore
from conveyor.worker.executor import failure_changes
from conveyor.worker.reaper import ReapResult, reap
from tests.contract.helpers import expire_lease, expire_pause, pass_time

S = JobState
MAX_JOBS = 12  # per example
MAX_LIVE = 3  # jobs not yet finished, at once
LEASE = 30.0
#: Retry delays: none, or longer than a lease but shorter than one ``time_passes`` step.
DELAYED_BACKOFF = Backoff(base=100.0, max_delay=100.0, jitter=0.0)
NO_BACKOFF = Backoff(base=0.0)
TIME_STEP = 200.0
FINISHED = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
WORKER = "stateful-worker"
ERROR = JobError("RuntimeError", "boom")
#: History rows as the test compares them: (action, from_state, to_state).
Row = tuple[str, JobState | None, JobState]
LIFECYCLE = JobStateMachine()
VERBS = ("pause", "resume", "cancel", "retry")
#: The verbs an operator aims at jobs they fit; cancel (which ends a job) comes up less often.
AIMED_VERBS = ("pause", "pause", "resume", "resume", "retry", "retry", "cancel")
LATE_MOVES = ("retry", "cancel_pending", "cancel_paused")
OUTCOMES = ("complete", "fail", "forced_cancel", "hand_back")
STALE_WRITES = ("complete", "fail", "pause", "cancel", "checkpoint", "progress", "heartbeat")


def _has_lease(machine: StoreMachine) -> bool:
    return any(e.lease is not None for e in machine.jobs.values())



def held_signals(answer: Mapping[str, Signals], lease: Lease) -> Signals | None:
    """The heartbeat's answer for ``lease``, or None when it is lost.

    The answer is keyed by lease token (issue 8 item 17) or, before that, by job id; callers
    send at most one lease per job in a call, so either key is unambiguous.
    """
    if lease.token in answer:
        return answer[lease.token]
    return answer.get(lease.job_id)


@dataclass
class Expected:
    """What the store must hold for one job."""

    job: Job  # moved by the lifecycle's JobStateMachine; flags set by hand
    history: list[Row]
    delayed: bool = False  # pending with its run_at still ahead (an automatic retry's backoff)
    lease: Lease | None = None
    leases: list[Lease] = field(default_factory=list)  # every lease ever handed out
    lease_expired: bool = False
    pause_expired: bool = False
    ever_started: bool = False
    rows_checked: int = -1  # how many history rows the store was last seen to have

    @property
    def state(self) -> JobState:
        return self.job.state

    def move(self, target: JobState, action: str) -> None:
        source = self.job.state
        assert LIFECYCLE.can_transition(self.job, target), f"model bug: {source} -> {target}"
        LIFECYCLE.transition(self.job, target)
        self.history.append((action, source, target))
        if target is not S.RUNNING:
            self.lease = None
            self.lease_expired = False
        self.pause_expired = False

    def request(self, action: str, flag: str, value: bool) -> None:
        setattr(self.job, flag, value)
        self.history.append((action, self.job.state, self.job.state))

    def clear(self, *flags: str) -> None:
        for flag in flags:
            setattr(self.job, flag, False)

    def set_progress(self, progress: JobProgress, checkpoint: bool = True) -> None:
        self.job.progress.current_step = progress.current_step
        self.job.progress.total_steps = progress.total_steps
        if checkpoint:
            self.job.progress.last_checkpoint = dict(progress.last_checkpoint)


class StoreMachine(RuleBasedStateMachine):
    """One example: a handful of jobs of a fresh type on the store under test."""

    def __init__(self, store: Store, app: Conveyor) -> None:
        super().__init__()
        self.store = store
        self.app = app
        self.job_type = f"st-{uuid.uuid4().hex[:12]}"
        self.app.job(self.job_type)(_noop)
        self.jobs: dict[str, Expected] = {}
        self.ids: list[str] = []
        self.step = 0

    # -- helpers -------------------------------------------------------------------------------
    def pick(self, index: int) -> Expected:
        return self.jobs[self.ids[index % len(self.ids)]]

    def pick_leased(self, index: int) -> Expected:
        """One of the jobs running under a lease the machine (the worker) holds."""
        leased = [e for e in self.jobs.values() if e.lease is not None]
        return leased[index % len(leased)]

    def unchanged(self, exp: Expected, action: Callable[[], object],
                  refusal: type[Exception] | tuple[type[Exception], ...]) -> None:
        """``action`` must raise ``refusal`` and leave the job and its history untouched."""
        before = self.store.get_job(exp.job.id)
        with pytest.raises(refusal):
            action()
        assert self.store.get_job(exp.job.id) == before, "a refused write changed the job"
        assert self._rows(exp.job.id) == exp.history

    def _rows(self, job_id: str) -> list[Row]:
        return [(h.action, h.from_state, h.to_state) for h in self.store.history(job_id)]

    def apply(self, changes: Sequence[Change]) -> Job:
        return self.app.apply(changes)

    def next_progress(self) -> JobProgress:
        self.step += 1
        return JobProgress(self.step, 1000, {"step": self.step})

    def finish_failure(self, exp: Expected, *, interrupted: bool = False) -> None:
        """running -> failed, then -> pending if a retry is left (as ``failure_changes``).

        ``interrupted`` (the reaper's lost worker): an operator's pause request holds for the
        retried run; a run that failed by itself drops it.
        """
        pause_requested = exp.job.pause_requested
        exp.move(S.FAILED, "fail")
        exp.clear("pause_requested")
        if LIFECYCLE.can_transition(exp.job, S.PENDING):
            exp.move(S.PENDING, "retry")
            exp.clear("cancel_requested", "pause_requested")
            exp.delayed = exp.job.backoff == DELAYED_BACKOFF.to_dict()
            exp.job.pause_requested = interrupted and pause_requested

    # -- control verbs -------------------------------------------------------------------------
    @initialize(jobs=st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1,
                              max_size=MAX_LIVE))
    def first_jobs(self, jobs: list[tuple[int, bool]]) -> None:
        for max_attempts, delayed_retries in jobs:
            self.enqueue(max_attempts, delayed_retries)

    @precondition(lambda self: len(self.ids) < MAX_JOBS and sum(
        e.state not in FINISHED for e in self.jobs.values()) < MAX_LIVE)
    @rule(max_attempts=st.integers(0, 2), delayed_retries=st.booleans())
    def enqueue(self, max_attempts: int, delayed_retries: bool) -> None:
        backoff = DELAYED_BACKOFF if delayed_retries else NO_BACKOFF
        job = self.app.enqueue(self.job_type, {}, max_attempts=max_attempts, backoff=backoff,
                               pause_timeout=86400.0)
        assert job.state is S.PENDING and job.attempt == 0
        self.jobs[job.id] = Expected(copy.deepcopy(job), [("create", None, S.PENDING)])
        self.ids.append(job.id)

    def verb(self, exp: Expected, verb: str) -> None:
        """Call one of the app's control verbs; the model says what it must do."""
        job = exp.job
        call = getattr(self.app, verb)
        if verb == "pause" and job.state is S.RUNNING and not job.cancel_requested:
            call(job.id, actor="op")
            if not job.pause_requested:
                exp.request("request_pause", "pause_requested", True)
        elif verb == "resume" and job.state is S.PAUSED:
            call(job.id, actor="op")
            if not job.resume_requested:
                exp.request("request_resume", "resume_requested", True)
        elif verb == "resume" and job.state is S.RUNNING and job.pause_requested \
                and not job.cancel_requested:
            call(job.id, actor="op")
            exp.request("withdraw_pause", "pause_requested", False)
        elif verb == "cancel" and job.state in (S.PENDING, S.PAUSED):
            assert call(job.id, actor="op").state is S.CANCELLED
            exp.move(S.CANCELLED, "cancel")
            exp.clear("resume_requested", "pause_requested")
        elif verb == "cancel" and job.state is S.RUNNING:
            call(job.id, actor="op")
            if not job.cancel_requested:
                exp.request("request_cancel", "cancel_requested", True)
        elif verb == "retry" and job.state is S.FAILED \
                and LIFECYCLE.can_transition(job, S.PENDING):
            assert call(job.id, actor="op").state is S.PENDING
            exp.move(S.PENDING, "retry")
            exp.clear("cancel_requested", "pause_requested")
            exp.delayed = False
        else:
            self.unchanged(exp, lambda: call(job.id, actor="op"), InvalidStateError)

    def any_verb(self, index: int, verb: str) -> None:
        """Any verb on any job: most of these are illegal and must change nothing."""
        self.verb(self.pick(index), verb)

    def fitting_verb(self, index: int, verb: str) -> None:
        """A verb on a job it is meant for (when there is one): moves the lifecycle along."""
        fits = [e for e in self.jobs.values() if {
            "pause": e.state is S.RUNNING,
            "resume": e.state is S.PAUSED or (e.state is S.RUNNING and e.job.pause_requested),
            "cancel": e.state not in FINISHED,
            "retry": e.state is S.FAILED,
        }[verb]]
        if not fits:
            fits = [e for e in self.jobs.values() if e.state not in FINISHED]
        self.verb(fits[index % len(fits)] if fits else self.pick(index), verb)

    def late_decision(self, index: int, move: str) -> None:
        """A caller that decided on an old read (it lost a race): the store's own guard, not the
        app's check, must refuse the move unless the lifecycle allows it now."""
        failed = [e for e in self.jobs.values() if e.state is S.FAILED]
        exp = failed[index % len(failed)] if move == "retry" and failed else self.pick(index)
        job_id = exp.job.id
        if move == "retry":
            change = transitions.retry(job_id, "op", "late")
            allowed = exp.state is S.FAILED and LIFECYCLE.can_transition(exp.job, S.PENDING)
        else:
            source = S.PENDING if move == "cancel_pending" else S.PAUSED
            change = transitions.cancel_idle(job_id, source, "op", "late")
            allowed = exp.state is source
        if not allowed:
            self.unchanged(exp, lambda: self.apply([change]), ChangeRefused)
        elif move == "retry":
            assert self.apply([change]).state is S.PENDING
            exp.move(S.PENDING, "retry")
            exp.clear("cancel_requested", "pause_requested")
            exp.delayed = False
        else:
            assert self.apply([change]).state is S.CANCELLED
            exp.move(S.CANCELLED, "cancel")
            exp.clear("resume_requested", "pause_requested")

    # -- worker operations ---------------------------------------------------------------------
    def claim(self, limit: int) -> None:
        resumable = {i for i, e in self.jobs.items()
                     if e.state is S.PAUSED and e.job.resume_requested}
        pending = {i for i, e in self.jobs.items() if e.state is S.PENDING and not e.delayed}
        claimed = self.store.claim(WORKER, queues=[], job_types=[self.job_type], limit=limit,
                                   lease_seconds=LEASE)
        ids = [j.id for j in claimed]
        assert len(set(ids)) == len(ids)
        assert set(ids) <= resumable | pending, "claimed a job that was not runnable"
        assert len(ids) == min(limit, len(resumable | pending))
        assert len(set(ids) & resumable) == min(limit, len(resumable)), "resumed jobs go first"
        for job in claimed:
            exp = self.jobs[job.id]
            exp.move(S.RUNNING, "resume" if job.id in resumable else "start")
            exp.clear("pause_requested", "resume_requested")
            assert job.lease_token is not None and job.worker_id == WORKER
            exp.lease = Lease(job.id, job.lease_token, job.attempt)
            exp.leases.append(exp.lease)
            exp.ever_started = True

    def heartbeat(self, picks: list[tuple[int, int]]) -> None:
        """One call, at most one lease per job: its current one, or an older one."""
        chosen: dict[str, Lease] = {}
        for index, which in picks:
            exp = self.pick(index)
            if exp.leases:
                chosen.setdefault(exp.job.id, exp.leases[-1 - which % len(exp.leases)])
        answer = self.store.heartbeat(list(chosen.values()), LEASE)
        assert len(answer) <= len(chosen)
        for job_id, lease in chosen.items():
            exp = self.jobs[job_id]
            signals = held_signals(answer, lease)
            if lease == exp.lease:
                assert signals == Signals(exp.job.pause_requested, exp.job.cancel_requested)
                exp.lease_expired = False
            else:
                assert signals is None, "a heartbeat renewed a stale lease"
        if picks:
            self.one_lease_per_job(self.pick(picks[0][0]))

    def one_lease_per_job(self, exp: Expected) -> None:
        """Of every lease a job was ever given, a heartbeat accepts its current one only."""
        held = [lease for lease in exp.leases
                if held_signals(self.store.heartbeat([lease], LEASE), lease) is not None]
        assert held == ([exp.lease] if exp.lease is not None else [])
        if exp.lease is not None:
            exp.lease_expired = False

    def progress(self, index: int, checkpoint: bool) -> None:
        """A progress write, or a checkpoint that then honours a pending cancel or pause."""
        exp = self.pick_leased(index)
        lease = exp.lease
        assert lease is not None
        progress = self.next_progress()
        signals = self.store.save_progress(lease, progress, checkpoint=checkpoint)
        assert signals == Signals(exp.job.pause_requested, exp.job.cancel_requested)
        exp.set_progress(progress, checkpoint)
        if not checkpoint:
            return
        if signals.cancel_requested:
            self.apply([transitions.cancel_running(lease, lease.job_id, progress, WORKER,
                                                   "cancelled at checkpoint")])
            exp.move(S.CANCELLED, "cancel")
            exp.clear("pause_requested")
        elif signals.pause_requested:
            self.apply([transitions.pause_at_checkpoint(lease, progress, WORKER)])
            exp.move(S.PAUSED, "pause")
            exp.clear("pause_requested", "resume_requested")

    def finish(self, index: int, outcome: str) -> None:
        """The job's code returned or raised, its worker stopped it after the cancel grace,
        or its worker shut down and handed it back (paused, with a resume requested)."""
        exp = self.pick_leased(index)
        lease, job = exp.lease, exp.job
        assert lease is not None
        if outcome == "hand_back":
            self.apply([transitions.pause_at_checkpoint(lease, None, WORKER, resume=True,
                                                        reason="worker shutdown")])
            exp.move(S.PAUSED, "pause")
            exp.clear("pause_requested")
            exp.job.resume_requested = True
            return
        if outcome == "forced_cancel" and not job.cancel_requested:
            self.unchanged(exp, lambda: self.apply([transitions.cancel_running(
                lease, job.id, None, WORKER, "grace")]), ChangeRefused)
            return
        if outcome == "complete":
            self.apply([transitions.complete(lease, {"ok": True}, WORKER)])
            exp.move(S.COMPLETED, "complete")
            exp.clear("pause_requested", "cancel_requested")
        elif job.cancel_requested:  # a cancel requested before the failure wins over it
            self.apply([transitions.cancel_running(lease, job.id, None, WORKER, "cancelled")])
            exp.move(S.CANCELLED, "cancel")
            exp.clear("pause_requested")
        else:
            self.apply(failure_changes(copy.deepcopy(job), lease, ERROR, "raised", WORKER,
                                       self.app.rand))
            self.finish_failure(exp)

    def stale_write(self, index: int, which: int) -> None:
        """A zombie's write: a forged token of the right length, a wrong attempt, an old lease.

        Running jobs come first: there the state guard alone would let the write through, and
        only the lease fence refuses it.
        """
        leased = [e for e in self.jobs.values() if e.lease is not None] or [
            e for e in self.jobs.values() if e.leases]
        exp = leased[index % len(leased)]
        stale: list[Lease] = []
        if exp.lease is not None:
            current = exp.lease
            stale.append(Lease(current.job_id, "0" * len(current.token), current.attempt))
            stale.append(Lease(current.job_id, current.token, current.attempt + 1))
        stale.extend(lease for lease in reversed(exp.leases) if lease != exp.lease)
        if not stale:
            return
        for offset, write in enumerate(STALE_WRITES):  # every kind of write, each refused
            self.stale_write_one(exp, stale[(which + offset) % len(stale)], write)

    def stale_write_one(self, exp: Expected, lease: Lease, write: str) -> None:
        job_id = lease.job_id
        if write == "heartbeat":
            assert held_signals(self.store.heartbeat([lease], LEASE), lease) is None
            return
        if write in ("checkpoint", "progress"):
            self.unchanged(exp, lambda: self.store.save_progress(
                lease, JobProgress(999, 1000, {"zombie": True}),
                checkpoint=write == "checkpoint"), LeaseLost)
            return
        change = {
            "complete": lambda: transitions.complete(lease, {"zombie": True}, "zombie"),
            "fail": lambda: transitions.fail(lease, job_id, ERROR, "raised", "zombie"),
            "pause": lambda: transitions.pause_at_checkpoint(lease, None, "zombie"),
            "cancel": lambda: transitions.cancel_running(lease, job_id, None, "zombie", ""),
        }[write]()
        self.unchanged(exp, lambda: self.apply([change]), ChangeRefused)

    # -- time and the reaper -------------------------------------------------------------------
    def expire(self, index: int) -> None:
        """A worker stops heartbeating (its lease runs out), or a pause outlives its timeout."""
        idle = [e for e in self.jobs.values() if e.lease is not None or e.state is S.PAUSED]
        exp = idle[index % len(idle)]
        if exp.lease is not None:
            expire_lease(self.store, exp.job.id)
            exp.lease_expired = True
        else:
            expire_pause(self.store, exp.job.id)
            exp.pause_expired = True

    def time_passes(self) -> None:
        """Longer than a lease and any retry delay, far shorter than a pause timeout."""
        pass_time(self.store, TIME_STEP)
        for exp in self.jobs.values():
            exp.delayed = False
            if exp.state is S.RUNNING:
                exp.lease_expired = True

    @rule(time_passes=st.booleans())
    def reaper(self, time_passes: bool) -> None:
        """A reaper pass, after a while without heartbeats or just now."""
        if time_passes:
            self.time_passes()
        lost = {i: copy.deepcopy(e.job) for i, e in self.jobs.items()
                if e.state is S.RUNNING and e.lease_expired}
        timed_out = {i for i, e in self.jobs.items() if e.state is S.PAUSED and e.pause_expired}
        # Passes until nothing is left: earlier examples' leftovers share the database and
        # are reaped oldest first, so one pass (100 jobs) may not reach this example's jobs.
        for _ in range(100):
            if reap(self.app) == ReapResult():
                break
        for job_id, job in lost.items():
            exp = self.jobs[job_id]
            if job.cancel_requested:
                exp.move(S.CANCELLED, "cancel")
                exp.clear("pause_requested")
            else:
                self.finish_failure(exp, interrupted=True)
        for job_id in timed_out:
            exp = self.jobs[job_id]
            if exp.job.resume_requested:
                continue  # a resumed job waits for a slot: the pause timer no longer applies
            exp.move(S.CANCELLED, "cancel")
            exp.clear("resume_requested", "pause_requested")

    # -- the rules: few, each choosing among many moves --------------------------------------
    # Hypothesis switches whole rules off in some examples (swarm testing); grouping the moves
    # under four rules keeps every example able to reach deep states.

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def control(self, data: st.DataObject) -> None:
        """An operator: a verb on a job it fits, on any job, or a decision made too late."""
        mode = data.draw(st.sampled_from(["fitting", "any", "late"]), label="mode")
        index = data.draw(st.integers(0, MAX_JOBS - 1), label="job")
        if mode == "late":
            self.late_decision(index, data.draw(st.sampled_from(LATE_MOVES), label="move"))
            return
        verb = data.draw(st.sampled_from(AIMED_VERBS if mode == "fitting" else VERBS),
                         label="verb")
        if mode == "fitting":
            self.fitting_verb(index, verb)
        else:
            self.any_verb(index, verb)

    @rule(data=st.data())
    def worker(self, data: st.DataObject) -> None:
        """A worker (or a zombie of one): whatever it can do with the jobs as they are."""
        leased = _has_lease(self)
        ever_leased = any(e.leases for e in self.jobs.values())
        usable = {"claim": True, "heartbeat": ever_leased, "progress": leased,
                  "finish": leased, "stale_write": ever_leased,
                  "expire": leased or any(e.state is S.PAUSED for e in self.jobs.values())}
        op = data.draw(st.sampled_from([name for name, ok in usable.items() if ok]), label="op")
        index = data.draw(st.integers(0, MAX_JOBS - 1), label="job")
        if op == "claim":
            self.claim(data.draw(st.integers(1, 3), label="limit"))
        elif op == "heartbeat":
            self.heartbeat(data.draw(st.lists(st.tuples(
                st.integers(0, MAX_JOBS - 1), st.integers(0, 5)), max_size=MAX_LIVE),
                label="leases"))
        elif op == "progress":
            self.progress(index, data.draw(st.booleans(), label="checkpoint"))
        elif op == "finish":
            self.finish(index, data.draw(st.sampled_from(OUTCOMES), label="outcome"))
        elif op == "stale_write":
            self.stale_write(index, data.draw(st.integers(0, 5), label="which lease"))
        else:
            self.expire(index)

    # -- checked after every step --------------------------------------------------------------
    @invariant()
    def store_matches_model(self) -> None:
        stored = {job.id: job for job in self.store.get_jobs(self.ids)}
        assert set(stored) == set(self.ids)
        for job_id, exp in self.jobs.items():
            job, want = stored[job_id], exp.job
            assert job.state is want.state, (job_id, job.state, want.state)
            assert job.attempt == want.attempt
            assert (job.pause_requested, job.cancel_requested, job.resume_requested) == (
                want.pause_requested, want.cancel_requested, want.resume_requested)
            assert job.lease_token == (exp.lease.token if exp.lease else None)
            assert (job.worker_id is not None) == (job.state is S.RUNNING)
            assert job.progress == want.progress
            assert (job.started_at is not None) == exp.ever_started
            assert (job.finished_at is not None) == (job.state in FINISHED)
            # A finished job the model did not move is re-read at the end (teardown): cheaper
            # per step, and a stray history row is still caught.
            if job.state not in FINISHED or exp.rows_checked != len(exp.history):
                self.check_history(exp)

    def check_history(self, exp: Expected) -> None:
        rows = self._rows(exp.job.id)
        assert rows == exp.history, "history is not exactly the moves made"
        for action, source, target in rows:
            assert source is None or source is target or target in TRANSITIONS[source], (
                action, source, target)
        exp.rows_checked = len(rows)

    def teardown(self) -> None:
        for exp in self.jobs.values():
            self.check_history(exp)


def _noop(ctx: JobContext) -> None:
    """The registered function: the machine plays the worker itself, so this never runs."""


@pytest.mark.timeout(600)  # ~30 s when it passes; shrinking a failure on PostgreSQL takes longer
def test_stores_follow_the_lifecycle_model(store: Store) -> None:
    app = Conveyor(store=store, rand=lambda: 0.0)
    # SQLite steps are cheap; PostgreSQL's are round trips: both together stay well under a
    # minute on a loaded 2-core machine.
    examples = 80 if isinstance(store, SQLiteStore) else 60
    class Machine(StoreMachine):
        def __init__(self) -> None:
            super().__init__(store, app)

    run_state_machine_as_test(Machine, settings=settings(
        max_examples=examples, stateful_step_count=30, deadline=None, derandomize=True,
        database=None, report_multiple_bugs=False,
        # no "explain" phase: it traces every line, which turns a failure's report into minutes
        phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
