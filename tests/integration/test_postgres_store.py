"""PostgreSQL-only behaviour of the store, against the real server of ``make test``.

The contract suite checks what every store must do; this module checks what only PostgreSQL
brings: several processes on one database (migrations, claims), schemas as namespaces,
LISTEN/NOTIFY, and surviving connections the server drops. The server's URL comes from
``CONVEYOR_TEST_PG_URL``; without it every test here fails (it is never skipped).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from conveyor import transitions
from conveyor.changes import ChangeRefused, Lease
from conveyor.errors import ConfigurationError, JobNotFound, StoreError
from conveyor.lifecycle import JobState
from conveyor.model import JobError
from conveyor.stores.base import NewJob
from conveyor.stores.postgres import LATEST_VERSION, PostgresStore
from conveyor.stores.postgres.statements import COPY_FROM
from tests.conftest import pg_test_url

pytestmark = pytest.mark.postgres

SPAWN = multiprocessing.get_context("spawn")  # no fork(): the store runs threads


@pytest.fixture(scope="module", autouse=True)
def pg_url() -> str:
    return pg_test_url()


def _with_query(url: str, **params: str) -> str:
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    """A schema of the test's own, dropped afterwards."""
    name = f"it_{uuid.uuid4().hex[:12]}"
    yield name
    with _admin(pg_url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def make_store(pg_url: str, schema: str) -> Iterator[Callable[..., PostgresStore]]:
    """Stores on the test's schema (or another), all closed at the end."""
    opened: list[PostgresStore] = []

    def factory(url: str | None = None, **options: Any) -> PostgresStore:
        options.setdefault("schema", schema)
        store = PostgresStore(url or pg_url, **options)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def _jobs(n: int, job_type: str = "t") -> list[NewJob]:
    return [NewJob(id=uuid.uuid4().hex, job_type=job_type, params={"i": i}) for i in range(n)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


#: How long a waiter in :func:`_time_to_wake` would block without a wake-up: a wake within a
#: few seconds cannot be its timeout (nor the worker's usual 1 s poll, which is not used here).
_WAKE_WAIT = 300.0


def _time_to_wake(waiter: PostgresStore, trigger: Callable[[], object]) -> float:
    """Seconds from the first ``trigger()`` until ``waiter.wait_for_work`` returns.

    The waiting thread may not be inside ``wait_for_work`` yet when a trigger lands (that
    wake-up is not for it), so the trigger is repeated every half second until it wakes.
    """
    deadline = time.monotonic() + 30
    while not waiter.listening and time.monotonic() < deadline:
        waiter.wait_for_work(1.0)  # the first wait starts the LISTEN, returns once it is up
    assert waiter.listening
    waiter.wait_for_work(0.0)  # use up earlier wake-ups (a reconnect's): they are not the trigger's
    done = threading.Event()

    def wait() -> None:
        waiter.wait_for_work(_WAKE_WAIT)
        done.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    assert not done.wait(0.2), "wait_for_work returned without a notification"
    started = time.monotonic()
    while not done.is_set() and time.monotonic() - started < 60:
        trigger()
        done.wait(0.5)
    assert done.is_set(), "no notification woke the waiter"
    thread.join(30)
    return time.monotonic() - started


# -- processes -------------------------------------------------------------------------------

def _migrate_in_child(url: str, schema: str, barrier: Any, out: Any) -> None:
    store = PostgresStore(url, schema=schema)
    try:
        barrier.wait(30)
        store.migrate()
        out.put(store.schema_version())
    except Exception as exc:
        out.put(repr(exc))
    finally:
        store.close()


def _claim_in_child(url: str, schema: str, name: str, barrier: Any, out: Any) -> None:
    store = PostgresStore(url, schema=schema)
    got: list[str] = []
    try:
        barrier.wait(30)
        rng = random.Random(name)
        empty = 0
        while empty < 3:
            jobs = store.claim(name, queues=[], job_types=["race"], limit=rng.randint(1, 7),
                               lease_seconds=60)
            empty = 0 if jobs else empty + 1
            got.extend(job.id for job in jobs)
        out.put(got)
    except Exception as exc:
        out.put(repr(exc))
    finally:
        store.close()


def _run_children(target: Callable[..., None], args_for: list[tuple[Any, ...]]) -> list[Any]:
    out = SPAWN.Queue()
    barrier = SPAWN.Barrier(len(args_for))
    procs = [SPAWN.Process(target=target, args=(*args, barrier, out)) for args in args_for]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    return results


def test_concurrent_migrations_end_at_one_version(pg_url: str, schema: str) -> None:
    results = _run_children(_migrate_in_child, [(pg_url, schema)] * 4)
    assert results == [LATEST_VERSION] * 4
    with _admin(pg_url) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1')
        assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))


