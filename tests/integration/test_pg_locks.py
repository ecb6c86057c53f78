"""PostgreSQL row locks held by someone else: who may wait on them, and for how long.

A row lock is held by an open transaction: another worker's multi-statement change, an
operator's session, or a worker cut off from the network mid-transaction. These tests hold one
from a second connection, as such a transaction would, and check that claims, reaper moves and
heartbeats pass it instead of waiting; that a change that must wait is stamped with the moment
it took effect, not the moment its transaction began; and that every session carries the
bounds that make a forgotten transaction let go of its locks.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import pytest

from conveyor import transitions
from conveyor.changes import ChangeRefused
from conveyor.lifecycle import JobState
from conveyor.model import JobError
from conveyor.stores import open_store
from conveyor.stores.base import Store
from conveyor.stores.postgres.config import SESSION_BOUNDS, parse_url
from tests.conftest import pg_test_url
from tests.contract.helpers import insert, lease_of, new, running

pytestmark = pytest.mark.postgres
T = TypeVar("T")


@pytest.fixture
def url() -> str:
    return pg_test_url()


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    schema = f"locks_{uuid.uuid4().hex[:12]}"
    made = open_store(url, schema=schema)
    made.migrate()
    yield made
    made.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def locker(url: str, store: Store) -> Iterator[psycopg.Connection[Any]]:
    """A second session, in a transaction: it locks rows as another worker's would."""
    conn = psycopg.connect(url)
    conn.execute(f'SET search_path TO "{store.schema}"')  # type: ignore[attr-defined]
    yield conn
    conn.close()


def lock_row(conn: psycopg.Connection[Any], job_id: str) -> None:
    conn.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))


def promptly(call: Callable[[], T], timeout: float = 20.0) -> T:
    """``call()`` in a thread; fail if it has not returned within ``timeout`` (it is stuck)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still waiting after {timeout}s: it queued behind a lock"
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def test_a_claim_passes_a_pending_job_another_transaction_has_locked(
        store: Store, locker: psycopg.Connection[Any]) -> None:
    jobs = store.insert_jobs([new("c") for _ in range(3)])
    lock_row(locker, jobs[0].id)
    claimed = promptly(lambda: store.claim("w", queues=[], job_types=["c"], limit=3,
                                           lease_seconds=30))
    assert sorted(j.id for j in claimed) == sorted(j.id for j in jobs[1:])
    locker.rollback()
    again = store.claim("w", queues=[], job_types=["c"], limit=3, lease_seconds=30)
    assert [j.id for j in again] == [jobs[0].id]


def test_the_reaper_passes_a_locked_row_and_takes_it_once_free(
        store: Store, locker: psycopg.Connection[Any]) -> None:
    job = running(store, lease=0.2)
    time.sleep(0.5)  # the lease runs out by the database's clock
    lease = lease_of(job)
    fail = transitions.fail(lease, job.id, JobError("WorkerLost", "lost"), "worker lost",
                            "reaper", lease_expired=True)
    lock_row(locker, job.id)
    with pytest.raises(ChangeRefused):
        promptly(lambda: store.apply([fail]))
    assert store.get_job(job.id).state is JobState.RUNNING
    locker.rollback()
    assert store.apply([fail])[0].state is JobState.FAILED


def test_a_heartbeat_never_waits_on_a_locked_row(
        store: Store, locker: psycopg.Connection[Any]) -> None:
    free, held = running(store, lease=30), running(store, lease=30)
    before = store.get_job(held.id).lease_expires_at
    lock_row(locker, held.id)
    signals = promptly(lambda: store.heartbeat([lease_of(free), lease_of(held)], 60))
    free_token, held_token = lease_of(free).token, lease_of(held).token
    assert set(signals) == {free_token, held_token}, "a locked lease is still held, not lost"
    assert signals[free_token].renewed and not signals[held_token].renewed
    assert store.get_job(held.id).lease_expires_at == before
    locker.rollback()
    assert store.heartbeat([lease_of(held)], 60)[held_token].renewed
    after = store.get_job(held.id).lease_expires_at
    assert before is not None and after is not None and after > before


def test_a_change_that_waited_for_a_lock_is_stamped_when_it_took_effect(
        url: str, store: Store, locker: psycopg.Connection[Any]) -> None:
    job = insert(store, "h")
    lock_row(locker, job.id)
    issued: datetime = store.now()
    cancel = transitions.cancel_idle(job.id, JobState.PENDING, "op", "")
    waiter = threading.Thread(target=lambda: store.apply([cancel]), daemon=True)
    waiter.start()
    with psycopg.connect(url, autocommit=True) as watch:
        deadline = time.monotonic() + 20
        while not watch.execute("SELECT 1 FROM pg_locks WHERE NOT granted").fetchall():
            assert time.monotonic() < deadline, "the cancel never waited on the lock"
            time.sleep(0.05)
    time.sleep(1.0)  # the cancel's transaction has begun and waits
    released = locker.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    locker.commit()
    waiter.join(20)
    assert not waiter.is_alive()
    final = store.get_job(job.id)
    entry = store.history(job.id)[-1]
    assert entry.action == "cancel"
    assert entry.at >= released > issued, (entry.at, released, issued)
    assert final.finished_at == final.updated_at == entry.at


def test_a_multi_change_transaction_has_one_time(store: Store) -> None:
    job = running(store, lease=30, max_attempts=3)
    lease = lease_of(job)
    changes = [transitions.fail(lease, job.id, JobError("E", "boom"), "raised", "w"),
               transitions.retry(job.id, "w", "again")]
    store.apply(changes)
    fail, retry = store.history(job.id)[-2:]
    assert (fail.action, retry.action) == ("fail", "retry")
    assert fail.at == retry.at


def test_every_session_is_bounded(url: str, store: Store) -> None:
    settings = parse_url(url)
    params = psycopg.conninfo.conninfo_to_dict(settings.conninfo)
    assert int(str(params["tcp_user_timeout"])) > 0
    assert params["keepalives"] == "1"
    with psycopg.connect(settings.conninfo, autocommit=True) as conn:
        for name, ms in SESSION_BOUNDS.items():
            shown = conn.execute(
                "SELECT setting::int FROM pg_settings WHERE name = %s", (name,)).fetchone()
            assert shown == (ms,), name


def test_the_url_may_override_a_session_bound(url: str) -> None:
    joined = "&" if "?" in url else "?"
    custom = parse_url(f"{url}{joined}options=-c%20lock_timeout%3D1234")
    with psycopg.connect(custom.conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'lock_timeout'")
        assert row.fetchone() == ("1234",)
        path = conn.execute("SHOW search_path").fetchone()
        assert path == ("conveyor",)


def test_an_idle_transaction_is_ended_by_the_server(url: str) -> None:
    joined = "&" if "?" in url else "?"
    quick = parse_url(f"{url}{joined}options=-c%20idle_in_transaction_session_timeout%3D300")
    conn = psycopg.connect(quick.conninfo)
    try:
        conn.execute("SELECT 1")  # a transaction is open now, and left idle
        time.sleep(1.5)
        with pytest.raises(psycopg.Error) as ended:
            conn.execute("SELECT 1")
        assert ended.value.sqlstate == "25P03"  # idle_in_transaction_session_timeout
    finally:
        conn.close()
