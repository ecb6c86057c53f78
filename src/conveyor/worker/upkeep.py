"""A worker's housekeeping: its row in the workers registry, and retention.

Kept out of the worker's loop: the worker calls :meth:`Presence.beat` once per heartbeat tick
(one statement however many jobs it runs) and starts :func:`run_retention` on a thread of its
own, so a slow prune never delays a heartbeat or a claim.
"""

from __future__ import annotations

import logging
import threading

from conveyor.engine import Engine
from conveyor.errors import ConveyorError
from conveyor.presence import WORKERS_KEPT, WorkerRegistration
from conveyor.retention import Retention, prune_store

log = logging.getLogger("conveyor.worker")


class Presence:
    """The worker's row: written on start and every heartbeat tick, marked stopped at the end.

    ``ttl``: how long the row stays alive without a beat (the worker's lease time: a worker
    gone that long has lost its jobs' leases too).
    """

    def __init__(self, engine: Engine, registration: WorkerRegistration, ttl: float) -> None:
        self.engine = engine
        self.registration = registration
        self.ttl = ttl
        self._lock = threading.Lock()
        self._ended = False

    def start(self) -> None:
        """Register (and clear out the rows of workers long gone); a failure is only logged:
        the worker's own loop reports an unavailable store."""
        try:
            self.engine.store.prune_workers(WORKERS_KEPT)
            self.beat(0)
        except ConveyorError as exc:
            log.error("worker %s: could not register: %s", self.registration.id, exc)

    def beat(self, running: int) -> bool:
        """Refresh the row; True when an operator asked this worker to stop."""
        with self._lock:
            if self._ended:
                return False
            return self.engine.store.beat_worker(self.registration, running=running,
                                                 ttl=self.ttl)

    def end(self) -> None:
        with self._lock:
            self._ended = True
            try:
                self.engine.store.end_worker(self.registration.id)
            except ConveyorError as exc:
                log.error("worker %s: could not record its stop: %s", self.registration.id,
                          exc)


def run_retention(engine: Engine, retention: Retention, stopping: threading.Event,
                  worker_id: str) -> None:
    """Prune finished jobs every ``retention.interval`` until ``stopping`` is set.

    Several workers may prune at once: each batch deletes rows nobody else is deleting (on
    PostgreSQL ``SKIP LOCKED``; on SQLite batches take turns on the write lock).
    """
    ages = retention.ages()
    while ages and not stopping.is_set():
        try:
            deleted = prune_store(engine.store, ages, batch_size=retention.batch_size,
                                  pause=retention.batch_pause, stop=stopping)
            if any(deleted.values()):
                log.info("worker %s: retention deleted %s", worker_id,
                         ", ".join(f"{n} {state.value}" for state, n in deleted.items() if n))
        except ConveyorError as exc:
            log.error("worker %s: retention: %s", worker_id, exc)
        stopping.wait(retention.interval)
