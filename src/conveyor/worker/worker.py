"""The worker: claims jobs into free slots, runs them, and keeps their leases alive.

Execution model. Each claimed job runs the executor pipeline on a thread of the worker's slot
pool (threads reused across jobs, see :mod:`conveyor.worker.slots`). Sync job functions run in
that thread; ``async def`` job functions run on one event loop shared by the worker (its own
thread), and the slot thread waits for them. Threads are the default because
jobs then share the app's objects and connections, a claim costs no fork, and async jobs
still get real cancellation (``task.cancel()``). The price: a sync job that never
reaches a checkpoint can only be interrupted between bytecodes (best effort), and a job that
crashes the interpreter takes the worker with it — the reaper then fails the job as lost and
retries it, and once its attempts are used up it stays failed, so a poison job cannot make
workers crash-loop forever.

A worker with one slot lets the slot's thread claim its own next jobs (see
:meth:`Worker._claim_next`): no thread hand-off per job. A thread pool of several slots runs
a claimed batch on one thread while its jobs are short: the thread that takes the first job
runs the others after it and claims the next batch itself, and the loop hands a job held for
longer than :data:`~conveyor.worker.slots.HAND_OFF_AFTER` to a thread of its own (see
:class:`~conveyor.worker.slots.HeldSlots`). Short jobs then cost no thread switch each; a
long one keeps the others from starting for about 2 ms.

With ``pool="process"`` each slot's thread instead hands its jobs to a child process of its own
(:mod:`conveyor.worker.processes`): a forced stop kills the child, a crash fails only its job, and
the store is still only touched by this process.

One monitor thread, ticking a few times a second, writes coalesced progress, learns of pause and
cancel requests, extends leases every ``heartbeat_interval``, and enforces timeouts and the
cancel grace period. The reaper runs every ``reap_interval`` on a thread of its own, so that
whatever it waits for (another worker's stuck transaction, a slow store) never delays this
worker's own heartbeats; a watchdog thread warns when a lease went a lease time unrenewed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any, assert_never

from conveyor import joblogs, transitions, validate
from conveyor.changes import ChangeRefused, Lease
from conveyor.context import Execution, ForcedCancelInterrupt, TimeoutInterrupt
from conveyor.engine import Engine, HasEngine, engine_of
from conveyor.errors import ConfigurationError, ConveyorError, StoreError
from conveyor.ids import short_id
from conveyor.joblogs import JobLog, JobLogLimits
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError
from conveyor.observe import RunWatch, otel_installed
from conveyor.presence import WorkerRegistration
from conveyor.registry import JobType
from conveyor.retention import DEFAULT_RETENTION, Retention
from conveyor.schedules import Scheduler
from conveyor.stores.base import JobQuery
from conveyor.worker.completer import MAX_BATCH, Completer
from conveyor.worker.executor import OutcomeKind, execute, record_failure
from conveyor.worker.processes import ProcessRunner, check_options
from conveyor.worker.reaper import reap
from conveyor.worker.slots import (
    HAND_OFF_AFTER,
    HOLD_BELOW,
    HeldSlots,
    Signal,
    Slot,
    SlotPool,
    interrupt,
)
from conveyor.worker.upkeep import Presence, run_retention

#: The old name of :class:`Slot` (tests build slots by hand).
_Slot = Slot

log = logging.getLogger("conveyor.worker")
#: A burst worker waits for pending jobs due within this many seconds (retries in backoff);
#: jobs scheduled further ahead are left for a long-running worker.
BURST_HORIZON = 300.0
#: How long a freed slot waits for others to free before the next claim (seconds).
CLAIM_GATHER = 0.001
#: How often running jobs' new log lines are written (seconds): one write for all of them.
LOG_FLUSH_INTERVAL = 1.0


def _tracer_provider_set() -> bool:
    from opentelemetry import trace

    return type(trace.get_tracer_provider()).__name__ not in ("ProxyTracerProvider",
                                                               "NoOpTracerProvider")


@dataclass
class WorkerStats:
    """What a worker did, by outcome."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    paused: int = 0
    cancelled: int = 0
    lost: int = 0
    released: int = 0
    snoozed: int = 0

    def count(self, outcome: OutcomeKind) -> None:
        match outcome:
            case OutcomeKind.COMPLETED:
                self.completed += 1
            case OutcomeKind.FAILED:
                self.failed += 1
            case OutcomeKind.RETRIED:
                self.retried += 1
            case OutcomeKind.PAUSED:
                self.paused += 1
            case OutcomeKind.CANCELLED:
                self.cancelled += 1
            case OutcomeKind.LOST:
                self.lost += 1
            case OutcomeKind.RELEASED:
                self.released += 1
            case OutcomeKind.SNOOZED:
                self.snoozed += 1
            case _:
                assert_never(outcome)


