"""Who is working: the workers registry, as rows a worker keeps fresh and operators read.

A worker writes its row when it starts and again on every heartbeat tick (one statement,
whatever the number of its jobs); the row says when it expires (the last heartbeat plus the
worker's lease time). A worker whose row expired is *gone*: killed, frozen or cut off; its
jobs are the reaper's. A graceful stop marks the row *stopped*. Such rows are deleted an hour
later (:data:`WORKERS_KEPT`), when a worker starts. An operator's stop request is a flag in the
row, read by the worker on its next heartbeat, which then stops as on SIGTERM.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["WORKERS_KEPT", "WorkerInfo", "WorkerRegistration", "WorkerStatus"]

#: Seconds a stopped or gone worker's row is kept before a starting worker deletes it.
WORKERS_KEPT = 3600.0


def _version() -> str:
    from conveyor import __version__  # the package imports this module while it loads

    return __version__


class WorkerStatus(StrEnum):
    """What a worker's row says about it, by the store's clock."""

    RUNNING = "running"
    STOPPING = "stopping"  # asked to stop; finishing or checkpointing its jobs
    STOPPED = "stopped"    # stopped gracefully
    GONE = "gone"          # its heartbeat stopped: killed, frozen or cut off


@dataclass(frozen=True)
class WorkerRegistration:
    """What a worker says about itself (the parts of its row that do not change)."""

    id: str
    concurrency: int
    queues: tuple[str, ...] = ()
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    version: str = field(default_factory=_version)


@dataclass(frozen=True)
class WorkerInfo:
    """A worker's row. ``alive``: its last heartbeat has not expired by the store's clock."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    version: str
    started_at: datetime
    seen_at: datetime
    expires_at: datetime
    running: int
    stop_requested: bool
    stopped_at: datetime | None
    alive: bool

    @property
    def status(self) -> WorkerStatus:
        if self.stopped_at is not None:
            return WorkerStatus.STOPPED
        if not self.alive:
            return WorkerStatus.GONE
        return WorkerStatus.STOPPING if self.stop_requested else WorkerStatus.RUNNING

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id, "host": self.host, "pid": self.pid, "queues": list(self.queues),
            "concurrency": self.concurrency, "version": self.version,
            "started_at": iso(self.started_at), "last_heartbeat": iso(self.seen_at),
            "expires_at": iso(self.expires_at), "running": self.running,
            "stop_requested": self.stop_requested, "stopped_at": iso(self.stopped_at),
            "status": self.status.value,
        }


def join_queues(queues: tuple[str, ...]) -> str:
    """The stored form of a worker's queues: a JSON array (a queue name may hold a comma)."""
    return json.dumps(list(queues))


def split_queues(stored: str) -> tuple[str, ...]:
    try:
        queues = json.loads(stored)
    except ValueError:
        return ()
    return tuple(str(q) for q in queues) if isinstance(queues, list) else ()
