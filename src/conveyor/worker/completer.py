"""The batch completer: completed jobs are written many to one transaction.

A job's slot hands its completion here and takes the next job at once; one thread writes what
has gathered, each row still its own compare-and-set fenced by its lease token and attempt
(:meth:`conveyor.engine.Engine.apply_many`), with its history row in the same transaction. A
completion whose lease was lost meanwhile writes nothing for that job, and the rest of the
batch still lands. On PostgreSQL with its durable defaults a commit costs a disk flush, so one
commit for a batch instead of one per job is most of a worker's throughput; on SQLite it saves
a write lock and a transaction per job.

The price, stated in the docs: a job whose completion was gathered but not yet written when its
worker died is still ``running`` in the store, so after its lease it is run again (at least
once, as for any job whose worker dies mid-run). Batches are written as soon as the writer is
free (a flush takes whatever gathered during the previous one), or after ``linger`` seconds
when that is set; a graceful stop writes everything before the worker exits. A busy worker's
loop takes them first: its next claim writes them in its own transaction
(:meth:`~conveyor.stores.base.Store.finish_and_claim`), one commit for both; this thread waits
:data:`HANDOFF` for that before writing them itself.

Only completions are batched. Failures, pauses and cancels stay one transaction each: they are
rare, and a failure must be decided against the job's flags at the moment it is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from conveyor.changes import Change
from conveyor.context import Execution
from conveyor.engine import Engine
from conveyor.errors import StoreError
from conveyor.model import Job
from conveyor.stores.base import Landed
from conveyor.worker.executor import OutcomeKind

log = logging.getLogger("conveyor.worker")

#: Most completions written in one transaction.
MAX_BATCH = 500
#: How long a completion waits for the worker's next claim to write it in the same
#: transaction, before this thread writes it on its own (seconds).
HANDOFF = 0.002
_RETRY_FIRST, _RETRY_MAX = 0.1, 2.0


@dataclass(slots=True)
class Completion:
    """A completed run waiting to be written: its execution and the change that records it
    (one per job: built plainly, a frozen dataclass costs a setattr call per field)."""

    execution: Execution
    change: Change


class Completer:
    """Gathers completions from the slots and writes them in batches on its own thread."""

    def __init__(self, engine: Engine, on_recorded: Callable[[OutcomeKind], None], *,
                 retry_for: float, linger: float = 0.0, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.on_recorded = on_recorded
        self.retry_for = retry_for
        self.linger = linger
        self.max_batch = max_batch
        self._pending: list[Completion] = []
        self._unrecorded = 0  # submitted, not yet written (or given up on)
        # taken as a plain lock (``with self._lock``), the condition only waited on and
        # notified: a Condition's own with-statement is two Python-level calls around the
        # lock, and every completion takes it twice (submit, recorded)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closing = False
        self._thread: threading.Thread | None = None
        #: The worker's loop will take what gathers into its next claim (see loop_takes).
        self._loop_takes = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="conveyor-completer",
                                        daemon=True)
        self._thread.start()

    def submit(self, execution: Execution, change: Change) -> None:
        with self._lock:
            self._pending.append(Completion(execution, change))
            self._unrecorded += 1
            # the thread waits for a first completion, then for a full batch (or HANDOFF):
            # waking it for any other would only hand it the GIL to look and sleep again;
            # nor for a first one that the worker's loop is coming back for
            gathered = len(self._pending)
            if gathered >= self.max_batch or (gathered == 1 and not self._loop_takes):
                self._cond.notify()

    def loop_takes(self, coming: bool) -> None:
        """The worker's loop says whether it will come back for what gathers (``coming``:
        it waits for a slot to free, and each completion frees its slot right after
        :meth:`submit`), or not (it waits for new work, backs off from a store outage, or
        stops): completions gathered meanwhile are then this thread's to write, as always.

        Ignored with ``linger`` set: completions are gathered by this thread on purpose.
        """
        with self._lock:
            self._loop_takes = coming and self.linger <= 0
            if not self._loop_takes and self._pending:
                self._cond.notify()

    @property
    def busy(self) -> bool:
        """Some completion is not written yet: its commit may still release dependent jobs
        (a burst worker must not conclude that nothing is left)."""
        return self._unrecorded > 0

    def close(self) -> None:
        """Write everything gathered so far, then stop (a worker's graceful stop)."""
        with self._lock:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._write_all()  # anything submitted after the thread's last look

    def take(self) -> list[Completion]:
        """What has gathered, for the worker's loop to write with its next claim (one
        transaction for both); it reports the outcome with :meth:`recorded`, or hands the
        completions back with :meth:`give_back` if the store failed."""
        if self.linger > 0:  # gathered for `linger` on purpose: this thread writes them
            return []
        with self._lock:
            return self._take()

    def give_back(self, batch: list[Completion]) -> None:
        with self._lock:
            self._pending[:0] = batch
            self._cond.notify()

    def recorded(self, batch: list[Completion], rows: Sequence[Job | Landed | None]) -> None:
        """Count what became of each completion of ``batch``: landed (its row, or
        :data:`~conveyor.stores.base.Landed.LANDED`) or refused (None: its lease was lost)."""
        with self._lock:
            self._unrecorded -= len(batch)
        for completion, row in zip(batch, rows, strict=True):
            if row is None:
                log.warning("job %s: lease lost before recording completed",
                            completion.execution.job.id)
            self.on_recorded(OutcomeKind.COMPLETED if row is not None else OutcomeKind.LOST)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if self._closing:
                    break
                # gather more (and let the worker's next claim take them into its own
                # transaction), unless a graceful stop asks for them now
                self._cond.wait_for(lambda: self._closing
                                    or len(self._pending) >= self.max_batch,
                                    max(self.linger, HANDOFF))
                batch = self._take()
            if batch:
                self._write(batch)
        self._write_all()

    def _take(self) -> list[Completion]:
        batch = self._pending
        if len(batch) <= self.max_batch:  # all of it (a 1-slot worker: one), not copied
            self._pending = []
            return batch
        self._pending = batch[self.max_batch:]
        return batch[:self.max_batch]

    def _write_all(self) -> None:
        while True:
            with self._lock:
                batch = self._take()
            if not batch:
                return
            self._write(batch)

    def _write(self, batch: list[Completion]) -> None:
        """One transaction for the batch, tried again through a store outage for up to the
        lease time (each row is fenced, so a repeat never writes to a job that moved on)."""
        changes = [c.change for c in batch]
        deadline = time.monotonic() + self.retry_for
        pause = _RETRY_FIRST
        while True:
            try:
                rows = self.engine.apply_many(changes)
                break
            except StoreError as exc:
                if time.monotonic() + pause >= deadline:
                    log.error("%d completed job(s) could not be recorded (%s); they will run "
                              "again once their leases expire", len(batch), exc)
                    rows = [None] * len(batch)
                    break
                if pause == _RETRY_FIRST:
                    log.warning("%d completion(s) not saved (%s); trying again for up to %.0fs",
                                len(batch), exc, deadline - time.monotonic())
                time.sleep(pause)
                pause = min(_RETRY_MAX, pause * 2)
        self.recorded(batch, rows)
