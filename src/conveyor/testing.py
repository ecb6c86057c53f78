"""Helpers for testing code that uses conveyor, in the users' own test suites.

``drain(app)`` runs every runnable job to the end in the calling thread's process, with a
burst worker using short timings, so a test can enqueue, drain and assert on the outcome
without starting a separate worker.
"""

from __future__ import annotations

from conveyor.app import Conveyor
from conveyor.worker import WorkerStats


def drain(app: Conveyor, *, concurrency: int = 1) -> WorkerStats:
    """Run jobs until no runnable or scheduled-soon work is left (retries included)."""
    worker = app.worker(concurrency=concurrency, handle_signals=False, poll_interval=0.02,
                        progress_interval=0.05, heartbeat_interval=1.0, lease_seconds=30.0)
    return worker.run(burst=True)
