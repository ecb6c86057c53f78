"""Slots: what a worker knows of each running job, and the pool of threads that runs them.

The threads are reused across jobs: a claim costs a queue put, not a thread start. Two things
make reuse safe where a thread per job did not need them:

- A forced interrupt (timeout, cancel past its grace) is an exception raised in a thread from
  outside. It is sent at most once per run, only while that run's thread is inside the job's
  own code, under a lock the thread takes on its way out of that code; leaving clears one that
  was sent but not yet raised. So an interrupt can never land in the worker's own bookkeeping,
  nor in the next job the thread runs.
- A job that ignores its interrupt keeps its thread. The worker abandons the run (records its
  end itself) and the pool writes that thread off: it no longer counts towards the pool's size,
  a new thread takes its place, and if the stuck call ever returns the thread simply ends.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.context import Execution
from conveyor.ids import short_id

if TYPE_CHECKING:
    from conveyor.worker.processes import ChildProcess

#: How long a job claimed beside others may wait for the thread that claimed it, before the
#: worker's loop hands it to a thread of its own (seconds; see :class:`HeldSlots`). The loop
#: looks this often while a batch runs: each look wakes it and takes the GIL from the batch's
#: thread. At 1 ms the looks cost a 4-slot worker about 8 % of its CPU per no-op job on
#: SQLite (medians of six alternated in-process bursts of 20,000 jobs: 130 against 120 µs).
HAND_OFF_AFTER = 0.002
#: Jobs are held only while the worker's runs take less than this on average (seconds): a
#: batch of them then ends within HAND_OFF_AFTER, and longer jobs are not made to wait.
HOLD_BELOW = 0.00025

#: Looked up once: inside the gate nothing may run Python code (where a pending interrupt
#: could fire) before the pending one is cleared.
_SET_ASYNC_EXC = ctypes.pythonapi.PyThreadState_SetAsyncExc


class Signal:
    """A flag that any thread sets and one thread waits for and takes: a worker's "a slot
    freed", set by each slot's end and taken by the worker's loop (and, once the loop has
    returned, by the shutdown that waits for the running slots: a slot needs no flag of its
    own, which made two locks for every job).

    What the loop needs of a :class:`threading.Event` (wait, then clear) for a fraction of
    its cost, paid for every job: Event.set takes the Event's Condition and notifies under
    it, and every Event.wait makes a lock of its own for the waiter. Here the flag is one
    lock, released while set; :meth:`take` acquires it, so waking and clearing are one step
    (and a set landing between an Event's wait and its clear is not lost).
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = threading.Lock()
        self._set.acquire()  # held: not set

    def set(self) -> None:
        if self._set.locked():
            # not contextlib.suppress: building one costs more than the rest of this call
            try:  # noqa: SIM105
                self._set.release()
            except RuntimeError:  # another thread set it first: it is set
                pass

    def take(self, timeout: float) -> bool:
        """Whether the flag was set within ``timeout`` seconds; it is clear again after."""
        return self._set.acquire(timeout=timeout)


@dataclass
class Slot:
    """One claimed run: its execution, the thread running it, and its limits."""

    execution: Execution
    thread: threading.Thread | None = None
    future: concurrent.futures.Future[Any] | None = None
    deadline: float | None = None
    cancel_seen: float | None = None
    forced_at: float | None = None
    abandoned: bool = False
    #: When the lease was last known renewed (monotonic): claim, then each heartbeat.
    renewed: float = field(default_factory=time.monotonic)
    #: When the job's pause and cancel flags were last read from the store (monotonic): its
    #: claim (set by the worker), a heartbeat, the monitor's read. 0.0: never (a slot built
    #: by hand), so the monitor's next round reads them.
    signals_read: float = 0.0
    stale_warned: bool = False
    #: Process pool: the child running the job, and the interrupt it was killed for (both
    #: changed under the execution's gate).
    child: ChildProcess | None = None
    stop_with: type[BaseException] | None = None


def enter_user_code(execution: Execution) -> None:
    with execution.gate:
        execution.in_user_code = True


def leave_user_code(execution: Execution) -> None:
    """Called by the thread running the job, on every way out of the job's code.

    An interrupt sent just before may fire here, before the gate is taken: the caller treats
    it as raised by the job. Once the gate is taken none is sent any more, and one sent but
    not yet raised is cleared, so it can not fire later, outside the job.
    """
    me = ctypes.c_ulong(threading.get_ident())
    with execution.gate:
        execution.in_user_code = False
        if execution.interrupted:
            _SET_ASYNC_EXC(me, None)


def interrupt(slot: Slot, exc: type[BaseException]) -> bool:
    """Raise ``exc`` in the job's thread if it is inside the job's code; at most once per run.

    Returns whether it was sent.
    """
    x = slot.execution
    thread = slot.thread
    if thread is None or thread.ident is None:
        return False
    with x.gate:
        if not x.in_user_code or x.interrupted:
            return False
        x.interrupted = True
        _SET_ASYNC_EXC(ctypes.c_ulong(thread.ident), ctypes.py_object(exc))
        return True


class SlotPool:
    """Up to ``size`` threads, started on demand and kept for the next job.

    ``run(slot)`` is the job's whole pipeline (it may go on to run more jobs in this thread,
    and returns the slot it ended with, or None for the one given); ``done(slot)`` is called
    with that slot after it, once the thread is ready for the next job, so a worker that sees
    the slot free and claims again finds a thread waiting rather than starting one.
    """

    def __init__(self, size: int, run: Callable[[Slot], Slot | None],
                 done: Callable[[Slot], None],
                 name: str = "conveyor-slot") -> None:
        self._size = size
        self._run = run
        self._done = done
        self._name = name
        self._queue: queue.SimpleQueue[Slot | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()  # counted towards the size
        self._written_off: set[threading.Thread] = set()
        self._idle = 0
        self._started = 0
        self._closed = False

    @property
    def threads_started(self) -> int:
        """How many threads the pool ever started (reuse keeps it at most the size, plus one
        per written-off thread)."""
        return self._started

    def submit(self, slot: Slot) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the slot pool is closed")
            if self._idle > 0:
                self._idle -= 1
            else:
                self._started += 1
                thread = threading.Thread(target=self._serve, daemon=True,
                                          name=f"{self._name}-{self._started}")
                self._threads.add(thread)
                thread.start()
        self._queue.put(slot)

    def write_off(self, slot: Slot) -> None:
        """The thread running ``slot`` is stuck in its job: stop counting it."""
        with self._lock:
            thread = slot.thread
            if thread is not None and thread in self._threads:
                self._threads.discard(thread)
                self._written_off.add(thread)

    def close(self) -> None:
        """Let the idle threads end; busy ones end after their job (they are daemons)."""
        with self._lock:
            self._closed = True
            count = len(self._threads) + len(self._written_off)
        for _ in range(count):
            self._queue.put(None)

    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            slot = self._queue.get()
            if slot is None:
                return
            slot.thread = me
            me.name = f"conveyor-job-{short_id(slot.execution.job.id)}"  # thread dumps name the job
            last = slot
            try:
                last = self._run(slot) or slot
            finally:
                keep = self._back_to_idle(me)
                self._done(last)
            if not keep:
                return

    def _back_to_idle(self, me: threading.Thread) -> bool:
        with self._lock:
            if me in self._written_off:
                self._written_off.discard(me)
                return False
            if len(self._threads) > self._size:  # a replacement was started meanwhile
                self._threads.discard(me)
                return False
            self._idle += 1
            return True


class HeldSlots:
    """Claimed jobs that wait for the thread that claimed them, oldest first.

    A claim fills every free slot at once, but handing each job to a thread of its own costs
    thread switches (a wake-up and the GIL passing, often to the other core) that, for short
    jobs, cost more than the jobs. So the thread that runs the first claimed job keeps the
    others and runs them after it, one by one, without a hand-off; the worker's loop hands
    those still held after :data:`HAND_OFF_AFTER` to threads of their own (so a long job
    never keeps the others from starting, beyond that delay). Jobs are held only while the
    worker's runs take less than :data:`HOLD_BELOW` on average. A held job is claimed and
    running in the store, and counted among the worker's slots, like one already handed over.
    """

    __slots__ = ("_lock", "_slots")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: collections.deque[tuple[Slot, float]] = collections.deque()

    def __bool__(self) -> bool:
        return bool(self._slots)

    def add(self, slots: Sequence[Slot]) -> None:
        now = time.monotonic()
        with self._lock:
            self._slots.extend((slot, now) for slot in slots)

    def take(self) -> Slot | None:
        """The oldest held slot, for the calling thread to run (None: none held)."""
        with self._lock:
            return self._slots.popleft()[0] if self._slots else None

    def overdue(self, age: float) -> list[Slot]:
        """Take those held for at least ``age`` seconds (all of them with ``age`` 0)."""
        limit = time.monotonic() - age
        taken: list[Slot] = []
        with self._lock:
            while self._slots and self._slots[0][1] <= limit:
                taken.append(self._slots.popleft()[0])
        return taken