class Worker:
    """Runs jobs of the engine's registered types from its store.

    Takes the engine (``app.engine``); an app is accepted too, for its engine.

    ``job_logs``: what each attempt's log keeps (:class:`~conveyor.joblogs.JobLogLimits`;
    ``lines=0`` turns job logs off). ``metrics``: count and time runs in this process's
    Prometheus registry (needs ``prometheus_client``). ``tracing``: a span per run (None: when
    OpenTelemetry is installed and a tracer provider is set up). See docs/observability.md.
    """

    def __init__(self, engine: Engine | HasEngine, *, concurrency: int = 4,
                 queues: Sequence[str] | None = None, lease_seconds: float = 30.0,
                 heartbeat_interval: float = 10.0, poll_interval: float = 1.0,
                 reap_interval: float | None = None, shutdown_grace: float = 30.0,
                 cancel_grace: float = 10.0, progress_interval: float = 0.25,
                 worker_id: str | None = None, handle_signals: bool = True,
                 batch_wait: float = 0.0, batch_size: int = MAX_BATCH,
                 run_schedules: bool = True, pool: str = "thread",
                 app_path: str | None = None, max_jobs_per_child: int | None = None,
                 metrics: bool = False, tracing: bool | None = None,
                 job_logs: JobLogLimits | None = None,
                 retention: Retention | None = DEFAULT_RETENTION) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, not {concurrency}")
        if not 0 < heartbeat_interval < lease_seconds:
            raise ConfigurationError("heartbeat_interval must be > 0 and shorter than the lease")
        if not 0 <= batch_wait < lease_seconds:
            raise ConfigurationError("batch_wait must be >= 0 and shorter than the lease")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, not {batch_size}")
        self.engine = engine_of(engine)
        check_options(self.engine, pool, app_path, max_jobs_per_child)
        self.pool, self.app_path, self.max_jobs_per_child = pool, app_path, max_jobs_per_child
        self._children: ProcessRunner | None = None
        self.concurrency = concurrency
        self.queues = [validate.name("queue", q, config=True) for q in queues or []]
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval
        self.poll_interval = poll_interval
        self.reap_interval = heartbeat_interval if reap_interval is None else reap_interval
        self.shutdown_grace = shutdown_grace
        self.cancel_grace = cancel_grace
        self.progress_interval = progress_interval
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.handle_signals = handle_signals
        self.batch_wait = batch_wait
        self.batch_size = batch_size
        self.run_schedules = run_schedules
        self.metrics = metrics
        self.tracing = tracing
        self.job_logs = job_logs or JobLogLimits()
        self.running = False
        self._watch: RunWatch | None = None
        self._logs_due = 0.0
        #: When the monitor's previous round of flag reads began (monotonic; see _tick_progress).
        self._read_round = 0.0
        self.retention = retention  # None: this worker deletes no finished jobs
        self.stats = WorkerStats()
        self._presence = Presence(self.engine, WorkerRegistration(
            self.worker_id, concurrency, tuple(self.queues)), ttl=lease_seconds)
        self._completer = self._new_completer()
        self._slots: dict[str, Slot] = {}
        self._pool = SlotPool(concurrency, self._run_slot, self._forget)
        self._slots_lock = threading.Lock()
        #: Held while claiming and registering the claimed jobs' slots: a 1-slot worker's
        #: slot thread claims its next job itself (see _claim_next), the loop otherwise.
        self._claiming = threading.Lock()
        #: A 1-slot worker's slot thread may claim its next job (cleared, under _claiming,
        #: once the loop has returned: the shutdown then sees every slot there will be).
        self._chain = False
        #: A thread pool of several slots holds the jobs of a claim beyond the first for the
        #: thread that runs the first (HeldSlots).
        self._holds = pool == "thread" and concurrency > 1
        self._held = HeldSlots()
        #: A slot thread runs a held batch and claims the next one itself: the loop claims
        #: nothing meanwhile and looks at the held jobs every HAND_OFF_AFTER. Set by the
        #: loop's claim of a batch, cleared by that thread's claim that holds nothing, or by
        #: the loop when a held job waited too long.
        self._batch_running = False
        #: When a job last started on a slot thread (monotonic; ``math.inf`` while the batch's
        #: thread claims the next batch): a batch that started none for HAND_OFF_AFTER is
        #: running a longer job, and the loop claims for the free slots again.
        self._batch_moved = 0.0
        #: A moving average of this worker's runs (seconds, each run's share 1/5): jobs are
        #: held only while they are short (below HOLD_BELOW), so jobs of a few milliseconds
        #: never wait for one another. It starts at HOLD_BELOW (not short): a first claim of
        #: long jobs held would start them a millisecond apart, and jobs of equal length
        #: then kept that offset, claimed in smaller batches (measured: 13 % fewer jobs/s
        #: of 5 ms); one short run brings it below. Written by the slot threads without a
        #: lock: a lost update only shifts the average a little.
        self._run_time = HOLD_BELOW
        #: Held jobs handed to threads of their own because they waited HAND_OFF_AFTER.
        self.handed_over = 0
        self._types: list[str] = []
        self._slot_freed = Signal()
        self._stopping = threading.Event()
        self._hard_stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    def _new_watch(self) -> RunWatch | None:
        """The hooks each run goes through, or None (metrics and tracing both off)."""
        tracing = self.tracing
        if tracing is None:  # on when OpenTelemetry is installed and an SDK is set up
            tracing = otel_installed() and _tracer_provider_set()
        if not (self.metrics or tracing):
            return None
        found = None
        if self.metrics:
            from conveyor.metrics import worker_metrics

            found = worker_metrics()
            found.workers.add(self)
        return RunWatch(found, tracing)

    def _new_completer(self) -> Completer:
        return Completer(self.engine, self.stats.count, retry_for=self.lease_seconds,
                         linger=self.batch_wait, max_batch=self.batch_size)

    # -- public --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to shut down gracefully (a second call stops waiting for jobs)."""
        if self._stopping.is_set():
            self._hard_stop.set()
        self._stopping.set()
        self._slot_freed.set()
        # Safe from a signal handler: the store is touched from another thread, never here.
        threading.Thread(target=self._wake_loop, name="conveyor-stop", daemon=True).start()

    def _wake_loop(self) -> None:
        with contextlib.suppress(ConveyorError):
            self.engine.store.notify_work()

    @property
    def active(self) -> int:
        with self._slots_lock:
            return len(self._slots)

    def run(self, *, burst: bool = False) -> WorkerStats:
        """Work until stopped, or (``burst``) until nothing runnable is left."""
        if not self.engine.types:
            raise ConfigurationError("no job types are registered with this app")
        restore = self._install_signals()
        self._watch = self._new_watch()
        capture = joblogs.install(self.job_logs.level) if self.job_logs.enabled else None
        self.running = True
        self._pool = SlotPool(self.concurrency, self._run_slot, self._forget)
        if self.app_path is not None and self.pool == "process":
            self._children = ProcessRunner(self.app_path, self.max_jobs_per_child)
        self._completer = self._new_completer()
        self._completer.start()
        monitor = threading.Thread(target=self._monitor, name="conveyor-monitor", daemon=True)
        monitor.start()
        reaper = threading.Thread(target=self._reaper, name="conveyor-reaper", daemon=True)
        reaper.start()
        threading.Thread(target=self._watchdog, name="conveyor-watchdog", daemon=True).start()
        if self.run_schedules and self.engine.schedules:  # periodic jobs: see schedules.py
            scheduler = Scheduler(self.engine, f"scheduler@{self.worker_id}")
            threading.Thread(target=scheduler.run, args=(self._stopping,),
                             name="conveyor-scheduler", daemon=True).start()
        self._presence.start()
        if self.retention is not None:
            threading.Thread(target=run_retention, args=(
                self.engine, self.retention, self._stopping, self.worker_id),
                name="conveyor-retention", daemon=True).start()
        log.info("worker %s started (concurrency %d, queues %s)", self.worker_id,
                 self.concurrency, ",".join(self.queues) or "all")
        try:
            self._loop_forever(burst)
        finally:
            with self._claiming:  # a slot thread's claim is over, and no other starts
                self._chain = False
                self._batch_running = False
            for slot in self._held.overdue(0.0):  # nobody watches them any more
                self._pool.submit(slot)
            self._completer.loop_takes(False)  # jobs finishing in the shutdown grace
            self._shutdown()
            self._completer.close()  # every gathered completion is written before we exit
            self._stopping.set()
            monitor.join(timeout=5)
            reaper.join(timeout=5)
            self._pool.close()
            if self._children is not None:
                self._children.close()
            self._stop_loop()
            self._presence.end()
            restore()
            self.running = False
            if capture is not None:
                joblogs.uninstall(capture)
            log.info("worker %s stopped: %s", self.worker_id, self.stats)
        return self.stats

    # -- main loop ---------------------------------------------------------------------------------
    def _loop_forever(self, burst: bool) -> None:
        backoff = 0.0
        types = self._types = sorted(self.engine.types)
        self._chain = self.concurrency == 1 or self._holds
        limits_saved = False
        # while this loop only waits for slots to free, each completion is written by its
        # next claim and the completer's thread is not woken for it (Completer.loop_takes)
        completer = self._completer
        completer.loop_takes(True)
        while not self._stopping.is_set():
            free = 0
            claimed: list[Job] = []
            slots: list[Slot] = []
            try:
                if not limits_saved:  # in the loop: a store that is down now is retried
                    self._save_type_limits()
                    limits_saved = True
                with self._claiming:
                    # while a slot thread runs a batch, it claims the next one
                    free = 0 if self._batch_running else self.concurrency - self.active
                    if free > 0:
                        claimed = self._finish_and_claim(types, free)
                    # every slot made before any is handed over: a woken pool thread then
                    # finds this loop about to wait, not contending for the GIL while it
                    # builds the next
                    slots = [self._slot_for(job) for job in claimed]
                if burst and not claimed and self.active == 0 and not self._work_left(types):
                    return  # run() hands what gathers back to the completer's thread
                backoff = 0.0
            except StoreError as exc:
                backoff = min(30.0, max(0.5, backoff * 2))
                log.error("worker %s: store unavailable (%s); retrying in %.1fs",
                          self.worker_id, exc, backoff)
                completer.loop_takes(False)  # gathered meanwhile: its thread writes them
                self._stopping.wait(backoff)
                completer.loop_takes(True)
                continue
            if self._holds and len(slots) > 1 and self._hold(slots[1:]):
                slots = slots[:1]  # the others are for this one's thread (HeldSlots)
            for slot in slots:
                self._pool.submit(slot)
            if self._batch_running or (claimed and len(claimed) == free):
                self._wait_for_slot()
                self._gather_free_slots()
            elif not claimed:
                self._wait_for_work(burst)

    def _save_type_limits(self) -> None:
        """The store's claim obeys the limits it holds: record this code's (see limits.py)."""
        self.engine.store.save_type_limits(sorted(self.engine.types), [
            spec.limits.rule(name, f"worker:{self.worker_id}")
            for name, spec in sorted(self.engine.types.items()) if spec.limits is not None])

    def _finish_and_claim(self, types: list[str], free: int) -> list[Job]:
        """Write the completions gathered so far and claim jobs for the free slots, in one
        transaction: one commit for both instead of one each."""
        done = self._completer.take()
        try:
            finished, claimed = self.engine.finish_and_claim(
                [c.change for c in done], self.worker_id, queues=self.queues, job_types=types,
                limit=free, lease_seconds=self.lease_seconds)
        except BaseException:
            self._completer.give_back(done)  # its thread writes them, retrying
            raise
        self._completer.recorded(done, finished)
        return claimed

    def _gather_free_slots(self) -> None:
        """A slot just freed: give the others a moment (``CLAIM_GATHER``) to free as well, so
        that one claim fills several slots instead of one claim per slot. Short jobs then cost
        a fraction of a claim's commit each; a long job's freed slot waits a millisecond."""
        deadline = time.monotonic() + CLAIM_GATHER
        while self.active and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or not self._slot_freed.take(left):
                return

    def _work_left(self, types: list[str]) -> bool:
        """In burst mode: is any job of ours still waiting (e.g. for a retry's backoff)?

        A job waiting for dependencies is, only while one of them runs (its end may be in this
        worker's batch of completions, not written yet); one waiting for a job that is not
        running (failed with retries left for an operator, delayed) would keep a burst alive
        for ever."""
        if self._completer.busy:  # its commit may release dependents: look again after it
            return True
        waiting = self.engine.store.list_jobs(JobQuery(
            states=frozenset({JobState.PENDING}), job_types=frozenset(types),
            queues=frozenset(self.queues), limit=100))
        horizon = self.engine.store.now() + timedelta(seconds=BURST_HORIZON)
        due = [job for job in waiting if job.run_at <= horizon]
        return any(not job.waiting_on for job in due) or any(
            up.state is JobState.RUNNING for job in due if job.waiting_on
            for up in self.engine.dependencies(job.id)[0])

    def _wait_for_slot(self) -> None:
        """Wait (up to ``poll_interval``) for a slot to free. While a batch runs or jobs are
        held, look every :data:`~conveyor.worker.slots.HAND_OFF_AFTER` instead, hand each
        held job that waited that long to a thread of its own (the batch's thread is busy
        with a longer job: the loop claims again), and return once no batch runs."""
        deadline = time.monotonic() + self.poll_interval
        while not self._stopping.is_set():
            if self._batch_running or self._held:
                woken = self._slot_freed.take(HAND_OFF_AFTER)
                overdue = self._held.overdue(HAND_OFF_AFTER)
                if overdue:
                    self._batch_running = False
                    self.handed_over += len(overdue)
                    for slot in overdue:
                        self._pool.submit(slot)
                elif (self._batch_running
                      and time.monotonic() - self._batch_moved >= HAND_OFF_AFTER):
                    self._batch_running = False  # its thread runs a longer job
                if not self._batch_running and (woken or overdue or not self._held):
                    return
                continue
            left = deadline - time.monotonic()
            if left <= 0 or self._slot_freed.take(left):
                return

    def _hold(self, slots: list[Slot]) -> bool:
        """Hold ``slots``, claimed beside a job a slot thread is about to run, for that
        thread (a batch runs: the loop looks at them), if this worker's runs are short;
        whether it did (if not, the caller hands each to a thread of its own)."""
        if self._run_time >= HOLD_BELOW:
            return False
        self._batch_moved = time.monotonic()
        self._batch_running = True
        self._held.add(slots)
        return True

    def _wait_for_work(self, burst: bool = False) -> None:
        if self._held or self.active >= self.concurrency or (burst and self.active):
            self._wait_for_slot()
        else:
            # a slot freeing does not end this wait: its completion is the completer's to write
            self._completer.loop_takes(False)
            try:
                self.engine.store.wait_for_work(self.poll_interval)
            finally:
                self._completer.loop_takes(True)

    def _slot_for(self, job: Job, thread: threading.Thread | None = None,
                  replacing: Slot | None = None) -> Slot:
        """The slot a claimed job runs in (its start was recorded, and announced, by the
        claim), known to the worker (its watchdog, heartbeats) before a thread takes it
        (``thread``: the one already there, a 1-slot worker's slot thread, whose finished
        slot ``replacing`` is forgotten in the same step: no moment without either, and one
        lock taken for both instead of two)."""
        assert job.lease_token is not None
        self.stats.claimed += 1
        execution = Execution(job, Lease(job.id, job.lease_token, job.attempt), self.engine,
                              retry_for=self.lease_seconds)
        if self.job_logs.enabled:
            execution.logs = JobLog(job.id, job.attempt, self.job_logs)
        execution.watch = self._watch
        slot = Slot(execution, thread)
        slot.signals_read = slot.renewed  # the claim read the flags (Execution took them)
        if job.timeout:
            slot.deadline = time.monotonic() + job.timeout
        with self._slots_lock:
            self._slots[job.lease_token] = slot
            if replacing is not None:
                self._drop(replacing)
        return slot

    def _run_slot(self, slot: Slot) -> Slot:
        """The executor pipeline for the job, on a pool thread, then for the held jobs and
        those this thread claims after it (see :meth:`_claim_next`). Returns the slot it
        ended with."""
        while True:
            self._run_one(slot)
            follow = self._held_next(slot) or (self._claim_next(slot) if self._chain else None)
            if follow is None:
                return slot
            slot = follow

    def _held_next(self, slot: Slot) -> Slot | None:
        """A held job for this thread to run next (HeldSlots), its finished ``slot``
        forgotten without waking the loop, which looks at the held jobs meanwhile."""
        if slot.abandoned or not self._held:
            return None
        while (follow := self._held.take()) is not None and follow.abandoned:
            pass
        if follow is None:
            return None
        me = threading.current_thread()
        follow.thread = me
        with self._slots_lock:
            self._drop(slot)
        me.name = f"conveyor-job-{short_id(follow.execution.job.id)}"
        return follow

    def _claim_next(self, slot: Slot) -> Slot | None:
        """A 1-slot worker's slot thread, or the thread running a batch (``_batch_running``),
        its job done: write the completion just handed to the completer and claim the next
        job (and one for each other free slot, held), in one transaction, and run that job
        in this thread (None: nothing claimed, the loop takes over when the slot frees).

        The same claim the loop would make once woken by the slot's end, without the two
        thread hand-offs per job (slot to loop, loop to slot): about 5.5 context switches a
        job, measured as 10-25 % of a 1-slot worker's CPU per job. The finished slot stays
        registered until its
        follower is, so the loop never sees a free slot meanwhile; ``_claiming`` keeps the
        loop's claims (and a slot freed by an abandon) and the shutdown's look at the
        running slots out of the way.
        """
        if self._holds and not self._batch_running:
            return None  # the usual case with longer jobs: not worth waiting for the lock
        with self._claiming:
            if not self._chain or (self._holds and not self._batch_running):
                return None
            if slot.abandoned or self._stopping.is_set():
                self._batch_running = False  # the loop takes over (or stops)
                return None
            self._batch_moved = math.inf  # claiming: not a long job (see _wait_for_slot)
            claimed: list[Job] = []
            try:
                # its next job, and one for each other free slot (held)
                claimed = self._finish_and_claim(self._types,
                                                 self.concurrency - self.active + 1)
            except ConveyorError as exc:  # the loop, woken by the slot's end, retries
                log.debug("worker %s: slot claim failed: %s", self.worker_id, exc)
            except Exception:  # the loop meets it again: never leave the slot registered
                log.exception("worker %s: slot claim failed", self.worker_id)
            if not claimed:  # nothing claimed, or the claim failed: the loop takes over
                self._batch_running = False
                return None
            me = threading.current_thread()
            follow = self._slot_for(claimed[0], me, replacing=slot)  # taken again at once
            others = [self._slot_for(job) for job in claimed[1:]]
            if not (others and self._hold(others)):  # the loop claims for free slots again
                self._batch_running = False
                for other in others:
                    self._pool.submit(other)
        me.name = f"conveyor-job-{short_id(claimed[0].id)}"
        return follow

    def _run_one(self, slot: Slot) -> None:
        job = slot.execution.job

        def keep(future: concurrent.futures.Future[Any]) -> None:
            slot.future = future

        children = self._children
        started = self._batch_moved = time.monotonic()
        try:
            recorded = execute(self.engine, slot.execution, self.worker_id,
                               loop_of=self._loop_for, on_future=keep,
                               batch=self._completer.submit,
                               run=None if children is None
                               else lambda spec, _: children.run(slot, spec))
            if recorded is not None:  # a completion is counted when its batch is written
                self.stats.count(recorded)
        except ConveyorError as exc:
            log.error("job %s: could not record its outcome: %s", job.id, exc)
        except BaseException:
            log.exception("job %s: worker error", job.id)
        self._run_time = 0.8 * self._run_time + 0.2 * (time.monotonic() - started)

    def _loop_for(self, spec: JobType) -> asyncio.AbstractEventLoop | None:
        return self._event_loop() if spec.is_async else None

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._slots_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="conveyor-loop",
                                          daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=2)
            if not self._loop.is_running():
                self._loop.close()
            self._loop = None

    # -- monitor -----------------------------------------------------------------------------------
    def _reaper(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                reaped = reap(self.engine, actor=f"reaper@{self.worker_id}")
                if self._watch is not None:
                    self._watch.reaped(reaped.lost)
                self.engine.store.record_depth()  # the dashboard's queue depth, once a minute
                failures = 0
                wait = self.reap_interval
            except ConveyorError as exc:
                failures += 1
                wait = min(30.0, 0.5 * 2**min(failures, 6))
                log.error("worker %s reaper: %s (retrying in %.1fs)", self.worker_id, exc, wait)
            self._stopping.wait(wait)

    def _monitor(self) -> None:
        self._read_round = time.monotonic()  # as if a round of reads began with the monitor
        next_beat = self._read_round + self.heartbeat_interval
        failures = 0
        while True:
            if self._stopping.is_set():
                # shutting down: keep heartbeating the jobs still finishing their grace
                if not self._current_slots() or self._hard_stop.is_set():
                    break
                time.sleep(self.progress_interval)
            else:
                self._stopping.wait(self.progress_interval)
            try:
                self._tick_progress()
                now = time.monotonic()
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + self.heartbeat_interval
                    if self._presence.beat(self.active) and not self._stopping.is_set():
                        log.info("worker %s: stop requested by an operator", self.worker_id)
                        self.stop()
                if now >= self._logs_due:  # every running job's new lines, one write
                    joblogs.write(self.engine.store, (s.execution.logs
                                                      for s in self._current_slots()))
                    self._logs_due = now + LOG_FLUSH_INTERVAL
                self._enforce_limits(now)
                failures = 0
            except ConveyorError as exc:
                failures += 1
                wait = min(30.0, 0.5 * 2**min(failures, 6))
                log.error("worker %s monitor: %s (retrying in %.1fs)", self.worker_id, exc, wait)
                time.sleep(wait)

    def _watchdog(self) -> None:
        """Never touches the store, so it speaks even while every store call hangs."""
        while not self._stopping.wait(min(1.0, self.heartbeat_interval)):
            self._warn_stale_leases(time.monotonic())

    def _warn_stale_leases(self, now: float) -> None:
        """Say so once when a lease went a whole lease time without renewal: by now another
        worker may have reaped the job, and this one's writes to it will be refused."""
        for slot in self._current_slots():
            if not slot.stale_warned and now - slot.renewed > self.lease_seconds:
                slot.stale_warned = True
                log.warning("worker %s: lease of job %s not renewed for %.1fs (lease %gs); "
                            "another worker may take the job over", self.worker_id,
                            slot.execution.job.id, now - slot.renewed, self.lease_seconds)

    def _current_slots(self) -> list[Slot]:
        with self._slots_lock:
            return [s for s in self._slots.values() if not s.abandoned]

    def _tick_progress(self) -> None:
        """Write each running job's coalesced progress (which reads its flags back), and read
        the pause and cancel flags of the others, unless their claim read them since the
        previous round began: as fresh as that round's reads, they wait for the next round.

        A 1-slot worker running short jobs then reads nothing at all (its job at a round is a
        few milliseconds old): one query a round less, four a second, each costing nearly as
        much client CPU as a job's own transaction on PostgreSQL (~0.4 ms). A job claimed
        just after a round still has its flags read again within two rounds.
        """
        started = time.monotonic()
        previous, self._read_round = self._read_round, started
        slots = self._current_slots()
        quiet: list[Slot] = []
        for slot in slots:
            x = slot.execution
            wrote = x.flush()
            if (wrote or x.progressed) and not x.finished:
                x.progressed = False
                self.engine.progressed(self._progress_view(x), self.worker_id)
            if not wrote and slot.signals_read <= previous:
                quiet.append(slot)
        if not quiet:
            return
        fresh = {j.id: j for j in self.engine.store.get_jobs(s.execution.job.id for s in quiet)}
        for slot in quiet:
            slot.signals_read = started
            x = slot.execution
            job = fresh.get(x.job.id)
            if job is None or job.lease_token != x.lease.token:
                x.lost = True
                continue
            x.db_pause, x.db_cancel = job.pause_requested, job.cancel_requested

    @staticmethod
    def _progress_view(x: Execution) -> Job:
        job = Job(**x.job.__dict__)
        job.progress = x.snapshot()
        return job

    def _heartbeat(self) -> None:
        slots = self._current_slots()
        if not slots:
            return
        sent = time.monotonic()
        held = self.engine.heartbeat([s.execution.lease for s in slots], self.lease_seconds)
        for slot in slots:
            signals = held.get(slot.execution.lease.token)
            if signals is None:
                # a finished run may have released its lease by recording its outcome
                if not slot.execution.lost and not slot.execution.finished:
                    log.warning("job %s: lease lost; the job will not be written to",
                                slot.execution.job.id)
                slot.execution.lost = True
            else:
                slot.execution.apply_signals(signals)
                slot.signals_read = sent
                if signals.renewed:
                    slot.renewed, slot.stale_warned = sent, False

    def _enforce_limits(self, now: float) -> None:
        """Timeouts and the cancel grace period: interrupt, then give up on the job."""
        for slot in self._current_slots():
            x = slot.execution
            if slot.deadline is not None and now >= slot.deadline and not x.timed_out:
                x.timed_out = True
                slot.forced_at = now
                self._interrupt(slot, TimeoutInterrupt)
            if x.db_cancel and slot.cancel_seen is None:
                slot.cancel_seen = now
            if (slot.cancel_seen is not None and slot.forced_at is None
                    and now - slot.cancel_seen >= self.cancel_grace):
                slot.forced_at = now
                self._interrupt(slot, ForcedCancelInterrupt)
            if slot.forced_at is not None and now - slot.forced_at >= max(1.0, self.cancel_grace):
                self._abandon(slot)

    def _interrupt(self, slot: Slot, exc: type[BaseException]) -> None:
        """Stop a job that ignores requests: cancel its task, or raise in its thread.

        The exception is only aimed at a thread that is inside the job's own code (see
        :func:`conveyor.worker.slots.interrupt`), so it can not land in the middle of the
        worker recording an outcome, nor in the next job that thread runs.
        """
        if self._children is not None:
            self._children.interrupt(slot, exc)  # kills its process
            return
        if slot.future is not None:
            slot.future.cancel()
            return
        interrupt(slot, exc)

    def _abandon(self, slot: Slot) -> None:
        """The job would not stop: record its end ourselves and fence its thread out."""
        x = slot.execution
        slot.abandoned = True
        x.lost = True
        with contextlib.suppress(ChangeRefused, ConveyorError):
            if x.db_cancel:
                self.engine.apply([transitions.cancel_running(
                    x.lease, x.job.id, x.snapshot(), self.worker_id,
                    "stopped after the cancel grace period")])
            else:
                error = JobError("TimeoutError", f"job ran past its {x.job.timeout}s timeout "
                                 "and did not stop")
                record_failure(self.engine, x.job, x.lease, error, "timed out", self.worker_id,
                               progress=x.snapshot(), raised=TimeoutError(error.message))
        self._pool.write_off(slot)  # its thread is stuck in the job: the pool replaces it
        self._forget(slot)

    def _forget(self, slot: Slot) -> None:
        """Free the slot (keyed by lease token: a newer run of the same job is another slot)
        and tell the loop: when its pool thread is through with it (the pool's done
        callback), or when it is abandoned (its thread stuck in the job; the pool calls this
        again when it ends). A 1-slot worker's slot thread that claimed its next job forgets
        its finished slot in :meth:`_slot_for` instead, waking nobody."""
        with self._slots_lock:
            self._drop(slot)
        self._slot_freed.set()

    def _drop(self, slot: Slot) -> None:
        """Forget ``slot`` (under :attr:`_slots_lock`, held by the caller) if it is still
        known: an abandoned slot is forgotten twice (see :meth:`_forget`)."""
        token = slot.execution.lease.token
        if self._slots.get(token) is slot:
            del self._slots[token]

    # -- shutdown ----------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Ask running jobs to pause at their next checkpoint; release the rest after the grace."""
        slots = self._current_slots()
        if not slots:
            return
        log.info("worker %s: shutting down, asking %d job(s) to pause", self.worker_id,
                 len(slots))
        for slot in slots:
            slot.execution.shutdown = True
        # each slot's end sets _slot_freed (this thread is its only taker now: the loop has
        # returned), so no slot needs a flag of its own for this one wait
        deadline = time.monotonic() + self.shutdown_grace
        while self._current_slots() and time.monotonic() < deadline:
            if self._hard_stop.is_set():
                break
            self._slot_freed.take(0.05)
        for slot in self._current_slots():
            self._release(slot)

    def _release(self, slot: Slot) -> None:
        """A job that neither finished nor paused in the grace: released like a lost one."""
        x = slot.execution
        slot.abandoned = True
        x.lost = True
        error = JobError("WorkerLost", f"worker {self.worker_id} shut down before the job "
                         "reached a checkpoint")
        with contextlib.suppress(ChangeRefused, ConveyorError):
            # interrupted by us, not by the job: it keeps its place in line and a pause request
            record_failure(self.engine, x.job, x.lease, error, "worker lost (shutdown)",
                           self.worker_id, progress=x.snapshot(), interrupted=True)
            self.stats.count(OutcomeKind.RELEASED)
        self._forget(slot)

    def _install_signals(self) -> Any:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("worker %s: received %s", self.worker_id, signal.Signals(signum).name)
            self.stop()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore
