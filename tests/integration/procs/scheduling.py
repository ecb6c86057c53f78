"""Bodies of the processes that race unique enqueues and scheduler ticks on one database.

Spawned (``multiprocessing`` with ``spawn``): each has its own interpreter and its own store
connection, and meets the other racers at a shared barrier before every round. Each writes
what it got to its own file, one line per round, read by the test afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor import Conveyor
from conveyor.context import JobContext

BARRIER_TIMEOUT = 60.0


def _app(url: str, options: dict[str, Any]) -> Conveyor:
    app = Conveyor(url, **options)

    @app.job("race.sync")
    def sync(ctx: JobContext, n: int = 0) -> int:
        return n

    return app


def enqueue_unique(url: str, barrier: Any, options: dict[str, Any], keys: list[str],
                   out: str) -> None:
    """Round by round, enqueue ``race.sync`` under one key with the other racer.
    Lines: ``<key> <job id> created|existing``."""
    app = _app(url, options)
    lines = []
    try:
        for key in keys:
            barrier.wait(BARRIER_TIMEOUT)
            job = app.enqueue("race.sync", unique_key=key, actor="racer")
            lines.append(f"{key} {job.id} {'existing' if job.existing else 'created'}")
    finally:
        app.close()
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
