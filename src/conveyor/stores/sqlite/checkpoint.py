"""Checkpointing the SQLite WAL on a thread of its own, so that commits do not.

A commit in WAL mode appends pages to the ``-wal`` file; a checkpoint copies them back into the
database file and syncs both. SQLite runs one inside whichever commit takes the WAL past
``wal_autocheckpoint`` pages (1,000 by default), and that commit waits for the copy and two
``fsync`` calls. A conveyor commit writes about a dozen pages (the job row, its indexes, the
history row), so every 80th commit or so paid for one: measured on the development machine,
about 40 % of an enqueue's time, and the same share of a worker's claims and completions.

So each store (per process) hands the work to a :class:`Checkpointer`: a daemon thread with
its own connection that runs ``PRAGMA wal_checkpoint(PASSIVE)`` soon after commits. PASSIVE
never waits for a lock and never blocks a writer or a reader: what a reader's snapshot still
needs, or what another process's checkpoint is copying, is left for the next pass. A pass
neither writes the WAL nor commits, so it wakes no SQLite worker (see ``wake.py``).

The store's connection keeps an automatic checkpoint as a backstop, at ``BACKSTOP_PAGES``:
should this thread fall behind or be missing (it could not open its connection), the WAL
still cannot grow much past 40 MiB before a commit checkpoints it as before. While
commits come back to back, the WAL is only rewritten from its start once a checkpoint has
caught up before the next commit begins, which a stream of commits rarely leaves time for:
so past the backstop (and under FULL always) a short pass under the store's write lock
catches up (``_catch_up``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

from conveyor.stores.sqlite.config import is_busy

#: The store connection's ``wal_autocheckpoint``: 10,000 pages of 4 KiB, a WAL of about
#: 40 MiB at most. Ten times SQLite's default, so that a commit checkpoints only when this
#: thread has fallen far behind or in a stream of back-to-back commits (see above), and then
#: finds little left to copy; small enough for any disk a job queue lives on.
BACKSTOP_PAGES = 10_000
#: A pass starts once this many commits were made since the last one (about SQLite's own
#: 1,000 pages at a dozen pages a commit) ...
BATCH_COMMITS = 100
#: ... or this long after the first of them. Under ``synchronous=NORMAL`` a checkpoint is what
#: syncs the WAL, so this also bounds how much a power failure can take back when commits are
#: few; a lone commit costs one pass (two fsyncs), off the committing thread.
DELAY_SECONDS = 0.5
#: A pass that could not copy everything (a reader's snapshot, another process's checkpoint,
#: a lock) is tried again after ``DELAY_SECONDS``, this many times before waiting for commits.
RETRIES = 10
_JOIN_SECONDS = 30.0
log = logging.getLogger("conveyor.store")
#: Connections inherited through fork() by a child: never used or closed there (the parent's
#: thread may have held SQLite's mutex at the fork), and never freed, which would close them.
_INHERITED: list[sqlite3.Connection] = []
#: This process's id, kept current by a fork hook: ``os.getpid()`` is a system call, and
#: :meth:`Checkpointer.committed` asks for it after every commit of the store.
_pid = [os.getpid()]


def _forked_child() -> None:
    _pid[0] = os.getpid()


os.register_at_fork(after_in_child=_forked_child)


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on the file at ``path`` after commits.

    The store calls :meth:`committed` after each of its commits; the thread starts on the
    first one (a store that only reads costs no thread) and sleeps, using no CPU, while no
    commit is made. :meth:`close` stops it, and it closes its connection before it ends.
    """

    def __init__(self, path: str, busy_timeout_ms: int, writes: threading.RLock, *,
                 full: bool) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._writes, self._full = writes, full  # the store's write lock and FULL: _catch_up
        self._fresh()

    def _fresh(self) -> None:
        """The state of a checkpointer with no thread yet, owned by this process."""
        self._pid = os.getpid()
        #: the condition's own lock, taken directly by :meth:`committed`: ``with`` on the
        #: condition goes through its Python-level ``__enter__`` and ``__exit__``
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._commits = 0  # since the last pass started
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.passes = 0  # passes run, and the last one's (busy, WAL frames, frames copied)
        self.last: tuple[int, int, int] | None = None

    def committed(self) -> None:
        """Note a commit: wakes the thread at the first commit after a pass, and at the
        ``BATCH_COMMITS``-th. Cheap: a lock nobody else holds for long, and a counter."""
        if self._pid != _pid[0]:
            self._forked()
        with self._mutex:
            if self._stopped:
                return
            self._commits += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="conveyor-sqlite-checkpoint")
                self._thread.start()
            elif self._commits in (1, BATCH_COMMITS):
                self._cond.notify_all()  # all: a caller of wait_passes may be waiting too

    def close(self) -> None:
        """Stop the thread and wait for it (it closes its connection as it ends)."""
        if self._pid != os.getpid():
            self._forked()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_SECONDS)

    def wait_passes(self, count: int, timeout: float) -> bool:
        """Whether ``count`` passes have run, waiting up to ``timeout`` seconds (for tests
        and diagnostics: nothing in conveyor waits for a checkpoint)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.passes >= count, timeout)

    def _forked(self) -> None:
        """In a child forked from the process that started the thread: that thread does not
        exist here, and its lock and connection may have been in use at the fork. Keep the
        connection untouched and start over; the child's next commit starts its own thread."""
        if self._conn is not None:
            _INHERITED.append(self._conn)
        stopped = self._stopped
        self._fresh()
        self._stopped = stopped

    def _run(self) -> None:
        conn = self._open()
        if conn is None:
            return
        try:
            failures = 0
            while self._next_pass(retry=failures > 0):
                complete = self._checkpoint(conn)
                if complete and self.last is not None and (
                        self._full or self.last[1] >= BACKSTOP_PAGES):
                    complete = self._catch_up(conn)
                failures = 0 if complete or failures >= RETRIES else failures + 1
        finally:
            with self._cond:
                self._conn = None
            conn.close()

    def _open(self) -> sqlite3.Connection | None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None,
                                   timeout=self._busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            log.warning("SQLite store %s: no background checkpoints (%s); commits will "
                        "checkpoint the WAL themselves", self._path, exc)
            return None
        with self._cond:
            self._conn = conn
        return conn

    def _next_pass(self, *, retry: bool) -> bool:
        """Wait until a pass is due: ``BATCH_COMMITS`` commits, or ``DELAY_SECONDS`` after
        the first commit since the last pass (or after a pass that could not finish).
        False once closed."""
        with self._cond:
            if not retry:
                self._cond.wait_for(lambda: self._stopped or self._commits > 0)
            self._cond.wait_for(lambda: self._stopped or self._commits >= BATCH_COMMITS,
                                DELAY_SECONDS)
            self._commits = 0
            return not self._stopped

    def _catch_up(self, conn: sqlite3.Connection) -> bool:
        """Copy what was committed during the pass, holding the store's write lock, so that
        its next commit finds the WAL copied and starts it over instead of growing it.

        After every pass under ``synchronous=FULL``, where every commit already synced its
        frames: this short pass then syncs only the few pages it copies into the database
        file, and a WAL that keeps growing costs FULL dearly, every commit's sync extending
        the file. Under NORMAL only once the WAL is past the backstop: it syncs the WAL too,
        as the backstop's commit would, which (while passes follow each other closely under
        a stream of commits) would otherwise mostly find this thread busy and let the WAL grow.
        """
        with self._writes:
            if self._stopped:
                return True
            return self._checkpoint(conn)

    def _checkpoint(self, conn: sqlite3.Connection) -> bool:
        """One PASSIVE pass; whether it copied every frame of the WAL."""
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            if not (isinstance(exc, sqlite3.OperationalError) and is_busy(exc)):
                log.warning("SQLite store %s: background checkpoint failed: %s", self._path,
                            exc)
            return False
        with self._cond:
            self.passes += 1
            self.last = (busy, frames, copied)
            self._cond.notify_all()
        return not busy and copied >= frames
