"""Running conveyor for months: retention, the workers registry, readiness.

A mixin of :class:`~conveyor.app.Conveyor` (like :mod:`conveyor.flow`); the CLI, the HTTP API
and the dashboard call these methods and nothing below them. See docs/operations.md.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from conveyor import validate
from conveyor.engine import Engine
from conveyor.errors import ConfigurationError, InvalidParams, StoreError, WorkerNotFound
from conveyor.lifecycle import JobState
from conveyor.presence import WorkerInfo
from conveyor.retention import Retention, age_seconds, finished_states, prune_store
from conveyor.stores.base import Store

__all__ = ["Operations", "Readiness", "check_store"]

log = logging.getLogger("conveyor.operations")


@dataclass(frozen=True)
class Readiness:
    """Whether the store can serve: reachable, and its schema at this conveyor's version.

    ``reason`` is short and holds nothing about the store (it may be shown to anyone);
    ``message`` says what is wrong in full, the store's URL redacted.
    """

    ready: bool
    reason: str = ""
    message: str = ""
    schema_version: int | None = None
    expected_version: int | None = None


def check_store(store: Store) -> Readiness:
    """Read the store's schema version (a round trip) and compare it with this conveyor's."""
    try:
        version, expected = store.schema_version(), store.latest_version()
    except StoreError as exc:
        return Readiness(False, "store unavailable", str(exc))
    if version < expected:
        return Readiness(False, "schema not current",
                         f"the store's schema is at version {version}, this conveyor needs "
                         f"{expected}: run 'conveyor migrate'", version, expected)
    return Readiness(True, "", f"ready (schema version {version})", version, expected)


class Operations:
    """Retention, the workers registry and readiness, over the app's engine."""

    engine: Engine

    def prune(self, older_than: float | timedelta | None = None, *,
              states: Iterable[JobState | str] | None = None, dry_run: bool = False,
              batch_size: int = 500, pause: float | None = None) -> dict[JobState, int]:
        """Delete finished jobs (and their history) older than ``older_than``, or, when it is
        None, than the default :class:`~conveyor.retention.Retention` of their state.

        ``states``: some of completed, failed (for good only), cancelled (default all).
        Deletes in batches of at most ``batch_size``, each a short transaction, ``pause``
        seconds apart (None: as long as the batch took, so claims keep their turn on SQLite's
        lock); ``dry_run`` only counts. Returns the number per state.
        """
        chosen = finished_states(states)
        if older_than is None:
            defaults = Retention().ages()
            ages = {state: defaults[state] for state in chosen if state in defaults}
        else:
            age = age_seconds("older_than", older_than)
            if age is None:
                raise ConfigurationError("older_than must be a duration (None: the defaults)")
            ages = dict.fromkeys(chosen, age)
        settings = Retention(batch_size=batch_size, batch_pause=pause or 0.0)  # checks both
        store = self.engine.store
        if dry_run:
            return {state: store.count_prunable(state, age) for state, age in ages.items()}
        return prune_store(store, ages, batch_size=settings.batch_size, pause=pause)

    def workers(self) -> builtins.list[WorkerInfo]:
        """Every registered worker, alive ones first: running, stopping, stopped or gone."""
        return self.engine.store.workers()

    def stop_worker(self, worker_id: str) -> WorkerInfo:
        """Ask a live worker to stop gracefully: on its next heartbeat it stops claiming, and
        its running jobs finish or pause at a checkpoint, as on SIGTERM.

        :class:`~conveyor.errors.WorkerNotFound` when no live worker has the id.
        """
        try:
            validate.name("worker id", worker_id)
        except InvalidParams:  # no worker could have registered it
            raise WorkerNotFound(worker_id[:100]) from None
        info = self.engine.store.request_worker_stop(worker_id)
        if info is not None:
            return info
        known = {w.id: w for w in self.engine.store.workers()}
        found = known.get(worker_id)
        raise WorkerNotFound(worker_id, f" (it is {found.status.value})" if found else "")

    def ready(self) -> Readiness:
        """Whether the store is reachable and its schema current (the dashboard's /readyz)."""
        try:
            store = self.engine.store
        except StoreError as exc:
            return Readiness(False, "store unavailable", str(exc))
        except ConfigurationError as exc:
            return Readiness(False, "store misconfigured", str(exc))
        return check_store(store)
