"""What a worker and its job processes say to each other: JSON messages over a pipe.

Only JSON crosses, never pickle: a child runs the user's code, and whatever it sends back is
data to check, not objects to rebuild (unpickling runs code). Each message is one frame of a
:class:`multiprocessing.connection.Connection` (``send_bytes``/``recv_bytes``), a JSON object
with an ``op``.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError, JobProgress

#: The biggest message a worker accepts from a child (a checkpoint or result is much smaller:
#: the payload rules cap them; this only stops a runaway child from exhausting the worker).
MAX_MESSAGE = 64 * 1024 * 1024

Message = dict[str, Any]


def send(conn: Connection, message: Message) -> None:
    conn.send_bytes(json.dumps(message, allow_nan=False, separators=(",", ":")).encode())


def receive(conn: Connection) -> Message:
    """The next message; raises EOFError when the other end is gone, ValueError when what came
    is not a JSON object with an ``op``."""
    message = json.loads(conn.recv_bytes(MAX_MESSAGE))
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ValueError("not a message")
    return message


#: The job's fields, looked up once: a job crosses twice per run, on the worker's hot path.
_FIELDS = tuple(f.name for f in dataclasses.fields(Job))


def job_to_wire(job: Job) -> Message:
    """Every field of the job, JSON-ready (times as ISO text)."""
    out: Message = {}
    for name in _FIELDS:
        value = getattr(job, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, JobState):
            value = value.value
        elif isinstance(value, JobProgress):
            value = {"current_step": value.current_step, "total_steps": value.total_steps,
                     "last_checkpoint": value.last_checkpoint}
        elif isinstance(value, JobError):
            value = error_to_wire(value)
        out[name] = value
    return out


def job_from_wire(data: Message) -> Job:
    """The job :func:`job_to_wire` described (in the child, for ``ctx.job``)."""
    return Job(**{name: _field_from_wire(name, data[name]) for name in _FIELDS if name in data})


def _field_from_wire(name: str, value: Any) -> Any:
    if name == "state":
        return JobState(value)
    if name == "progress":
        return JobProgress(**value)
    if name == "error" and value is not None:
        return JobError(**value)
    if isinstance(value, str) and name.endswith("_at"):
        return datetime.fromisoformat(value)
    return value


def error_to_wire(error: JobError) -> Message:
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def error_from_wire(data: object) -> JobError:
    """A child's error report, checked: a child can send anything."""
    if not isinstance(data, dict):
        return JobError("ProtocolError", "the job's process sent a malformed error")
    return JobError(str(data.get("type", "Error"))[:200], str(data.get("message", "")),
                    str(data.get("traceback", "")))