def test_racing_processes_never_claim_the_same_job(
        pg_url: str, schema: str, make_store: Callable[..., PostgresStore]) -> None:
    store = make_store()
    store.migrate()
    store.insert_jobs(_jobs(500, "race"))
    results = _run_children(_claim_in_child, [(pg_url, schema, "w1"), (pg_url, schema, "w2")])
    for result in results:
        assert isinstance(result, list), result
    counts = Counter(job_id for ids in results for job_id in ids)
    assert len(counts) == 500
    assert max(counts.values()) == 1
    assert all(results), "one process got no job at all: the claims did not race"
    assert store.count_by_state()[JobState.RUNNING] == 500
    with _admin(pg_url) as conn:
        starts = conn.execute(f"SELECT count(*), count(DISTINCT job_id) FROM \"{schema}\"."
                              "job_history WHERE action = 'start'").fetchone()
    assert starts == (500, 500)


def test_racing_compare_and_sets_on_one_job_have_one_winner(
        make_store: Callable[..., PostgresStore]) -> None:
    """Claims, cancels and requests on the same jobs from many connections at once.

    Exactly one of start and cancel wins each job, and every history row's ``from_state`` is
    the state the previous row left (the row lock makes the recorded source the real one).
    """
    store = make_store(max_size=8)
    store.migrate()
    jobs = store.insert_jobs(_jobs(20, "cas"))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    either = frozenset({JobState.PENDING, JobState.RUNNING})

    def claimer() -> None:
        for _ in jobs:
            store.claim("w", queues=[], job_types=["cas"], limit=1, lease_seconds=30)

    def canceller() -> None:
        for job in jobs:
            with contextlib.suppress(ChangeRefused):
                store.apply([transitions.cancel_idle(job.id, JobState.PENDING, "op", "")])

    def requester() -> None:
        for job in jobs:
            with contextlib.suppress(ChangeRefused):
                store.apply([transitions.request(job.id, "pause_requested", True, either,
                                                 "op", "")])

    def run(target: Callable[[], None]) -> None:
        try:
            barrier.wait()
            target()
        except BaseException as exc:
            errors.append(exc)

    roles = [claimer, claimer, claimer, canceller, canceller, canceller, requester, requester]
    threads = [threading.Thread(target=run, args=(role,)) for role in roles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    for job in jobs:
        history = store.history(job.id)
        moves = [h.action for h in history if h.action in ("start", "cancel")]
        assert moves in (["start"], ["cancel"]), moves
        for before, after in itertools.pairwise(history):
            assert after.from_state is before.to_state, (before, after)


# -- schema and versions ---------------------------------------------------------------------

def test_a_newer_schema_is_refused(pg_url: str, schema: str,
                                   make_store: Callable[..., PostgresStore]) -> None:
    store = make_store()
    store.migrate()
    with _admin(pg_url) as conn:
        conn.execute(f'INSERT INTO "{schema}".schema_migrations (version, name) '
                     "VALUES (%s, 'from_the_future')", (LATEST_VERSION + 1,))
    with pytest.raises(StoreError, match=r"newer than this conveyor knows") as info:
        make_store()
    assert f"version {LATEST_VERSION + 1}" in str(info.value)
    with pytest.raises(StoreError, match=r"newer than this conveyor knows"):
        store.migrate()


def test_an_unmigrated_schema_says_so(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store()
    assert store.schema_version() == 0
    with pytest.raises(StoreError, match=r"not set up.*migrate\(\)"):
        store.get_job("x")


def test_a_schema_holding_other_tables_is_not_touched(
        pg_url: str, schema: str, make_store: Callable[..., PostgresStore]) -> None:
    with _admin(pg_url) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".invoices (id int)')
    with pytest.raises(StoreError, match=r"not conveyor's \(invoices\)"):
        make_store().migrate()


def test_schemas_isolate_stores_in_one_database(
        pg_url: str, schema: str, make_store: Callable[..., PostgresStore]) -> None:
    other = f"{schema}_b"
    try:
        a = make_store()
        b = make_store(_with_query(pg_url, schema=other), schema="conveyor")
        assert b.schema == other
        a.migrate()
        b.migrate()
        (job,) = a.insert_jobs(_jobs(1))
        assert b.count_by_state()[JobState.PENDING] == 0
        with pytest.raises(JobNotFound):
            b.get_job(job.id)
        assert b.claim("w", queues=[], job_types=["t"], limit=5, lease_seconds=30) == []
        # Notifications are per schema too: work in `a` does not wake `b`'s workers.
        b.wait_for_work(5.0)
        started = time.monotonic()
        a.insert_jobs(_jobs(1))
        b.wait_for_work(0.5)
        assert time.monotonic() - started >= 0.45
    finally:
        with _admin(pg_url) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


def test_numbers_survive_jsonb(make_store: Callable[..., PostgresStore]) -> None:
    """jsonb prints 1e300 as an integer; the store reads it back as the float it was."""
    store = make_store()
    store.migrate()
    params = {"huge": 1e300, "tiny": 5e-324, "big_int": 2**63 - 1, "neg": -(2**63),
              "half": 0.5, "whole": 3.0}
    (job,) = store.insert_jobs([NewJob(id="n", job_type="t", params=params)])
    got = store.get_job(job.id).params
    assert got == params
    assert isinstance(got["huge"], float)
    assert isinstance(got["big_int"], int)


def test_bad_urls_and_options_are_configuration_errors(pg_url: str) -> None:
    with pytest.raises(ConfigurationError, match="Not a PostgreSQL URL"):
        PostgresStore("mysql://x@localhost/db")
    with pytest.raises(ConfigurationError, match="Invalid schema name"):
        PostgresStore(pg_url, schema="Robert'); DROP TABLE jobs;--")
    with pytest.raises(ConfigurationError, match="give it once"):
        PostgresStore(_with_query(pg_url, schema="one"), schema="two")
    with pytest.raises(ConfigurationError, match="pool sizes"):
        PostgresStore(pg_url, min_size=5, max_size=2)


# -- failures ------------------------------------------------------------------------------

def _swap_netloc(url: str, *, user: str | None = None, port: int | None = None,
                 dbname: str | None = None) -> str:
    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    host = conninfo.get("host", "127.0.0.1")
    port = port or int(conninfo.get("port") or 5432)
    auth = user or conninfo.get("user", "postgres")
    return f"postgresql://{auth}@{host}:{port}/{dbname or conninfo.get('dbname')}"


@pytest.mark.parametrize(("change", "reason"), [
    ({"user": "conveyor_nobody:s3cret"}, 'role "conveyor_nobody" does not exist'),
    ({"dbname": "conveyor_no_such_db"}, 'database "conveyor_no_such_db" does not exist'),
    ({"port": 0}, "Connection refused"),
])
def test_connection_failures_are_one_clear_line(pg_url: str, change: dict[str, Any],
                                                reason: str) -> None:
    if change.get("port") == 0:
        change = {"port": _free_port()}
    url = _swap_netloc(pg_url, **change)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        PostgresStore(url)
    message = str(info.value)
    assert time.monotonic() - started < 10, "waited for the 15 s pool timeout"
    assert message.startswith("Cannot connect to PostgreSQL at postgresql://")
    assert reason in message
    assert "\n" not in message
    assert "s3cret" not in message
    if "user" in change:
        assert "conveyor_nobody:***@" in message


class _Proxy:
    """A TCP relay to the server that the test can cut, like a network failure would."""

    def __init__(self, port: int) -> None:
        self._upstream = port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    client.close()
                    return
                try:
                    upstream = socket.create_connection(("127.0.0.1", self._upstream))
                except OSError:
                    client.close()
                    return
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        with self._lock:
            self._cut = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._thread.join(5.0)
        self._server.close()

    def close(self) -> None:
        self.cut()
        with self._lock:
            for sock in self._sockets:
                sock.close()


def test_losing_the_server_while_running_is_a_store_error(
        pg_url: str, make_store: Callable[..., PostgresStore]) -> None:
    port = int(str(psycopg.conninfo.conninfo_to_dict(pg_url)["port"]))
    proxy = _Proxy(port)
    try:
        store = make_store(_swap_netloc(pg_url, port=proxy.port), timeout=1.0)
        store.migrate()
        (job,) = store.insert_jobs(_jobs(1))
        proxy.cut()
        with pytest.raises(StoreError) as info:
            store.get_job(job.id)
        assert "\n" not in str(info.value)
        assert f"127.0.0.1:{proxy.port}" in str(info.value)
        started = time.monotonic()
        store.wait_for_work(0.3)  # waiting never raises: it degrades to polling
        assert time.monotonic() - started < 10  # neither hung on the dead connection
    finally:
        proxy.close()


def test_a_closed_store_says_so(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store()
    store.close()
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.now()


def _backends(pg_url: str, app: str) -> list[tuple[int, str]]:
    with _admin(pg_url) as conn:
        rows = conn.execute("SELECT pid, query FROM pg_stat_activity "
                            "WHERE application_name = %s", (app,)).fetchall()
    return [(pid, query) for pid, query in rows]


def test_terminated_connections_are_replaced(
        pg_url: str, make_store: Callable[..., PostgresStore]) -> None:
    app = f"conveyor_it_{uuid.uuid4().hex[:8]}"
    store = make_store(_with_query(pg_url, application_name=app), max_size=4)
    store.migrate()
    (job,) = store.insert_jobs(_jobs(1))
    store.wait_for_work(5.0)  # starts the LISTEN connection
    assert store.listening
    killed = {pid for pid, _ in _backends(pg_url, app)}
    assert len(killed) >= 2  # the pool's and the listener's
    with _admin(pg_url) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = %s", (app,))
    _wait_until(lambda: not killed & {pid for pid, _ in _backends(pg_url, app)})

    # The very next calls work: the pool drops the dead connections and opens new ones.
    assert store.get_job(job.id).state is JobState.PENDING
    (claimed,) = store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=30)
    assert claimed.id == job.id

    # The LISTEN comes back on a new connection, and notifications wake waiters again.
    _wait_until(lambda: any(pid not in killed and query.startswith("LISTEN")
                            for pid, query in _backends(pg_url, app)))
    _wait_until(lambda: store.listening)
    other = make_store()
    assert _time_to_wake(store, other.notify_work) < 10


# -- notifications -------------------------------------------------------------------------

def test_work_from_another_connection_wakes_a_waiting_worker_at_once(
        make_store: Callable[..., PostgresStore]) -> None:
    waiter, producer = make_store(), make_store()
    producer.migrate()
    assert _time_to_wake(waiter, lambda: producer.insert_jobs(_jobs(1))) < 10
    assert _time_to_wake(waiter, producer.notify_work) < 10


def test_a_batch_sent_by_copy_wakes_a_waiting_worker_and_equals_the_plain_insert(
        make_store: Callable[..., PostgresStore]) -> None:
    """The COPY path (its clock and NOTIFY sent first, the jobs built while the rows stream)
    wakes workers as the one-statement path does, and stores and returns the same jobs."""
    waiter, producer = make_store(), make_store()
    producer.migrate()
    assert _time_to_wake(waiter, lambda: producer.insert_jobs(_jobs(COPY_FROM))) < 10
    copied = producer.insert_jobs(_jobs(COPY_FROM), actor="bulk")  # by COPY
    plain = producer.insert_jobs(_jobs(COPY_FROM - 1), actor="bulk")  # one statement
    assert copied == producer.get_jobs([j.id for j in copied])
    assert plain == producer.get_jobs([j.id for j in plain])
    assert len({j.created_at for j in copied}) == 1
    assert all(j.run_at == j.created_at == j.updated_at for j in copied)

    def shape(job: Any) -> dict[str, Any]:
        return {k: v for k, v in vars(job).items()
                if k not in {"id", "created_at", "updated_at", "run_at"}}

    assert [shape(j) for j in copied[:COPY_FROM - 1]] == [shape(j) for j in plain]
    assert [[(h.action, h.to_state, h.attempt, h.actor) for h in producer.history(j.id)]
            for j in (copied[0], copied[-1], plain[0])] == [
        [("create", JobState.PENDING, 0, "bulk")]] * 3


def test_retries_and_resume_requests_notify(make_store: Callable[..., PostgresStore]) -> None:
    waiter, producer = make_store(), make_store()
    producer.migrate()
    producer.insert_jobs(_jobs(2))
    first, second = producer.claim("w", queues=[], job_types=["t"], limit=2, lease_seconds=30)
    producer.apply([transitions.fail(Lease(first.id, first.lease_token or "", first.attempt),
                                     first.id, JobError("E", "boom"), "raised", "w")])
    retry = transitions.retry(first.id, "op", "manual")
    assert _time_to_wake(waiter, lambda: producer.apply([retry])) < 1.0
    assert producer.get_job(first.id).state is JobState.PENDING

    lease = Lease(second.id, second.lease_token or "", second.attempt)
    producer.apply([transitions.pause_at_checkpoint(lease, None, "w")])
    resume = transitions.request(second.id, "resume_requested", True,
                                 frozenset({JobState.PAUSED}), "op", "")
    assert _time_to_wake(waiter, lambda: producer.apply([resume])) < 1.0
    assert producer.get_job(second.id).resume_requested


# -- the parked connection (PostgresStore._checkin) ---------------------------------------------

def _backend_pid(store: PostgresStore) -> int:
    pid: int = store._run("read the backend", lambda c: c.info.backend_pid)
    return pid


def _requests(store: PostgresStore) -> int:
    """How many connections were asked of the pool so far."""
    return store._pool.get_stats().get("requests_num", 0)


def test_the_next_statement_reuses_the_parked_connection_without_the_pool(
        make_store: Callable[..., PostgresStore]) -> None:
    store = make_store()
    store.migrate()
    first = _backend_pid(store)
    asked = _requests(store)
    (job,) = store.insert_jobs(_jobs(1))
    assert store.get_job(job.id) == job
    assert _backend_pid(store) == first
    assert _requests(store) == asked  # served by the parked connection each time


def test_a_parked_connection_passes_through_the_pool_once_due(
        make_store: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.stores.postgres import store as store_module

    monkeypatch.setattr(store_module, "PARKED_FOR", -1.0)  # due as soon as it is parked
    store = make_store()
    store.migrate()
    asked = _requests(store)
    for _ in range(3):
        store.now()
    assert _requests(store) == asked + 3  # each statement went through the pool


def test_a_store_with_min_size_0_parks_nothing(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store(min_size=0)
    store.migrate()
    store.now()
    assert store._parked == []


def test_a_connection_left_in_a_transaction_is_not_parked(
        make_store: Callable[..., PostgresStore]) -> None:
    """The pool rolls it back, as before: the next statement runs in no transaction."""
    store = make_store(max_size=1)
    store.migrate()
    store._run("open a transaction", lambda c: c.execute("BEGIN"))
    assert store._parked == []
    status = store._run("read the status", lambda c: c.pgconn.transaction_status)
    assert status == psycopg.pq.TransactionStatus.IDLE


def test_a_parked_connection_the_server_closed_costs_no_failed_call(
        pg_url: str, make_store: Callable[..., PostgresStore]) -> None:
    app = f"conveyor_it_{uuid.uuid4().hex[:8]}"
    store = make_store(_with_query(pg_url, application_name=app))
    store.migrate()
    parked = _backend_pid(store)
    assert len(store._parked) == 1
    with _admin(pg_url) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (parked,))
    _wait_until(lambda: parked not in {pid for pid, _ in _backends(pg_url, app)})
    (job,) = store.insert_jobs(_jobs(1))  # a write: it would not be retried had it failed
    assert store.get_job(job.id).id == job.id
    assert _backend_pid(store) != parked


def test_a_thread_waiting_for_the_pool_gets_the_connection_given_back(
        make_store: Callable[..., PostgresStore]) -> None:
    """One connection, two threads: the one that asks while the other holds it gets it when
    the other is done (it is not parked while a thread waits in the pool, which would wait
    out the pool's timeout and fail)."""
    store = make_store(max_size=1, timeout=5.0)
    store.migrate()
    holding = threading.Event()
    asking = threading.Event()

    def hold(conn: Any) -> None:
        holding.set()
        assert asking.wait(10)
        _wait_until(lambda: store._asking == 1)  # the other thread is in the pool's queue
        conn.execute("SELECT 1")

    def ask() -> None:
        assert holding.wait(10)
        asking.set()
        got.append(store.now())

    got: list[Any] = []
    other = threading.Thread(target=ask)
    other.start()
    store._run("hold the connection", hold)
    other.join(30)
    assert len(got) == 1  # not a StoreError after the pool's 5 s timeout
    store.now()  # and the store still serves this thread


def test_closing_the_store_closes_its_parked_connection(
        make_store: Callable[..., PostgresStore]) -> None:
    store = make_store()
    store.migrate()
    store.now()
    ((conn, _, _),) = store._parked
    store.close()
    assert store._parked == []
    assert conn.closed
