"""Helpers for testing code that uses conveyor, in the users' own test suites.

- ``drain(app)`` runs every runnable job to the end in this process, with a burst worker using
  short timings, so a test can enqueue, drain and assert on the outcome without starting a
  separate worker.
- ``eager(app)`` makes every enqueue run its job at once, inline in the enqueuing thread,
  through the same lifecycle and history as a worker: claimed by id (``start``), run by the
  worker's own executor pipeline, then completed, failed (and retried by its backoff),
  paused or cancelled. ``enqueue`` then returns the job as that run left it.
- :mod:`conveyor.pytest_plugin` wraps both in fixtures (``conveyor_app``, ``drain``,
  ``conveyor_eager``).

What eager mode does not do: it has no monitor thread, so a job's ``timeout`` is not enforced
and nobody else can pause or cancel it mid-run; a job scheduled for later (``delay``,
``run_at``) and a retry waiting out its backoff stay pending, for ``drain()`` to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from conveyor.app import Conveyor
from conveyor.changes import Lease
from conveyor.context import Execution
from conveyor.lifecycle import JobState
from conveyor.model import Job
from conveyor.registry import JobType
from conveyor.worker import WorkerStats
from conveyor.worker.executor import execute

__all__ = ["EAGER_WORKER", "drain", "eager"]

#: The worker name eager runs are recorded under (in ``started_by``-style history actors).
EAGER_WORKER = "eager"


def drain(app: Conveyor, *, concurrency: int = 1) -> WorkerStats:
    """Run jobs until no runnable or scheduled-soon work is left (retries included)."""
    worker = app.worker(concurrency=concurrency, handle_signals=False, poll_interval=0.02,
                        progress_interval=0.05, heartbeat_interval=1.0, lease_seconds=30.0)
    return worker.run(burst=True)


@contextlib.contextmanager
def eager(app: Conveyor) -> Iterator[Conveyor]:
    """Within the block, each job enqueued through ``app`` (sync or async client) runs at once.

    Jobs enqueued in a caller's transaction (``connection=``) are not run: they do not exist
    until the caller commits.
    """
    runner = _EagerRunner(app)
    engine = app.engine
    previous, engine.eager = engine.eager, runner.run
    try:
        yield app
    finally:
        engine.eager = previous
        runner.close()


class _EagerRunner:
    """Runs one just-enqueued job to its recorded end, as a worker's slot would."""

    def __init__(self, app: Conveyor) -> None:
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, job: Job) -> Job:
        app = self._app
        if job.waiting_on:  # an earlier job of its batch (a chain's step) may have freed it
            job = app.get(job.id)
        if (job.state is not JobState.PENDING or job.waiting_on
                or job.run_at > app.store.now()):
            return job  # scheduled for later, or waiting: drain() runs it when it can
        started = app.start(job.id, worker=EAGER_WORKER)
        assert started.lease_token is not None
        lease = Lease(started.id, started.lease_token, started.attempt)
        execution = Execution(started, lease, app.engine, retry_for=1.0)
        execute(app.engine, execution, EAGER_WORKER, loop_of=self._loop_for,
                on_future=lambda _future: None)
        return app.get(job.id)

    def _loop_for(self, spec: JobType) -> asyncio.AbstractEventLoop | None:
        """An event loop in a thread of its own for ``async def`` jobs (the enqueuing thread
        may be running a loop of its own, and it waits for the job)."""
        if not spec.is_async:
            return None
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever,
                                                name="conveyor-eager-loop", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
