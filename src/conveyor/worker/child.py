"""A job process of a process-pool worker: it runs job functions and nothing else.

Started by its worker (``python -m conveyor.worker.child FD``, see
:mod:`conveyor.worker.processes`), it imports the app by its ``package.module:attr`` path for the
job functions, then runs the jobs its slot hands it, one at a time, until the pipe closes. It
never opens the store: progress, checkpoints and the outcome go to the worker as JSON messages,
and the worker forwards what its heartbeats learn (pause, cancel, shutdown, a lost lease). So
the job sees the same :class:`~conveyor.context.JobContext` as in a thread: the context works on
an :class:`~conveyor.context.Execution` whose store is the pipe.

SIGINT and SIGTERM are ignored: a Ctrl-C at the terminal reaches the whole process group, and the
worker, not the child, decides how its jobs stop (pause at a checkpoint, or a kill). When the
worker is gone (the pipe reads end-of-file) the child exits at once, whatever its job is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import queue
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from conveyor import payload
from conveyor.changes import Lease
from conveyor.context import (
    AsyncJobContext,
    CancelInterrupt,
    Execution,
    JobContext,
    LeaseLostInterrupt,
    PauseInterrupt,
    TimeoutInterrupt,
)
from conveyor.errors import ConfigurationError, ConveyorError, LeaseLost, StoreError
from conveyor.model import JobProgress
from conveyor.stores.base import Signals
from conveyor.worker import wire
from conveyor.worker.executor import error_of

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.engine import Engine
    from conveyor.registry import JobType

#: How often the child sends a running job's progress (seconds); the worker writes it out.
FLUSH_EVERY = 0.05


def import_app(ref: str) -> Conveyor:
    """The app at ``package.module:attr``, for its job functions."""
    from conveyor.app import Conveyor

    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"app path {ref!r} must look like package.module:attribute")
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything; one line
        raise ConfigurationError(f"cannot import {module_name!r} for app path {ref!r}: "
                                 f"{type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"app path {ref!r}: {module_name} has no attribute "
                                     f"{part!r}")
        target = getattr(target, part)
    if not isinstance(target, Conveyor):
        raise ConfigurationError(f"app path {ref!r} is not a conveyor.Conveyor app (it is a "
                                 f"{type(target).__name__!r})")
    return target


class _PipeLog(logging.Handler):
    """Sends the job's log records to the worker, which logs them as its own."""

    def __init__(self, child: Child) -> None:
        super().__init__()
        self.child = child

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.child.send({"op": "log", "name": record.name, "level": record.levelno,
                             "message": self.format(record)})


class _PipeWriter:
    """The store of the child's :class:`Execution`: a checkpoint is written by the worker."""

    def __init__(self, child: Child) -> None:
        self.child = child

    def save_progress(self, lease: Lease, progress: JobProgress, *,
                      checkpoint: bool = False) -> Signals:
        self.child.send({"op": "checkpoint", "data": progress.last_checkpoint,
                         "current": progress.current_step, "total": progress.total_steps})
        reply = self.child.replies.get()
        if reply.get("op") == "saved":
            return Signals(bool(reply.get("pause")), bool(reply.get("cancel")))
        if reply.get("kind") == "lost":
            raise LeaseLost(f"job {lease.job_id}: the worker no longer holds its lease")
        raise StoreError(str(reply.get("message", "the checkpoint could not be saved")))


