"""The slot pool (threads reused across jobs) and the gate that aims forced interrupts only at
a thread inside a job's own code. Real threads, real asynchronous exceptions."""

from __future__ import annotations

import ctypes
import inspect
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from conveyor.changes import Lease
from conveyor.context import Execution, TimeoutInterrupt
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobProgress
from conveyor.stores.base import Signals
from conveyor.worker.slots import (
    HeldSlots,
    Signal,
    Slot,
    SlotPool,
    enter_user_code,
    interrupt,
    leave_user_code,
)

WAIT = 10.0


class _NoStore:
    def save_progress(self, lease: Lease, progress: JobProgress, *,
                      checkpoint: bool = False) -> Signals:  # pragma: no cover - unused
        raise AssertionError("no progress is written here")


def _slot(n: int = 0) -> Slot:
    now = datetime.now(UTC)
    job = Job(id=f"00000000-0000-4000-8000-{n:012d}", job_type="t", state=JobState.RUNNING,
              run_at=now, lease_token=f"token-{n}")
    return Slot(Execution(job, Lease(job.id, f"token-{n}", 0), _NoStore()))


class _Done(list[Slot]):
    """The slots the pool said it was through with, in order, and a wait for one of them."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def finished(self, slot: Slot) -> None:
        with self._changed:
            self.append(slot)
            self._changed.notify_all()

    def wait(self, slot: Slot) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(s is slot for s in self), WAIT)


def _pool(size: int, run: Any) -> tuple[SlotPool, _Done]:
    done = _Done()
    return SlotPool(size, run, done.finished), done


def test_threads_are_reused_across_jobs() -> None:
    threads: list[threading.Thread] = []
    pool, done = _pool(2, lambda slot: threads.append(threading.current_thread()))
    for n in range(20):
        slot = _slot(n)
        pool.submit(slot)
        assert done.wait(slot)
    assert len(done) == 20
    assert len(set(threads)) == 1 == pool.threads_started  # one at a time: one thread
    pool.close()


def test_concurrent_jobs_get_at_most_size_threads() -> None:
    barrier = threading.Barrier(3, timeout=WAIT)
    threads: set[threading.Thread] = set()

    def run(slot: Slot) -> None:
        threads.add(threading.current_thread())
        barrier.wait()

    pool, done = _pool(3, run)
    for wave in range(4):
        slots = [_slot(wave * 3 + i) for i in range(3)]
        for slot in slots:
            pool.submit(slot)
        for slot in slots:
            assert done.wait(slot)
    assert len(done) == 12
    assert len(threads) == 3 == pool.threads_started
    pool.close()


def test_a_written_off_thread_is_replaced_and_never_reused() -> None:
    stuck = threading.Event()
    release = threading.Event()
    ran_on: dict[str, threading.Thread] = {}

    def run(slot: Slot) -> None:
        ran_on[slot.execution.job.id] = threading.current_thread()
        if slot.execution.job.id.endswith("0"):
            stuck.set()
            release.wait(WAIT)

    pool, done = _pool(1, run)
    first = _slot(0)
    pool.submit(first)
    assert stuck.wait(WAIT)
    pool.write_off(first)  # as the worker does when it abandons the run
    second = _slot(1)
    pool.submit(second)
    assert done.wait(second), "capacity was lost to the stuck thread"
    assert ran_on[second.execution.job.id] is not ran_on[first.execution.job.id]
    release.set()
    assert done.wait(first)
    ran_on[first.execution.job.id].join(WAIT)
    assert not ran_on[first.execution.job.id].is_alive(), "the written-off thread ends"
    third = _slot(3)
    pool.submit(third)
    assert done.wait(third)
    assert ran_on[third.execution.job.id] is ran_on[second.execution.job.id]
    assert pool.threads_started == 2
    pool.close()


def test_an_interrupt_is_sent_only_inside_user_code_and_at_most_once() -> None:
    slot = _slot()
    inside = threading.Event()
    go = threading.Event()
    caught: list[BaseException] = []

    def job_thread() -> None:
        enter_user_code(slot.execution)
        try:
            inside.set()
            while not go.is_set():  # Python bytecode: an interrupt fires here
                pass
        except BaseException as exc:
            caught.append(exc)
        finally:
            leave_user_code(slot.execution)

    slot.thread = threading.Thread(target=job_thread, daemon=True)
    assert not interrupt(slot, TimeoutInterrupt), "not started: nothing to interrupt"
    slot.thread.start()
    assert inside.wait(WAIT)
    assert interrupt(slot, TimeoutInterrupt)
    assert not interrupt(slot, TimeoutInterrupt), "a run is interrupted at most once"
    slot.thread.join(WAIT)
    go.set()
    assert [type(e) for e in caught] == [TimeoutInterrupt]
    assert not slot.execution.in_user_code
    assert not interrupt(slot, TimeoutInterrupt)


def test_leaving_user_code_clears_an_interrupt_that_has_not_fired() -> None:
    """Sent while the thread was on its way out (blocked on the gate, in C code where it
    cannot fire): it must not fire afterwards, in the worker's code or the next job."""
    slot = _slot()
    x = slot.execution
    enter_user_code(x)
    after: list[str] = []

    def job_thread() -> None:
        try:
            leave_user_code(x)  # blocks on the gate, held by the test
            total = 0
            for i in range(10_000):  # plenty of calls and backward jumps
                total += len(str(i))
            after.append(f"clean {total}")
        except BaseException as exc:
            after.append(f"fired {type(exc).__name__}")

    thread = threading.Thread(target=job_thread, daemon=True)
    with x.gate:
        thread.start()
        _wait_blocked_on_gate(thread)
        # what interrupt() does, for a run that was still in user code a moment ago
        x.interrupted = True
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident or 0),
                                                   ctypes.py_object(TimeoutInterrupt))
    thread.join(WAIT)
    assert after and after[0].startswith("clean"), after
    assert not x.in_user_code


