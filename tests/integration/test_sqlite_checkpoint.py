"""The SQLite store's commits leave WAL checkpoints to a thread of their own (checkpoint.py).

Whether a checkpoint ran is read from the ``-shm`` file, whose layout SQLite documents
(https://www.sqlite.org/walformat.html): the WAL's last frame (``mxFrame``, offset 16) and how
many frames were copied back into the database (``nBackfill``, offset 96), native byte order.
"""

from __future__ import annotations

import gc
import os
import struct
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.lifecycle import JobState
from conveyor.stores.base import NewJob
from conveyor.stores.sqlite import SQLiteStore
from conveyor.stores.sqlite import checkpoint as checkpoint_module
from conveyor.stores.sqlite.checkpoint import BACKSTOP_PAGES, Checkpointer


@pytest.fixture
def store(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteStore]:
    monkeypatch.setattr(checkpoint_module, "DELAY_SECONDS", 0.01)  # passes soon after commits
    opened = SQLiteStore(db_url)
    opened.migrate()
    yield opened
    opened.close()


def _wal(store: SQLiteStore) -> tuple[int, int]:
    """(frames in the WAL, frames of it copied into the database file)."""
    head = Path(store.path + "-shm").read_bytes()[:100]
    return struct.unpack_from("=I", head, 16)[0], struct.unpack_from("=I", head, 96)[0]


def _enqueue(store: SQLiteStore, count: int) -> None:
    for _ in range(count):
        store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="t", params={})])


def _checkpointer(store: SQLiteStore) -> Checkpointer:
    assert store._checkpoints is not None
    return store._checkpoints


def _wait_backfilled(store: SQLiteStore) -> None:
    """Until a pass has copied every frame committed so far (each pass is waited for)."""
    ckpt = _checkpointer(store)
    while True:
        passes = ckpt.passes  # read first: a pass ending after this is waited for below
        frames, copied = _wal(store)
        if frames and copied == frames:
            return
        assert ckpt.wait_passes(passes + 1, timeout=30), f"no checkpoint: {_wal(store)}"


def test_commits_do_not_checkpoint_past_sqlites_default_only_the_backstop(
        store: SQLiteStore) -> None:
    assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
    _checkpointer(store).close()  # no thread: what the committing connection does alone
    frames, copied = _wal(store)
    _enqueue(store, 250)  # ~1,500 pages (6 each): SQLite's default would checkpoint at 1,000
    after, copied_after = _wal(store)
    assert after - frames > 1000
    assert copied_after == copied


def test_the_thread_copies_the_wal_back_and_the_next_commit_restarts_it(
        store: SQLiteStore) -> None:
    _enqueue(store, 30)
    _wait_backfilled(store)
    before = Path(store.path + "-wal").stat().st_size
    frames, _ = _wal(store)
    _enqueue(store, 1)
    assert _wal(store)[0] < frames  # written again from the start, not appended
    assert Path(store.path + "-wal").stat().st_size == before
    assert _checkpointer(store).last is not None


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_a_short_pass_holding_the_write_lock_copies_what_came_during_the_pass(
        db_url: str, monkeypatch: pytest.MonkeyPatch, synchronous: str) -> None:
    """So that the next commit starts the WAL over: after every pass under FULL (a growing
    WAL slows every FULL commit), under NORMAL once the WAL is past the backstop."""
    monkeypatch.setattr(checkpoint_module, "DELAY_SECONDS", 0.01)
    monkeypatch.setattr(checkpoint_module, "BACKSTOP_PAGES", 1)  # read by the thread only
    store = SQLiteStore(f"{db_url}?synchronous={synchronous}")
    try:
        store.migrate()  # one commit: one pass, then one catching up, then the thread idles
        ckpt = _checkpointer(store)
        assert ckpt.wait_passes(2, timeout=30)
        passes = ckpt.passes
        with store._lock:  # what a commit holds: the catching-up pass waits for it
            _enqueue(store, 3)
            assert ckpt.wait_passes(passes + 1, timeout=30)
            assert not ckpt.wait_passes(passes + 2, timeout=0.3)
        assert ckpt.wait_passes(passes + 2, timeout=30)
        frames, copied = _wal(store)
        assert frames == copied
        _enqueue(store, 1)
        assert _wal(store)[0] < frames  # started over
    finally:
        store.close()


def test_a_pass_moves_neither_signal_that_wakes_idle_workers(
        store: SQLiteStore, db_url: str) -> None:
    """A worker's commit watch (wake.py) wakes on a write to the -wal file that moves its
    connection's data_version: a checkpoint by another connection must do neither."""
    watcher = SQLiteStore(db_url)
    try:
        _enqueue(store, 5)
        version, wal = watcher._data_version(), Path(store.path + "-wal").stat().st_mtime_ns
        _wait_backfilled(store)
        assert watcher._data_version() == version
        assert Path(store.path + "-wal").stat().st_mtime_ns == wal
    finally:
        watcher.close()


def test_close_ends_the_thread_and_its_connection(store: SQLiteStore) -> None:
    _enqueue(store, 3)
    thread = _checkpointer(store)._thread
    assert thread is not None and thread.is_alive()
    store.close()
    assert not thread.is_alive()
    # the store's connection was the file's last one: SQLite removed the WAL as it closed
    assert not Path(store.path + "-wal").exists()
    assert "conveyor-sqlite-checkpoint" not in [t.name for t in threading.enumerate()]


def test_a_store_dropped_without_close_stops_its_thread(db_url: str) -> None:
    store = SQLiteStore(db_url)
    store.migrate()
    thread = _checkpointer(store)._thread
    assert thread is not None and thread.is_alive()
    del store
    gc.collect()
    assert not thread.is_alive()


def test_a_forked_child_uses_the_store_with_a_thread_of_its_own(store: SQLiteStore) -> None:
    _enqueue(store, 2)
    _wait_backfilled(store)  # the parent's thread idle (not inside SQLite) at the fork
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            _enqueue(store, 3)
            ckpt = _checkpointer(store)
            thread = ckpt._thread
            if ckpt.wait_passes(1, timeout=30) and thread is not None and thread.is_alive():
                code = 0
            store.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _enqueue(store, 1)
    assert store.count_by_state()[JobState.PENDING] == 6
    _wait_backfilled(store)  # the parent's own thread still checkpoints