class Child:
    """The child's two threads: the main one runs jobs, a reader takes the worker's messages
    (jobs, flags, checkpoint replies) and sends the running job's progress."""

    def __init__(self, conn: Connection, engine: Engine) -> None:
        self.conn = conn
        self.engine = engine
        self.jobs: queue.SimpleQueue[wire.Message] = queue.SimpleQueue()
        self.replies: queue.SimpleQueue[wire.Message] = queue.SimpleQueue()
        self.execution: Execution | None = None
        self._send_lock = threading.Lock()

    def send(self, message: wire.Message) -> None:
        with self._send_lock:
            wire.send(self.conn, message)

    def serve(self) -> None:
        threading.Thread(target=self._read, name="conveyor-child-reader", daemon=True).start()
        while True:
            self._run(self.jobs.get())

    def _read(self) -> None:
        try:
            while True:
                if self.conn.poll(FLUSH_EVERY):
                    self._dispatch(wire.receive(self.conn))
                self._flush()
        except (EOFError, OSError, ValueError):
            pass
        # the worker is gone (or talks nonsense): nothing this process runs may outlive it
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)

    def _dispatch(self, message: wire.Message) -> None:
        op = message["op"]
        if op == "job":
            self.jobs.put(message)
        elif op == "flags":
            x = self.execution
            if x is not None and message.get("token") == x.lease.token:
                _apply_flags(x, message)
        elif op in ("saved", "save_failed"):
            self.replies.put(message)

    def _flush(self) -> None:
        with self._send_lock:
            x = self.execution
            if x is not None and x.dirty and not x.saving:
                x.dirty = False
                wire.send(self.conn, {"op": "progress", "current": x.current,
                                      "total": x.total})

    def _run(self, message: wire.Message) -> None:
        job = wire.job_from_wire(message["job"])
        x = Execution(job, Lease(job.id, job.lease_token or "", job.attempt), _PipeWriter(self),
                      retry_for=0.0)  # the worker retries a checkpoint through an outage
        _apply_flags(x, message["flags"])
        self.execution = x
        try:
            spec = self.engine.job_type(job.job_type)
        except ConveyorError as exc:
            report: wire.Message = {"outcome": "error", "error": wire.error_to_wire(
                error_of(exc, with_traceback=False))}
        else:
            report = _perform(spec, x)
        with self._send_lock:  # no progress of this job may follow its end
            self.execution = None
            wire.send(self.conn, {"op": "done", "current": x.current, "total": x.total,
                                  **report})


def _apply_flags(x: Execution, flags: wire.Message) -> None:
    x.db_pause = bool(flags.get("pause"))
    x.db_cancel = bool(flags.get("cancel"))
    x.shutdown = bool(flags.get("shutdown"))
    x.lost = bool(flags.get("lost"))


#: How an interrupt that ended a job is named to the worker (subclasses first).
_INTERRUPTS: list[tuple[type[BaseException], str]] = [
    (LeaseLostInterrupt, "lost"), (PauseInterrupt, "pause"), (CancelInterrupt, "cancel"),
    (TimeoutInterrupt, "timeout")]


def _perform(spec: JobType, x: Execution) -> wire.Message:
    """Run the job function; what came of it, as the ``done`` message's fields."""
    try:
        if spec.is_async:
            value: Any = asyncio.run(spec.func(AsyncJobContext(x), **x.job.params))
        else:
            value = spec.func(JobContext(x), **x.job.params)
    except BaseException as exc:  # noqa: BLE001 - job code may raise anything; we report it
        for kind, name in _INTERRUPTS:
            if isinstance(exc, kind):
                return {"outcome": "interrupt", "interrupt": name}
        return {"outcome": "error", "error": wire.error_to_wire(error_of(exc))}
    try:
        payload.validate(value, "result")
    except ConveyorError as bad:
        return {"outcome": "bad_result",
                "error": wire.error_to_wire(error_of(bad, with_traceback=False))}
    return {"outcome": "result", "value": value}


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(int(sys.argv[1]))
    init = wire.receive(conn)
    sys.path[:] = [str(p) for p in init["sys_path"]]
    child_log = logging.getLogger()
    child_log.setLevel(int(init["log_level"]))
    try:
        app = import_app(str(init["app"]))
    except BaseException as exc:  # noqa: BLE001 - reported to the worker, which says why
        wire.send(conn, {"op": "fatal", "error": wire.error_to_wire(
            error_of(exc, with_traceback=not isinstance(exc, ConfigurationError)))})
        return
    child = Child(conn, app.engine)
    child_log.handlers[:] = [_PipeLog(child)]
    child.send({"op": "ready", "pid": os.getpid()})
    child.serve()


if __name__ == "__main__":
    main()
