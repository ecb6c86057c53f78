"""An idle SQLite waiter wakes when ANOTHER connection or process commits, long before its timeout.

Every waiter here waits 30 s; it must return within 10 s of the commit and not before it.
Both ways of looking are tested: the inotify watch on the WAL (Linux) and the
``PRAGMA data_version`` polling used where no watch can be set up.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.stores.base import NewJob
from conveyor.stores.sqlite import SQLiteStore
from conveyor.stores.sqlite import wake as wake_module

LONG_WAIT = 30.0
ROOT = Path(__file__).resolve().parents[2]
INSERT_ONE = """
import sys, time
from conveyor.stores.base import NewJob
from conveyor.stores.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
print(time.time(), flush=True)
store.insert_jobs([NewJob(id="from-another-process", job_type="t", params={})])
store.close()
"""


class Waiter:
    """``store.wait_for_work(30)`` in a thread; records when it returned (``time.time()``)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.returned_at: float | None = None
        self.done = threading.Event()
        store.wait_for_work(0.01)  # starts the watch and settles what it has seen so far
        self._thread = threading.Thread(target=self._run, args=(store,), daemon=True)
        self._thread.start()

    def _run(self, store: SQLiteStore) -> None:
        store.wait_for_work(LONG_WAIT)
        self.returned_at = time.time()
        self.done.set()

    def join(self) -> None:
        self._thread.join(LONG_WAIT + 5)


@pytest.fixture
def url(db_url: str) -> str:
    store = SQLiteStore(db_url)
    store.migrate()
    store.close()
    return db_url


@pytest.fixture
def waiting_store(url: str) -> Iterator[SQLiteStore]:
    store = SQLiteStore(url)
    yield store
    store.close()


@pytest.fixture
def polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store fall back to ``PRAGMA data_version`` polling (no inotify watch)."""
    monkeypatch.setattr(wake_module, "_inotify_on", lambda path: None)


def _assert_woken_by(waiter: Waiter, committed_at: float) -> None:
    assert waiter.done.wait(10.0), "the waiter did not wake within 10 s of another's commit"
    waiter.join()
    assert waiter.returned_at is not None
    assert waiter.returned_at >= committed_at, "the waiter returned before the commit"


def _still_waits_then_woken(waiter: Waiter, other: SQLiteStore, job_id: str, settle: float,
                            nothing: str) -> None:
    """``settle`` seconds on, the waiter still waits (``nothing``: what woke it otherwise);
    then a commit by ``other`` wakes it."""
    time.sleep(settle)
    assert not waiter.done.is_set(), nothing
    committed_at = time.time()
    other.insert_jobs([NewJob(id=job_id, job_type="t", params={})])
    _assert_woken_by(waiter, committed_at)


@pytest.mark.parametrize("option", ["", "?synchronous=full"])
def test_a_commit_in_another_process_wakes_the_waiter(waiting_store: SQLiteStore, url: str,
                                                      option: str) -> None:
    """With FULL the writer fsyncs between writing the WAL and publishing its commit."""
    waiter = Waiter(waiting_store)
    time.sleep(0.5)
    assert not waiter.done.is_set(), "wait_for_work returned with nothing committed"
    out = subprocess.run([sys.executable, "-c", INSERT_ONE, url + option], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    _assert_woken_by(waiter, float(out.split()[0]))
    assert waiting_store.get_job("from-another-process").job_type == "t"


@pytest.mark.usefixtures("polling")
def test_without_a_file_watch_data_version_polling_wakes_the_waiter(
        waiting_store: SQLiteStore, url: str) -> None:
    waiter = Waiter(waiting_store)
    assert waiting_store._watch is not None and waiting_store._watch.mode == "data_version"
    other = SQLiteStore(url)  # its own connection: for data_version, "another connection"
    try:
        time.sleep(0.5)
        assert not waiter.done.is_set(), "wait_for_work returned with nothing committed"
        committed_at = time.time()
        other.insert_jobs([NewJob(id="by-another-connection", job_type="t", params={})])
        _assert_woken_by(waiter, committed_at)
    finally:
        other.close()


@pytest.mark.parametrize("mode", ["inotify", "data_version"])
def test_empty_claims_elsewhere_wake_nobody(mode: str, url: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle workers claim in a loop and find nothing: that must not wake the other idle ones."""
    if mode == "data_version":
        monkeypatch.setattr(wake_module, "_inotify_on", lambda path: None)
    waiting = SQLiteStore(url)
    other = SQLiteStore(url)
    try:
        waiter = Waiter(waiting)
        assert waiting._watch is not None and waiting._watch.mode == mode
        stop = time.monotonic() + 1.0
        while time.monotonic() < stop:
            assert other.claim("idle", queues=[], job_types=["t"], limit=4,
                               lease_seconds=30) == []
        _still_waits_then_woken(waiter, other, "real-work", 0.2, "an empty claim woke the waiter")
    finally:
        other.close()
        waiting.close()


@pytest.mark.parametrize("mode", ["inotify", "data_version"])
def test_the_watch_rests_while_nobody_waits_and_catches_up_for_the_next_waiter(
        mode: str, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy worker has nobody waiting: its own commits must cost its watch no look. A
    commit by another process made while the watch rested must still wake the next waiter
    at once (as one made while that worker claimed), and later commits wake later waiters."""
    if mode == "data_version":
        monkeypatch.setattr(wake_module, "_inotify_on", lambda path: None)
    busy = SQLiteStore(url)
    other = SQLiteStore(url)
    try:
        busy.wait_for_work(0.01)  # starts the watch; nobody waits after it
        watch = busy._watch
        assert watch is not None and watch.mode == mode
        deadline = time.monotonic() + 10
        while not watch.resting:
            assert time.monotonic() < deadline, "the watch never rested with nobody waiting"
            time.sleep(0.01)
        looks = 0
        version = watch._version

        def counted() -> int | None:
            nonlocal looks
            looks += 1
            return version()

        watch._version = counted
        for n in range(20):  # a busy worker's own commits
            busy.insert_jobs([NewJob(id=f"own-{n}", job_type="t", params={})])
        time.sleep(0.3)
        assert looks == 0, "the resting watch looked after the store's own commits"

        other.insert_jobs([NewJob(id="while-resting", job_type="t", params={})])
        started = time.monotonic()
        busy.wait_for_work(LONG_WAIT)
        assert time.monotonic() - started < 10, "a commit made while resting was missed"
        assert looks > 0

        waiter = Waiter(busy)  # a later waiter: the watch looks again after each rest
        _still_waits_then_woken(waiter, other, "later", 0.5,
                                "wait_for_work returned with nothing committed")
    finally:
        other.close()
        busy.close()
