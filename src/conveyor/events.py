"""The seed's observer events and the in-process subscriber registry.

Events are emitted after the transition has committed, so a subscriber never sees a move that
did not happen, and a subscriber that raises is logged and skipped: it can never undo or block
a transition.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from conveyor.lifecycle import JobState
from conveyor.model import Job, utcnow

log = logging.getLogger("conveyor.events")


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job; ``job`` is the job as it was just after."""

    job: Job
    from_state: JobState | None = None
    actor: str = ""
    reason: str = ""
    at: datetime = field(default_factory=utcnow)

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def job_id(self) -> str:
        return self.job.id

    def to_dict(self) -> dict[str, object]:
        return {
            "event": self.name,
            "job_id": self.job.id,
            "job_type": self.job.job_type,
            "from_state": self.from_state.value if self.from_state else None,
            "state": self.job.state.value,
            "actor": self.actor,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "progress": self.job.progress.to_dict(),
        }


class JobCreated(JobEvent): ...
class JobStarted(JobEvent): ...
class JobPaused(JobEvent): ...
class JobResumed(JobEvent): ...
class JobProgressed(JobEvent): ...
class JobCompleted(JobEvent): ...
class JobFailed(JobEvent): ...
class JobRetried(JobEvent): ...
class JobCancelled(JobEvent): ...
class JobSnoozed(JobEvent):
    """A running job put itself back to pending for a while (``ctx.snooze``)."""
class JobRequested(JobEvent):
    """A pause, cancel or resume request was recorded; the state has not changed yet."""


EVENT_TYPES: dict[str, type[JobEvent]] = {
    cls.__name__: cls
    for cls in (
        JobCreated, JobStarted, JobPaused, JobResumed, JobProgressed,
        JobCompleted, JobFailed, JobRetried, JobCancelled, JobRequested, JobSnoozed,
    )
}

Subscriber = Callable[[JobEvent], object]


class EventBus:
    """Calls every subscriber with every event, shielding the caller from their failures."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register ``callback``; returns a function that unsubscribes it."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    @property
    def subscribed(self) -> bool:
        """Whether anyone receives events now: an emitter of many may skip building them
        when not (a subscriber added meanwhile sees the events emitted after it was added)."""
        return bool(self._subscribers)

    def emit(self, event: JobEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("subscriber %r failed on %s for job %s", callback, event.name,
                              event.job.id)
