"""Shared helpers for the in-process worker tests (this module holds no tests itself).

Workers run in a background thread with short timings; tests wait on events or on the job's
stored state with a deadline, never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from conveyor import Backoff, Conveyor, HistoryEntry, Job, JobEvent, JobState
from conveyor.worker import Worker

#: Short timings for in-process workers: every wait in these tests is well under a second.
FAST: dict[str, Any] = {
    "lease_seconds": 2,
    "heartbeat_interval": 0.5,
    "poll_interval": 0.05,
    "progress_interval": 0.05,
    "handle_signals": False,
    "cancel_grace": 0.5,
    "shutdown_grace": 1.0,
}
#: How long a test waits for something that should take a fraction of a second.
WAIT = 5.0
#: Retries due almost at once, so retried jobs run again within the test.
TINY = Backoff(base=0.01, max_delay=0.05)


class WorkerThread:
    """A worker running ``run()`` in a background thread."""

    def __init__(self, app: Conveyor, *, burst: bool = False, **options: Any) -> None:
        self.worker: Worker = app.worker(**{"concurrency": 2, **FAST, **options})
        self.thread = threading.Thread(target=self._run, kwargs={"burst": burst},
                                       name="test-worker", daemon=True)
        self.error: BaseException | None = None

    def _run(self, burst: bool) -> None:
        try:
            self.worker.run(burst=burst)
        except BaseException as exc:  # surfaced by join() and stop(), not as a thread warning
            self.error = exc

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def join(self, timeout: float = WAIT) -> None:
        """Wait for ``run()`` to return; fails the test if it does not, or if it raised."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker.run() did not return in time"
        assert self.error is None, f"worker.run() raised {self.error!r}"

    def stop(self, timeout: float = WAIT) -> None:
        """Graceful stop, then join; a second stop() (hard stop) if it lingers."""
        self.worker.stop()
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.worker.stop()
            self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        assert self.error is None, f"worker.run() raised {self.error!r}"


@contextlib.contextmanager
def running_worker(app: Conveyor, **options: Any) -> Iterator[Worker]:
    """A worker in a background thread for the duration of the block; always stopped."""
    runner = WorkerThread(app, **options).start()
    try:
        yield runner.worker
    finally:
        runner.stop()


def wait_until(predicate: Callable[[], object], timeout: float = WAIT,
               what: str = "condition") -> None:
    """Poll ``predicate`` (cheap reads only) until it is truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def wait_state(app: Conveyor, job_id: str, state: JobState, timeout: float = WAIT,
               **fields: Any) -> Job:
    """Wait until the stored job is in ``state`` (and has the given field values)."""
    found: list[Job] = []

    def check() -> bool:
        job = app.get(job_id)
        found[:] = [job]
        return job.state is state and all(getattr(job, k) == v for k, v in fields.items())

    try:
        wait_until(check, timeout, f"job {job_id} to be {state.value} {fields or ''}")
    except AssertionError as exc:
        last = found[0] if found else None
        raise AssertionError(f"{exc}; last seen: {last and last.to_dict()}") from None
    return found[0]


class Recorder:
    """Records every event of an app (subscribe it) and lets a test wait for one."""

    def __init__(self, app: Conveyor | None = None) -> None:
        self.events: list[JobEvent] = []
        self._cond = threading.Condition()
        if app is not None:
            app.subscribe(self)

    def __call__(self, event: JobEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def of(self, job_id: str) -> list[JobEvent]:
        with self._cond:
            return [e for e in self.events if e.job.id == job_id]

    def names(self, job_id: str) -> list[str]:
        return [e.name for e in self.of(job_id)]

    def wait_for(self, name: str, job_id: str, *, count: int = 1,
                 timeout: float = WAIT) -> JobEvent:
        """Wait until ``count`` events called ``name`` were seen for the job; the last one."""

        def seen() -> list[JobEvent]:
            return [e for e in self.events if e.name == name and e.job.id == job_id]

        with self._cond:
            if not self._cond.wait_for(lambda: len(seen()) >= count, timeout):
                names = [e.name for e in self.events if e.job.id == job_id]
                raise AssertionError(f"no {count}x {name} for job {job_id} within {timeout}s; "
                                     f"saw {names}")
            return seen()[count - 1]


def actions(history: list[HistoryEntry]) -> list[str]:
    return [h.action for h in history]


def assert_history_chain(app: Conveyor, job_id: str) -> list[HistoryEntry]:
    """The history is one unbroken chain of moves ending in the job's current state."""
    history = app.history(job_id)
    assert history, "a job always has at least its create row"
    assert history[0].action == "create"
    assert history[0].from_state is None
    assert history[0].to_state is JobState.PENDING
    state = JobState.PENDING
    for entry in history[1:]:
        assert entry.from_state is state, f"broken chain at {entry}"
        state = entry.to_state
    assert state is app.get(job_id).state
    ids = [h.id for h in history]
    assert ids == sorted(ids)
    return history


class Gate:
    """A threading.Event with a bounded wait, so a forgotten gate cannot hang a job forever."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def open(self) -> None:
        self._event.set()

    def wait(self, timeout: float = 10.0) -> bool:
        return self._event.wait(timeout)

    def is_open(self) -> bool:
        return self._event.is_set()