def _wait_blocked_on_gate(thread: threading.Thread) -> None:
    """Until the thread waits for the gate (the ``with`` line of leave_user_code)."""
    gate_line = next(n for n, text in enumerate(inspect.getsourcelines(leave_user_code)[0],
                                                start=leave_user_code.__code__.co_firstlineno)
                     if "with execution.gate" in text)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident or 0)
        if (frame is not None and frame.f_code is leave_user_code.__code__
                and frame.f_lineno == gate_line):
            return
        time.sleep(0.001)
    raise AssertionError("the thread never reached the gate")


def test_a_signal_is_taken_once_however_often_it_was_set() -> None:
    signal = Signal()
    assert not signal.take(0.01)
    signal.set()
    signal.set()  # set twice before it was taken: still one flag
    assert signal.take(0) and not signal.take(0.01)


def test_a_signal_wakes_its_waiter_and_survives_racing_setters() -> None:
    signal = Signal()
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(signal.take(WAIT)))
    waiter.start()
    def set_often() -> None:
        for _ in range(200):
            signal.set()

    setters = [threading.Thread(target=set_often) for _ in range(4)]
    for setter in setters:
        setter.start()
    for thread in (waiter, *setters):
        thread.join(WAIT)
    assert woke == [True]
    signal.take(0)  # set or not after the race, it is clear after a take
    assert not signal.take(0)


def test_done_gets_the_slot_the_run_ended_with() -> None:
    """A run may go on to further jobs on its thread (a 1-slot worker's slot claims its next
    job itself): the pool then reports the slot it ended with, not the one it was given."""
    first, last = _slot(0), _slot(1)
    pool, done = _pool(1, lambda slot: last)
    pool.submit(first)
    assert done.wait(last)
    assert list(done) == [last]
    pool.close()


def test_held_slots_are_taken_oldest_first_and_handed_over_by_age() -> None:
    held = HeldSlots()
    assert not held and held.take() is None and held.overdue(0.0) == []
    first = [_slot(1), _slot(2)]
    held.add(first)
    time.sleep(0.05)
    later = [_slot(3)]
    held.add(later)
    assert held
    assert held.overdue(10.0) == []  # none held that long
    assert held.overdue(0.04) == first  # only those held at least 40 ms, oldest first
    assert held.take() is later[0]
    assert not held and held.take() is None
    held.add([_slot(4), _slot(5)])
    assert [s.execution.job.id[-1] for s in held.overdue(0.0)] == ["4", "5"]  # all of them
    assert not held


def test_held_slots_go_to_exactly_one_taker_among_racing_threads() -> None:
    held = HeldSlots()
    slots = [_slot(n) for n in range(2000)]
    held.add(slots)
    taken: list[list[Slot]] = [[] for _ in range(4)]

    def take(into: list[Slot]) -> None:
        while (slot := held.take()) is not None:
            into.append(slot)

    def overdue(into: list[Slot]) -> None:
        while held:
            into.extend(held.overdue(0.0))

    threads = [threading.Thread(target=take, args=(taken[n],)) for n in range(3)]
    threads.append(threading.Thread(target=overdue, args=(taken[3],)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    everything = [slot for part in taken for slot in part]
    assert len(everything) == len(slots)
    assert {id(slot) for slot in everything} == {id(slot) for slot in slots}
