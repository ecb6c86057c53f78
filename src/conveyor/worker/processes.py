"""The process pool: each slot runs its jobs in a child process of its own.

For CPU-bound jobs (no shared interpreter lock between slots) and for hard stops: a forced cancel
or a timeout kills the child (SIGKILL), so a job stuck in C code or ignoring its grace really
stops, and a job that crashes its interpreter (a segfault) fails alone, to be retried per its
policy, while the worker and its other slots go on.

The worker keeps all store access (claims, heartbeats, progress writes, checkpoints, outcomes);
the child only calls the job function (:mod:`conveyor.worker.child`). The slot's thread talks to
its child over a pipe in JSON (:mod:`conveyor.worker.wire`): the job in, progress and checkpoints
and log records out, the pause/cancel/shutdown flags its heartbeats learn in, the outcome out.

A child is started with ``python -c`` (fork and exec, never a fork of this threaded process),
imports the app by the same ``package.module:attr`` path the CLI's ``--app`` takes, and is
reused across jobs: replaced after ``max_jobs_per_child`` jobs, after a kill, or when it died.
Starting one costs a fresh interpreter and the app's import (a few tenths of a second): it
happens when a slot takes its first job, and does not count against that job's timeout.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from conveyor.context import (
    CancelInterrupt,
    Execution,
    LeaseLostInterrupt,
    PauseInterrupt,
    TimeoutInterrupt,
)
from conveyor.errors import ConfigurationError, ConveyorError
from conveyor.model import JobError
from conveyor.worker import wire
from conveyor.worker.executor import Outcome, OutcomeKind, Ran, normalise

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.engine import Engine
    from conveyor.registry import JobType
    from conveyor.worker.slots import Slot

log = logging.getLogger("conveyor.worker")

POOLS = ("thread", "process")
#: How long a new child may take to import the app and say it is ready (seconds).
START_TIMEOUT = 60.0
#: How often a slot's thread looks for flags to forward while its child is quiet (seconds).
POLL = 0.05
_ENTRY = "from conveyor.worker.child import main; main()"
_INTERRUPTS: dict[str, type[BaseException]] = {
    "pause": PauseInterrupt, "cancel": CancelInterrupt, "lost": LeaseLostInterrupt,
    "timeout": TimeoutInterrupt}


class ChildStartError(ConveyorError):
    """A job process could not be started, or its app could not be imported in it."""


def check_options(engine: Engine, pool: str, app_path: str | None,
                  max_jobs_per_child: int | None) -> None:
    """Refuse a process pool the children could not serve, before the worker starts."""
    if pool not in POOLS:
        raise ConfigurationError(f"pool must be 'thread' or 'process', not {pool!r}")
    if pool == "thread":
        if max_jobs_per_child is not None:
            raise ConfigurationError("max_jobs_per_child applies to pool='process' only")
        return
    if max_jobs_per_child is not None and max_jobs_per_child < 1:
        raise ConfigurationError(f"max_jobs_per_child must be >= 1, not {max_jobs_per_child}")
    if app_path is None:
        raise ConfigurationError(
            "pool='process' starts job processes that import the app by its path: pass "
            "app_path='package.module:attribute' (the app must live in an importable module, "
            "not in the script being run)")
    from conveyor.worker.child import import_app

    missing = sorted(set(engine.types) - set(import_app(app_path).engine.types))
    if missing:
        raise ConfigurationError(f"app path {app_path!r} does not register job type(s) "
                                 f"{', '.join(missing)} that this worker runs")


def find_app_path(app: Conveyor) -> str | None:
    """``module:attr`` of an importable module holding ``app``, if there is one (not the
    script being run: importing that again would run it again)."""
    for name, module in list(sys.modules.items()):
        if module is None or name in ("__main__", "__mp_main__"):
            continue
        try:
            attrs = list(vars(module).items())
        except TypeError:
            continue
        for attr, value in attrs:
            if value is app and not attr.startswith("_"):
                return f"{name}:{attr}"
    return None


class ChildProcess:
    """One job process and the worker's end of its pipe."""

    def __init__(self, app_path: str) -> None:
        mine, theirs = multiprocessing.Pipe()
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - this interpreter, our own entry point
                [sys.executable, "-c", _ENTRY, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.conn = mine
        self.jobs = 0
        self.busy = False
        self._send_lock = threading.Lock()
        level = min(logging.getLogger().getEffectiveLevel(),
                    logging.getLogger("conveyor").getEffectiveLevel())
        try:
            self.send({"op": "init", "app": app_path, "sys_path": list(sys.path),
                       "log_level": level})
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not self.conn.poll(left):
                    raise ChildStartError(f"job process did not start in {START_TIMEOUT:g}s")
                message = wire.receive(self.conn)
            except (EOFError, OSError, ValueError):
                raise ChildStartError(f"job process {self.ended()} while starting") from None
            if message["op"] == "ready":
                return
            if message["op"] == "fatal":
                raise ChildStartError(str(wire.error_from_wire(message.get("error"))))
            forward_log(message)

    def send(self, message: wire.Message) -> None:
        with self._send_lock:
            wire.send(self.conn, message)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop_now(self) -> None:
        """SIGKILL: whatever the job is doing, it stops now (safe from any thread)."""
        if self.proc.poll() is None:
            self.proc.kill()

    def kill(self) -> None:
        """Stop it now, reap it, and close the pipe (by the thread that owns the pipe)."""
        self.stop_now()
        self.proc.wait()
        self.conn.close()

    def retire(self) -> None:
        """Let it exit (it does on end-of-file), and reap it in the background."""
        self.conn.close()
        threading.Thread(target=self._reap, name="conveyor-child-reap", daemon=True).start()

    def _reap(self) -> None:
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def ended(self) -> str:
        """How it ended, for an error message: 'was killed by SIGSEGV', 'exited with 3'."""
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"


def forward_log(message: wire.Message) -> None:
    """Log a child's log record as the worker's own (where its handlers send it)."""
    if message.get("op") != "log":
        return
    name = str(message.get("name") or "root")[:200]
    level = message.get("level")
    if not isinstance(level, int) or isinstance(level, bool):
        level = logging.INFO
    logger = logging.getLogger() if name == "root" else logging.getLogger(name)
    if logger.isEnabledFor(level):
        logger.log(level, "%s", str(message.get("message", "")))


def _flags(x: Execution) -> tuple[bool, bool, bool, bool]:
    return (x.db_pause, x.db_cancel, x.shutdown, x.lost)


def _flags_message(x: Execution) -> wire.Message:
    pause, cancel, shutdown, lost = _flags(x)
    return {"op": "flags", "token": x.lease.token, "pause": pause, "cancel": cancel,
            "shutdown": shutdown, "lost": lost}


class ProcessRunner:
    """Runs a slot's job in the child its pool thread keeps (started on the thread's first
    job); the worker's executor pipeline records what came of it, as for a thread."""

    def __init__(self, app_path: str, max_jobs_per_child: int | None = None) -> None:
        self.app_path = app_path
        self.max_jobs_per_child = max_jobs_per_child
        self._local = threading.local()
        self._lock = threading.Lock()
        self._children: set[ChildProcess] = set()
        self._closed = False

    def run(self, slot: Slot, spec: JobType) -> Outcome:
        """In the slot's thread: the job's whole run in the child, as an :class:`Outcome`."""
        x = slot.execution
        # a child's start is not the job's time: no timeout while it starts
        deadline, slot.deadline, began = slot.deadline, None, time.monotonic()
        try:
            child = self._child()
        except (ConveyorError, OSError) as exc:
            log.error("job %s: its process did not start: %s", x.job.id, exc)
            error = JobError(type(exc).__name__, str(exc))
            return Outcome(OutcomeKind.FAILED, error=error, reason="its process did not start")
        finally:
            if deadline is not None:
                slot.deadline = deadline + (time.monotonic() - began)
        with x.gate:
            stop = slot.stop_with
            slot.child = None if stop else child
        if stop is not None:
            return normalise(Ran(raised=stop()), x)
        child.busy = True
        try:
            return self._converse(slot, child)
        finally:
            with x.gate:
                slot.child = None
            child.busy = False
            self._after(child)

    def interrupt(self, slot: Slot, exc: type[BaseException]) -> None:
        """From the monitor: stop the job by killing its child (at most once per run)."""
        with slot.execution.gate:
            if slot.stop_with is not None:
                return
            slot.stop_with = exc
            child = slot.child
        if child is not None:
            log.info("job %s: killing its process %d (%s)", slot.execution.job.id,
                     child.proc.pid, exc.__name__)
            child.stop_now()  # its slot's thread sees the pipe end, and cleans up

    def close(self) -> None:
        """The worker stops: idle children exit, busy ones (released jobs) are killed."""
        with self._lock:
            self._closed = True
            children = list(self._children)
            self._children.clear()
        for child in children:
            if child.busy:
                child.stop_now()
            else:
                child.retire()

    def _child(self) -> ChildProcess:
        child: ChildProcess | None = getattr(self._local, "child", None)
        if child is not None and child.alive():
            return child
        if child is not None:
            self._forget(child)
        if not self._admit(None):
            raise ChildStartError("the worker is stopping")
        child = ChildProcess(self.app_path)
        if not self._admit(child):  # the worker stopped while it started
            child.retire()
            raise ChildStartError("the worker is stopping")
        self._local.child = child
        return child

    def _admit(self, child: ChildProcess | None) -> bool:
        """Keep ``child`` (if any) for :meth:`close`, unless the worker is stopping."""
        with self._lock:
            if self._closed:
                return False
            if child is not None:
                self._children.add(child)
            return True

    def _forget(self, child: ChildProcess) -> None:
        with self._lock:
            self._children.discard(child)
        self._local.child = None

    def _after(self, child: ChildProcess) -> None:
        child.jobs += 1
        if not child.alive() or child.conn.closed:
            self._forget(child)
            child.kill()
        elif self.max_jobs_per_child is not None and child.jobs >= self.max_jobs_per_child:
            self._forget(child)
            child.retire()

    def _converse(self, slot: Slot, child: ChildProcess) -> Outcome:
        x = slot.execution
        sent = _flags(x)
        try:
            child.send({"op": "job", "job": wire.job_to_wire(x.job), "flags": _flags_message(x)})
            while True:
                if not child.conn.poll(POLL):
                    if _flags(x) != sent:
                        sent = _flags(x)
                        child.send(_flags_message(x))
                    continue
                message = wire.receive(child.conn)
                op = message["op"]
                if op == "done":
                    return _finished(x, message)
                if op == "progress":
                    _progressed(x, message)
                elif op == "checkpoint":
                    child.send(_checkpoint(x, message))
                    sent = _flags(x)
                else:
                    forward_log(message)
        except (EOFError, OSError, ValueError) as exc:
            return self._ended(slot, child, exc)

    def _ended(self, slot: Slot, child: ChildProcess, exc: BaseException) -> Outcome:
        """The pipe broke: we killed the child (a forced stop), or it died on its own."""
        x = slot.execution
        protocol = isinstance(exc, ValueError)
        if protocol:
            child.stop_now()
        how = child.ended()
        child.kill()
        with x.gate:
            stop = slot.stop_with
        if stop is not None:
            return normalise(Ran(raised=stop()), x)
        if protocol:
            error = JobError("ProtocolError", "the job's process sent a malformed message")
            return Outcome(OutcomeKind.FAILED, error=error, reason="its process misbehaved")
        if not x.lost:  # not a run the worker released at shutdown
            log.warning("job %s: its process %d %s", x.job.id, child.proc.pid, how)
        error = JobError("ProcessDied", f"the job's process {how}")
        return Outcome(OutcomeKind.FAILED, error=error, reason=f"its process {how}")


def _number(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _progressed(x: Execution, message: wire.Message) -> None:
    """Take a child's progress (written out by the worker's monitor, as a thread's is)."""
    current, total = _number(message.get("current")), _number(message.get("total"))
    if current is not None and current != x.current:
        x.current, x.dirty = current, True
    if total is not None and total != x.total:
        x.total, x.dirty = total, True


def _checkpoint(x: Execution, message: wire.Message) -> wire.Message:
    """Save a child's checkpoint as a thread's would be saved; the reply carries the flags."""
    _progressed(x, message)  # save_checkpoint writes the progress with it
    try:
        x.save_checkpoint(message.get("data"))  # type: ignore[arg-type]  # checked in there
    except LeaseLostInterrupt:
        return {"op": "save_failed", "kind": "lost"}
    except ConveyorError as exc:
        return {"op": "save_failed", "kind": "error", "message": str(exc)}
    return {"op": "saved", "pause": x.db_pause or x.shutdown, "cancel": x.db_cancel}


def _finished(x: Execution, message: wire.Message) -> Outcome:
    """The child's ``done`` message, as the outcome a thread's run would have come to."""
    _progressed(x, message)
    kind = message.get("outcome")
    if kind == "result":
        return normalise(Ran(value=message.get("value")), x)
    if kind == "interrupt":
        interrupt = _INTERRUPTS.get(str(message.get("interrupt")))
        if interrupt is not None:
            return normalise(Ran(raised=interrupt()), x)
    error = wire.error_from_wire(message.get("error"))
    if kind == "bad_result":
        return Outcome(OutcomeKind.FAILED, error=JobError(error.type, error.message),
                       reason="result is not JSON")
    return Outcome(OutcomeKind.FAILED, error=error, reason=f"raised {error}")
