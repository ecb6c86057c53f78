"""Job logs: what a job logs while it runs, kept with the job, per attempt, bounded.

The worker installs one :class:`JobLogHandler` on the root logger. The executor sets
:data:`CURRENT` to the running job's :class:`JobLog` in the thread (and so the async task) that
runs the job's code, so a record is routed to the job whose code emitted it; records from other
threads, or from no job, are ignored by a single context-variable read. ``ctx.log()`` writes to
the same buffer directly.

Lines are kept in memory and written in batches: by the worker's monitor about once a second for
every running job at once (one transaction), and the rest when the run ends, just before its
outcome is recorded, so a reader that sees the job finished then sees all its lines. Never one
write per line. Each attempt keeps its last :attr:`JobLogLimits.lines` lines and at most
:attr:`JobLogLimits.kib` KiB: older lines are dropped from memory and deleted from the store in
the same batch. Writing is best effort: a batch the store refuses is dropped with a warning,
and the job runs on.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from conveyor.errors import ConfigurationError, ConveyorError
from conveyor.stores.base import NewLogLine

if TYPE_CHECKING:
    from conveyor.stores.base import Store

__all__ = ["JobLog", "JobLogHandler", "JobLogLimits"]

log = logging.getLogger("conveyor.worker")
#: The running job's log, in the context that runs its code (None elsewhere).
CURRENT: contextvars.ContextVar[JobLog | None] = contextvars.ContextVar("conveyor_job_log",
                                                                        default=None)
#: The longest single line kept (longer ones are cut, saying so).
MAX_LINE_BYTES = 16 * 1024


@dataclass(frozen=True)
class JobLogLimits:
    """How much of each attempt's log is kept: its last ``lines`` lines, at most ``kib`` KiB.

    ``lines=0`` turns job logs off. ``level``: the least severe record captured from
    ``logging`` (``ctx.log`` lines are always kept).
    """

    lines: int = 1000
    kib: int = 256
    level: int = logging.INFO

    def __post_init__(self) -> None:
        if self.lines < 0 or self.kib < 1:
            raise ConfigurationError("job log limits: lines must be >= 0 and kib >= 1, not "
                                     f"{self.lines} lines / {self.kib} KiB")

    @property
    def enabled(self) -> bool:
        return self.lines > 0


def _clean(message: str, limit: int) -> tuple[str, int]:
    """Text every store can hold (no NUL, no lone surrogates), cut to ``limit`` bytes."""
    data = message.replace("\x00", "\ufffd").encode("utf-8", "replace")
    if len(data) > limit:
        data = data[:limit - 40] + f" [... {len(data) - limit + 40} bytes cut]".encode()
    text = data.decode("utf-8", "ignore")
    return text, len(text.encode("utf-8"))


class JobLog:
    """One run's lines, numbered per attempt, bounded, waiting for the worker to write them.

    A resumed run continues the attempt's numbering: the first write reads what the attempt
    stored before (a small indexed read, only for a run that logs at all).
    """

    def __init__(self, job_id: str, attempt: int, limits: JobLogLimits) -> None:
        self.job_id, self.attempt, self.limits = job_id, attempt, limits
        self._max_bytes = limits.kib * 1024
        self._lock = threading.Lock()
        #: held across taking and writing, so one run's batches land in order
        self.writing = threading.Lock()
        self._stored: deque[tuple[int, int]] = deque()  # (seq, bytes) of lines written
        self._pending: deque[tuple[int, datetime, str, str, int]] = deque()
        self._added = 0  # lines numbered so far in this run
        self._base: int | None = None  # the attempt's last seq before this run
        self._lines = self._bytes = 0
        self._trim_below = self._trimmed = 0

    def add(self, level: str, message: str, at: datetime | None = None) -> None:
        text, size = _clean(message, min(MAX_LINE_BYTES, self._max_bytes))
        with self._lock:
            self._added += 1
            self._pending.append((self._added, at or datetime.now(UTC), level, text, size))
            self._lines += 1
            self._bytes += size
            self._shrink()

    def _shrink(self) -> None:
        while self._lines > self.limits.lines or self._bytes > self._max_bytes:
            if self._stored:
                seq, size = self._stored.popleft()
                self._trim_below = seq + 1
            else:
                size = self._pending.popleft()[4]
            self._lines -= 1
            self._bytes -= size

    @property
    def has_pending(self) -> bool:
        return bool(self._pending) or self._trim_below > self._trimmed

    def take(self, store: Store) -> tuple[list[NewLogLine], tuple[str, int, int] | None]:
        """The lines to write now and the trim that goes with them (call holding ``writing``)."""
        if self._base is None:
            prior = store.job_log_sizes(self.job_id, self.attempt)
            with self._lock:
                self._base = prior[-1][0] if prior else 0
                self._stored.extendleft(reversed(prior))
                self._lines += len(prior)
                self._bytes += sum(size for _, size in prior)
                self._shrink()
        with self._lock:
            base = self._base
            lines = [NewLogLine(self.job_id, self.attempt, base + n, at, level, text)
                     for n, at, level, text, _ in self._pending]
            self._stored.extend((base + n, size) for n, _, _, _, size in self._pending)
            self._pending.clear()
            trim = None
            if self._trim_below > self._trimmed:
                trim = (self.job_id, self.attempt, self._trim_below)
                self._trimmed = self._trim_below
        return lines, trim


def write(store: Store, logs: Iterable[JobLog | None], *, wait: bool = False) -> int:
    """Write what ``logs`` gathered in one transaction; returns how many lines were written.

    ``wait``: wait for a write of the same run already under way (the run's last write);
    otherwise a run being written by another thread is left for the next round.
    """
    held: list[JobLog] = []
    try:
        for item in logs:
            if item is not None and item.has_pending and item.writing.acquire(blocking=wait):
                held.append(item)
        if not held:
            return 0
        lines: list[NewLogLine] = []
        trims: list[tuple[str, int, int]] = []
        for item in held:
            taken, trim = item.take(store)
            lines += taken
            trims += [trim] if trim else []
        store.write_job_logs(lines, trims)
        return len(lines)
    except ConveyorError as exc:
        log.warning("job logs: %d run(s)' lines not saved (%s); they are dropped",
                    len(held), exc)
        return 0
    finally:
        for item in held:
            item.writing.release()


class JobLogHandler(logging.Handler):
    """Routes each record to the job whose code emitted it; any other record costs one
    context-variable read."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(message)s"))

    def handle(self, record: logging.LogRecord) -> bool:
        target = CURRENT.get()
        if target is None or record.levelno < self.level:
            return False
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a bad format string must not fail the job
            self.handleError(record)
            return False
        target.add(record.levelname, text, datetime.fromtimestamp(record.created, UTC))
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() does it
        self.handle(record)


_installed: list[JobLogHandler] = []
_install_lock = threading.Lock()
_root_level: list[int] = []


def install(level: int) -> JobLogHandler:
    """Put a handler on the root logger for a worker (one per worker; undo with
    :func:`uninstall`). The root logger's level is lowered to ``level`` while any is installed,
    so that a job's ``logger.info`` is captured."""
    handler = JobLogHandler(level)
    root = logging.getLogger()
    with _install_lock:
        if not _installed:
            _root_level[:] = [root.level]
        root.addHandler(handler)
        _installed.append(handler)
        if root.level > level:
            root.setLevel(min(h.level for h in _installed))
    return handler


def uninstall(handler: JobLogHandler) -> None:
    root = logging.getLogger()
    with _install_lock:
        root.removeHandler(handler)
        if handler in _installed:
            _installed.remove(handler)
        if not _installed and _root_level:
            root.setLevel(_root_level.pop())

