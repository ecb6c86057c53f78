"""Wake-ups for idle workers: LISTEN on the store's channel in one background thread.

Why a thread of its own: a LISTEN needs a connection that stays open and is read from all the
time, while ``wait_for_work`` may be called from several threads at once. So one daemon thread
owns that connection and turns every notification into a bump of a counter that waiters watch
through a condition variable (the same shape as the SQLite store's in-process wake-up).

The connection is re-opened, with backoff, whenever it drops (server restart, failover,
``pg_terminate_backend``). Notifications sent while it was down are lost, so every (re)start
of the LISTEN also wakes the waiters: they look for work once, and nothing is missed for longer
than that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

from conveyor.stores.postgres.config import describe

log = logging.getLogger("conveyor.stores.postgres")

#: How often the thread checks whether it should stop while no notification arrives.
POLL_SECONDS = 0.25
_FIRST_RETRY = 0.05
_MAX_RETRY = 5.0


class WorkListener:
    """Turns NOTIFYs on ``channel`` into wake-ups of :meth:`wait` callers in this process."""

    def __init__(self, conninfo: str, channel: str, safe_url: str,
                 secrets: frozenset[str] = frozenset()) -> None:
        self._conninfo = conninfo
        self._secrets = secrets
        self._channel = channel
        self._safe_url = safe_url
        self._cond = threading.Condition()
        self._seq = 0
        #: The count the last wait returned at: a wake-up after it (say, while the caller was
        #: claiming and found nothing) makes the next wait return at once instead of being lost.
        self._waited = 0
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up right now (for diagnostics and tests)."""
        return self._listening.is_set()

    def wake(self) -> None:
        """Wake every waiter in this process.

        Nothing to do before the first :meth:`wait`: that one ignores earlier wake-ups (it
        returns once the LISTEN is up, and looks for work then). A process that only enqueues
        never waits, and so takes no lock per job here. Read without the lock: a wait that
        starts meanwhile takes its count before it sets the thread, as if this call had come
        first."""
        if self._thread is None:
            return
        with self._cond:
            self._seq += 1
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds or until the next wake-up.

        The first call starts the listening thread and returns once it listens (or at the
        timeout): work made before the LISTEN began would otherwise go unnoticed until then. A
        wake-up since the previous wait returned returns at once: a NOTIFY that arrives between
        a worker's empty claim and its next wait must not wait out the poll interval.
        """
        with self._cond:
            if self._closed:
                return
            seen = self._waited
            if self._thread is None:  # the first wait waits for the LISTEN (its start wakes)
                seen = self._seq
                self._thread = threading.Thread(
                    target=self._run, name=f"conveyor-listen-{self._channel}", daemon=True)
                self._thread.start()
            self._cond.wait_for(lambda: self._seq != seen or self._closed,
                                timeout=max(0.0, timeout))
            self._waited = self._seq

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join(timeout=POLL_SECONDS * 8)

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        delay = _FIRST_RETRY
        while not self._stop.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                if self._listening.is_set():
                    delay = _FIRST_RETRY  # a link that worked just dropped: retry at once
                log.warning("conveyor: LISTEN connection to %s failed (%s); retrying in %.2fs",
                            self._safe_url, describe(exc, self._secrets), delay)
            self._listening.clear()
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, _MAX_RETRY)

    def _listen(self) -> None:
        """Connect, LISTEN, and relay notifications until told to stop or the link drops."""
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._listening.set()
            self._connected()  # anything sent while we were not listening: look for it now
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=POLL_SECONDS):
                    self._notified(notify.payload)

    def _connected(self) -> None:
        self.wake()

    def _notified(self, payload: str) -> None:
        self.wake()


class StopListener(WorkListener):
    """LISTENs on the channel where a job that stops (finishes or pauses) is announced, with
    its id as the payload, and calls the watchers of that job (for :meth:`Conveyor.wait`).

    Started by the first watch, so a worker that never waits for a job opens no connection
    for it. A (re)connection calls every watcher: a stop sent while the link was down is lost,
    and each watcher then reads its job again.
    """

    def __init__(self, conninfo: str, channel: str, safe_url: str,
                 secrets: frozenset[str] = frozenset()) -> None:
        super().__init__(conninfo, channel, safe_url, secrets)
        self._watchers: dict[str, list[Callable[[], None]]] = {}

    def watch(self, job_id: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` when ``job_id`` may have stopped; returns the function to stop."""
        with self._cond:
            if self._closed:
                return lambda: None
            self._watchers.setdefault(job_id, []).append(wake)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"conveyor-listen-{self._channel}", daemon=True)
                self._thread.start()

        def unwatch() -> None:
            with self._cond:
                waiting = self._watchers.get(job_id, [])
                if wake in waiting:
                    waiting.remove(wake)
                if not waiting:
                    self._watchers.pop(job_id, None)

        return unwatch

    def _calls(self, job_id: str | None) -> list[Callable[[], None]]:
        with self._cond:
            if job_id is None:
                return [w for ws in self._watchers.values() for w in ws]
            return list(self._watchers.get(job_id, []))

    def _connected(self) -> None:
        for wake in self._calls(None):
            wake()

    def _notified(self, payload: str) -> None:
        for wake in self._calls(payload):
            wake()
