"""Log lines for machines: one JSON object per line (``conveyor worker --log-format json``).

Log shippers (Vector, Fluent Bit, Loki's promtail, CloudWatch) read a line as a record; with
JSON they need no parsing rules. Every line has ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
``message`` and ``worker``; a job event adds ``event``, ``job_id``, ``job_type``, ``queue``,
``state``, ``attempt`` and, once the job has stopped, ``duration`` (seconds from its first
start). Text from jobs (a reason, an error message) is JSON-escaped, so it cannot forge a line.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from conveyor.events import JobEvent

__all__ = ["EVENT_FIELDS", "JsonFormatter", "WorkerField", "event_fields"]

#: The fields a job event's log record carries (``extra=`` of the logging call).
EVENT_FIELDS = ("event", "job_id", "job_type", "queue", "state", "attempt", "duration")


def event_fields(event: JobEvent) -> dict[str, Any]:
    """What a log record says about a job event, for :class:`JsonFormatter`."""
    job = event.job
    duration = None
    if job.started_at is not None and job.finished_at is not None:
        duration = round(max(0.0, (job.finished_at - job.started_at).total_seconds()), 6)
    return {"event": event.name, "job_id": job.id, "job_type": job.job_type,
            "queue": job.queue, "state": job.state.value, "attempt": job.attempt,
            "duration": duration}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "worker": getattr(record, "worker", None),
        }
        for name in EVENT_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class WorkerField(logging.Filter):
    """Stamps each record with the worker's id (set once the worker exists)."""

    def __init__(self) -> None:
        super().__init__()
        self.worker_id: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = self.worker_id
        return True
