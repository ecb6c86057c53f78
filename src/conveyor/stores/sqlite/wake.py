"""Waking an idle SQLite worker when another process commits.

SQLite has no LISTEN/NOTIFY: a process learns of another's commit only by looking. Looking
costs either a wake-up every few milliseconds (CPU while idle) or a kernel file watch (none).

- On Linux, a commit in WAL mode appends frames to the ``-wal`` file; an inotify watch on it
  makes the kernel tell us, so an idle worker costs no CPU at all and wakes in well under a
  millisecond. Writes that commit nothing (an empty claim) touch no WAL frame and wake nobody.
- Elsewhere, or if the watch cannot be set up, ``PRAGMA data_version`` is read every
  ``POLL_SECONDS``.

``PRAGMA data_version`` on the store's connection changes exactly when some other connection
has committed, so it also tells the inotify path which writes were not the store's own.

Either way a wake-up means "something was committed", not "there is work for you": the
waiter then tries one claim, which may find nothing.

The watch looks only while someone waits (an idle worker, a caller following a job). A busy
worker has nobody waiting, and its own commits write the WAL many times a second: looking
after each cost its process about 1 µs of CPU per job (a data version read every few
milliseconds, and a thread woken by every write). So while nobody waits the thread rests;
the next waiter wakes it, and its first look compares the data version with the one it saw
before resting, so a commit made meanwhile (say, while that worker claimed) still wakes the
waiter at once.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

POLL_SECONDS = 0.005
_SETTLE_LOOKS = 20
_IN_MODIFY = 0x00000002
_IN_IGNORED = 0x00008000  # the watched file went away (deleted, or its file system unmounted)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; a name of `len` bytes follows


class CommitWatch:
    """Calls ``wake`` soon after another connection commits to the file at ``path``.

    ``version`` reads ``PRAGMA data_version`` on the store's own connection, which changes only
    when some OTHER connection has committed: the store's own commits (which wake its waiters
    directly) then wake nobody twice. A daemon thread looks until :meth:`close`; ``mode`` says
    how it learns that the file was written: ``"inotify"`` or ``"data_version"`` (polling).

    ``needed`` says whether anyone waits now; while nobody does, the thread rests until
    :meth:`want` is called (after the waiter is counted, so that ``needed`` sees it).
    """

    def __init__(self, path: str, version: Callable[[], int | None],
                 wake: Callable[[], None], needed: Callable[[], bool] = lambda: True) -> None:
        self._version = version
        self._wake = wake
        self._needed = needed
        self._wanted = threading.Event()
        self._wanted.set()  # started by a waiter
        self._resting = False
        self._stop = threading.Event()
        self._inotify = _inotify_on(path + "-wal")
        self.mode = "inotify" if self._inotify is not None else "data_version"
        # read here, not in the thread: a commit after the watch exists must move it
        self._first_seen = version()
        self._thread = threading.Thread(target=self._run, name="conveyor-sqlite-watch",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wanted.set()

    @property
    def resting(self) -> bool:
        """Whether the thread rests now, and no waiter has asked it to look yet."""
        return self._resting and not self._wanted.is_set()

    def want(self) -> None:
        """Someone waits now: look again if resting."""
        if not self._wanted.is_set():  # the usual case is a look, not Event.set's lock
            self._wanted.set()

    def _rest(self) -> bool:
        """Rest while nobody waits; whether it rested (the caller then looks at once).

        ``needed`` is read again after clearing the flag: a waiter counted before the clear
        is seen then, and one counted after it sets the flag with :meth:`want`.
        """
        if self._needed():
            return False
        self._wanted.clear()
        if self._needed():
            return False
        self._resting = True
        self._wanted.wait()
        self._resting = False
        return True

    def _run(self) -> None:
        seen = self._first_seen
        if self._inotify is not None:
            fd = self._inotify
            try:
                self._follow_inotify(fd)
            finally:
                os.close(fd)
            self.mode = "data_version"
            seen = self._version()
        if not self._stop.is_set():
            self._poll_version(seen)

    def _follow_inotify(self, fd: int) -> None:
        """Until closed or the watch is gone: look at the data version after each WAL write."""
        seen = self._first_seen
        while not self._stop.is_set():
            if self._rest():
                # the writes made while resting, then a look as after any write
                while select.select([fd], [], [], 0)[0]:
                    if _watch_gone(os.read(fd, 64 * 1024)):
                        return
                if not self._stop.is_set():
                    seen = self._settle(seen)
                continue
            ready, _, _ = select.select([fd], [], [], 0.5)  # 0.5 s: only to notice close()
            if not ready:
                continue
            data = os.read(fd, 64 * 1024)
            seen = self._settle(seen)
            if _watch_gone(data):
                return

    def _settle(self, seen: int | None) -> int | None:
        """After a WAL write: wake once the data version moves, looking for up to ~0.1 s.

        A writer appends its frames, then (after an fsync with ``synchronous=FULL``) publishes
        the commit in shared memory, which no file watch sees: so an unchanged version right
        after the write is looked at again for a little while. Our own writes settle the same
        way without waking anyone.
        """
        for _ in range(_SETTLE_LOOKS):
            version = self._version()
            if version != seen:
                self._wake()
                return version
            time.sleep(POLL_SECONDS)
        return seen

    def _poll_version(self, seen: int | None) -> None:
        while not self._stop.is_set():
            if self._rest():
                continue  # then at once compared with the version seen before resting
            time.sleep(POLL_SECONDS)
            version = self._version()
            if version != seen:
                self._wake()
            seen = version


def _watch_gone(data: bytes) -> bool:
    """Whether these inotify events say the watched file went away (IN_IGNORED)."""
    offset = 0
    while offset + _EVENT.size <= len(data):
        _wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
        if mask & _IN_IGNORED:
            return True
        offset += _EVENT.size + size
    return False


def _inotify_on(path: str) -> int | None:
    """An inotify descriptor watching ``path`` for writes, or None where that is not possible."""
    if not sys.platform.startswith("linux") or not Path(path).exists():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # this process's own C library
        fd = int(libc.inotify_init1(os.O_CLOEXEC))
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY) < 0:
        os.close(fd)
        return None
    return fd
