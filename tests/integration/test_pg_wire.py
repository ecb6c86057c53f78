"""The worker's transaction sent through libpq itself (stores/postgres/wire.py): rows that read
as a cursor reads them, one transaction (all or nothing), a connection left usable after a
failed statement and closed after a broken link, and psycopg's path for what it leaves alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conveyor import payload, transitions
from conveyor.changes import Lease
from conveyor.errors import StoreError
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError, JobProgress
from conveyor.stores.base import JobQuery, NewJob
from conveyor.stores.postgres import PostgresStore, statements, wire
from conveyor.stores.postgres.common import QUERIES, Conn
from conveyor.stores.postgres.rows import TextArray, json_loads, register_loaders
from conveyor.stores.postgres.statements import ONE_JOB_ORDER, one_job_params, one_job_text
from tests.conftest import pg_test_url

pytestmark = pytest.mark.postgres
S = JobState

_TYPED = ("SELECT %(a)s::text AS a, %(b)s::int8 AS b, %(c)s::float8 AS c, %(d)s::bool AS d, "
          "%(e)s::jsonb AS e, %(f)s::text[] AS f, %(g)s::int8[] AS g, "
          "%(h)s::timestamptz AS h, %(n)s::text AS n, '50%%' AS pct, %(j)s::jsonb[] AS j, "
          "%(k)s::float8[] AS k, %(l)s::bool[] AS l, %(a)s::text AS a_again")
_VALUES: dict[str, Any] = {
    "a": "é\u2028\U0001f600 'q' \"d\" \\", "b": -2**63, "c": 1e300, "d": False,
    "e": Jsonb({"x": [1, None, "y"]}, dumps=payload.dumps), "f": TextArray(["p", "q r"]),
    "g": [1, None, 2**62], "h": datetime(2026, 12, 1, 12, 30, 1, 5, tzinfo=UTC), "n": None,
    "j": [Jsonb({"k": 1}, dumps=payload.dumps), None], "k": [0.5, float("inf")],
    "l": [True, False, None],
}


@pytest.fixture
def conn() -> Iterator[Conn]:
    with psycopg.connect(pg_test_url(), autocommit=True) as connection:
        psycopg.types.json.set_json_loads(json_loads, connection)
        register_loaders(connection)
        yield connection


def _ours(conn: Conn) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT name FROM pg_prepared_statements WHERE name LIKE 'conveyor%%' ORDER BY name")]


def test_rows_read_as_a_cursor_reads_them_and_statements_are_prepared_once(
        conn: Conn) -> None:
    with conn.cursor(binary=True) as cur:
        cur.execute(_TYPED, {**_VALUES, "f": list(_VALUES["f"].values)})
        assert cur.description is not None
        expected = [dict(zip([c.name for c in cur.description], row, strict=True))
                    for row in cur.fetchall()]
    for _ in range(3):
        assert wire.run(conn, [(_TYPED, _VALUES), ("SELECT 1 AS one WHERE false", {})]) == [
            expected, []]
    assert expected[0]["pct"] == "50%" and expected[0]["h"] == _VALUES["h"]
    assert len(_ours(conn)) == 2  # each statement prepared on its first run only


@pytest.mark.parametrize("value", [Decimal("1.5"), [], [1, "a"], [[1]], {"a": 1},
                                   [2**63], datetime(2026, 1, 1), Jsonb({}, dumps=None)])
def test_a_parameter_it_does_not_know_sends_nothing(conn: Conn, value: Any) -> None:
    assert wire.encode(value) is None
    assert wire.run(conn, [("SELECT 1 AS one", {}), ("SELECT %(v)s AS v", {"v": value})]) is None
    assert _ours(conn) == []


def test_placeholders_are_numbered_and_a_bare_percent_is_left_to_psycopg() -> None:
    assert wire.positional("SELECT %(a)s, %(b)s, %(a)s, '%%'") == (
        b"SELECT $1, $2, $1, '%'", ("a", "b"))
    assert wire.positional("SELECT 5 % 2") is None


def test_a_failing_statement_rolls_back_the_pipeline_and_leaves_the_connection_usable(
        conn: Conn) -> None:
    conn.execute("CREATE TEMP TABLE t (n int)")
    insert = "INSERT INTO t VALUES (%(n)s) RETURNING n"
    with pytest.raises(psycopg.errors.DivisionByZero):
        wire.run(conn, [(insert, {"n": 1}), ("SELECT 1 / %(z)s AS x", {"z": 0}),
                        ("SELECT 2 AS two", {})])
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)  # all or nothing
    assert conn.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
    assert wire.run(conn, [(insert, {"n": 2}), ("SELECT 1 / %(z)s AS x", {"z": 1}),
                           ("SELECT 2 AS two", {})]) == [[{"n": 2}], [{"x": 1}], [{"two": 2}]]
    assert len(_ours(conn)) == 3  # prepared once, the failed run's prepares kept or remade


@pytest.mark.parametrize("how", ["deallocate", "psycopg rollback"])
def test_statements_deallocated_behind_its_back_are_prepared_again(conn: Conn, how: str) -> None:
    statement = "SELECT %(a)s::int8 + 1 AS b"
    assert wire.run(conn, [(statement, {"a": 1})]) == [[{"b": 2}]]
    assert len(_ours(conn)) == 1
    if how == "deallocate":
        conn.execute("DEALLOCATE ALL")
    else:  # psycopg deallocates everything after a rollback once it prepared one of its own
        for _ in range(6):
            conn.execute("SELECT %s::int8", (1,))
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            conn.execute("SELECT 1 / 0")
    assert _ours(conn) == []
    assert wire.run(conn, [(statement, {"a": 2}), (statement, {"a": 3})]) == [
        [{"b": 3}], [{"b": 4}]]
    assert len(_ours(conn)) == 1
    assert wire.run(conn, [(statement, {"a": 4})]) == [[{"b": 5}]]


def test_a_broken_link_closes_the_connection(conn: Conn) -> None:
    with psycopg.connect(pg_test_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        wire.run(conn, [("SELECT 1 AS one", {})])
    assert conn.closed


def test_past_its_kept_statements_a_connection_leaves_new_ones_to_psycopg(
        conn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "KEPT", 2)
    assert wire.run(conn, [("SELECT 1 AS a", {}), ("SELECT 2 AS b", {})]) == [
        [{"a": 1}], [{"b": 2}]]
    assert wire.run(conn, [("SELECT 3 AS c", {})]) is None
    assert wire.run(conn, [("SELECT 2 AS b", {}), ("SELECT 2 AS b", {})]) == [
        [{"b": 2}], [{"b": 2}]]


def test_a_session_in_another_encoding_is_left_to_psycopg(conn: Conn) -> None:
    conn.execute("SET client_encoding TO 'LATIN1'")
    assert wire.run(conn, [("SELECT %(s)s AS s", {"s": "é"})]) is None
    conn.execute("SET client_encoding TO 'UTF8'")
    assert wire.run(conn, [("SELECT %(s)s AS s", {"s": "é"})]) == [[{"s": "é"}]]


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    schema = f"wire_{uuid.uuid4().hex[:12]}"
    opened = PostgresStore(pg_test_url(), schema=schema, max_size=1)
    opened.migrate()
    yield opened
    opened.close()
    with psycopg.connect(pg_test_url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _turn(store: PostgresStore, job_type: str, lost: bool) -> tuple[Any, list[Job]]:
    store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type=job_type, params={"n": n})
                       for n in range(4)])
    jobs = store.claim("w", queues=[], job_types=[job_type], limit=3, lease_seconds=60)
    leases = [Lease(job.id, job.lease_token or "", job.attempt) for job in jobs]
    if lost:  # the middle one's lease was lost: its change lands nowhere
        leases[1] = leases[1]._replace(token="not-it")
    changes = [transitions.complete(leases[0], {"r": 0}, "w"),
               transitions.complete(leases[1], None, "w"),
               transitions.fail(leases[2], leases[2].job_id,
                                JobError("E", "boom"), "raised", "w")]
    return store.finish_and_claim(changes, "w", queues=[], job_types=[job_type], limit=2,
                                  lease_seconds=60)


@pytest.mark.parametrize("lost", [False, True])
def test_a_batch_through_libpq_lands_as_through_psycopg(
        store: PostgresStore, monkeypatch: pytest.MonkeyPatch, lost: bool) -> None:
    ours = _turn(store, "a", lost)
    # sent through libpq: the settings of generic plans, the batch, the failure, the claim
    sent = store._run("read", lambda conn: list(conn._conveyor_wire.prepared))  # type: ignore[attr-defined]
    assert len(sent) == 4 and any("unnest" in statement for statement in sent)
    monkeypatch.setattr(wire, "run", lambda conn, statements: None)  # psycopg's path
    theirs = _turn(store, "b", lost)

    def shape(done: Any, claimed: list[Job]) -> Any:
        return ([None if job is None else (job.state, job.result, job.error, job.attempt)
                 for job in done], [(job.state, job.params) for job in claimed])

    assert shape(*ours) == shape(*theirs)
    assert (ours[0][1] is None) is lost
    for done in (ours[0], theirs[0]):
        for job in done:
            assert job is None or job == store.get_job(job.id)


def test_a_worker_transaction_after_a_rollback_on_its_connection(store: PostgresStore) -> None:
    """The store's one connection rolls back (psycopg then deallocates every prepared
    statement on it): the next worker transaction still lands, rather than failing on a
    statement the server forgot until the connection is replaced."""
    _turn(store, "a", False)

    def rollback(conn: Conn) -> list[str]:
        for _ in range(6):  # psycopg prepares a statement of its own after five runs
            conn.execute("SELECT %s::int8", (1,))
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            conn.execute("SELECT 1 / 0")
        return _ours(conn)

    assert store._run("read", rollback) == []
    done, claimed = _turn(store, "b", False)
    assert [None if job is None else job.state for job in done] == [
        S.COMPLETED, S.COMPLETED, S.FAILED]
    assert [job.state for job in claimed] == [S.RUNNING]  # the fourth job of its type
    assert store._run("read", _ours) != []


# -- one statement on its own (wire.one: the single enqueue) -------------------------------------

def test_one_statement_reads_as_a_cursor_reads_it_prepared_on_its_first_run(conn: Conn) -> None:
    with conn.cursor(binary=True) as cur:
        cur.execute(_TYPED, {**_VALUES, "f": list(_VALUES["f"].values)})
        expected = cur.fetchall()
    texts = {key: value for key, value in _VALUES.items()
             if key not in ("e", "f", "g", "j", "k", "l")}
    plain = "SELECT %(a)s::text AS a, %(b)s::int8 AS b, %(c)s::float8 AS c, " \
        "%(d)s::bool AS d, %(h)s::timestamptz AS h, %(n)s::text AS n, '50%%' AS pct"
    with conn.cursor(binary=True) as cur:
        cur.execute(plain, texts)
        expected_plain = cur.fetchall()
    for _ in range(3):  # the first through run (it prepares), then the lean path
        assert wire.one(conn, _TYPED, _VALUES) == expected  # arrays: encode()'s formats
        assert wire.one(conn, plain, texts) == expected_plain  # all text: no formats
    assert wire.one(conn, "SELECT 1 AS one WHERE false", {}) == []
    assert wire.one(conn, "SELECT 1 AS one WHERE false", {}) == []
    assert len(_ours(conn)) == 3
    assert conn.info.transaction_status is psycopg.pq.TransactionStatus.IDLE


@pytest.mark.parametrize("value", [Decimal("1.5"), datetime(2026, 1, 1), [1, "a"]])
def test_one_leaves_a_parameter_it_does_not_know_to_psycopg(conn: Conn, value: Any) -> None:
    statement = "SELECT %(v)s::text AS v, %(w)s::text AS w"
    assert wire.one(conn, statement, {"v": value, "w": "x"}) is None  # before it is prepared
    assert wire.one(conn, statement, {"v": 1, "w": "x"}) == [("1", "x")]
    assert wire.one(conn, statement, {"v": value, "w": "x"}) is None  # and once it is


def test_one_failing_statement_raises_psycopg_error_and_the_connection_stays_usable(
        conn: Conn) -> None:
    conn.execute("CREATE TEMP TABLE t (n int PRIMARY KEY)")
    insert = "INSERT INTO t VALUES (%(n)s) RETURNING n"
    assert wire.one(conn, insert, {"n": 1}) == [(1,)]
    assert wire.one(conn, insert, {"n": 2}) == [(2,)]
    with pytest.raises(psycopg.errors.UniqueViolation):
        wire.one(conn, insert, {"n": 2})
    assert conn.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
    assert wire.one(conn, insert, {"n": 3}) == [(3,)]
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_one_statement_deallocated_behind_its_back_is_prepared_again(conn: Conn) -> None:
    statement = "SELECT %(a)s::int8 + 1 AS b"
    assert wire.one(conn, statement, {"a": 1}) == [(2,)]
    assert wire.one(conn, statement, {"a": 2}) == [(3,)]
    conn.execute("DEALLOCATE ALL")
    assert wire.one(conn, statement, {"a": 3}) == [(4,)]
    assert len(_ours(conn)) == 1
    assert wire.one(conn, statement, {"a": 4}) == [(5,)]


def test_one_on_a_broken_link_closes_the_connection(conn: Conn) -> None:
    assert wire.one(conn, "SELECT 1 AS one", {}) == [(1,)]
    with psycopg.connect(pg_test_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        wire.one(conn, "SELECT 1 AS one", {})
    assert conn.closed


def _enqueued(store: PostgresStore, new: NewJob) -> tuple[Any, ...]:
    """What one enqueue left: the job as returned (equal to the stored one), its fields with
    the id left out and the times as offsets from its creation (run_at as given, if given),
    and its history rows."""
    job = store.insert_jobs([new], actor="tester")[0]
    assert job == store.get_job(new.id)
    created = job.created_at
    fields = {name: value for name, value in vars(job).items()
              if name not in ("id", "created_at", "updated_at", "run_at")}
    history = [(h.action, h.from_state, h.to_state, h.attempt, h.actor, h.reason,
                h.at - created) for h in store.history(new.id)]
    run_at = job.run_at if new.run_at is not None else job.run_at - created
    return fields, run_at, job.updated_at - created, history


@pytest.mark.parametrize("options", [
    {}, {"run_at": datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)}, {"delay": 2.5},
    {"queue": "q", "priority": 7, "max_attempts": 9, "timeout": 1.5, "pause_timeout": 3.0,
     "trace": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "limit_key": "k",
     "params": {"n": 1, "s": "é"}, "params_json": None},
])
def test_one_enqueue_through_libpq_lands_as_through_psycopg(
        store: PostgresStore, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]) -> None:
    def new() -> NewJob:
        return NewJob(**{"id": str(uuid.uuid4()), "job_type": "a", "params": {},
                         "params_json": "{}", **options})

    with psycopg.connect(pg_test_url(), autocommit=True) as listener:
        listener.execute(psycopg.sql.SQL("LISTEN {}").format(
            psycopg.sql.Identifier(store._settings.channel)))
        # the first prepares the statement (through wire.one), the others go through
        # wire.one_text (the parameters encoded by statements.one_job_text)
        ours = [_enqueued(store, new()) for _ in range(3)]
        sent = store._run("read", lambda conn: list(conn._conveyor_wire.prepared))  # type: ignore[attr-defined]
        assert any("INSERT INTO job_history" in statement for statement in sent)
        monkeypatch.setattr(wire, "one_text", lambda conn, statement, values: None)
        dicts = [_enqueued(store, new()) for _ in range(2)]  # wire.one, the params' dict
        monkeypatch.setattr(wire, "one", lambda conn, statement, params: None)
        theirs = [_enqueued(store, new()) for _ in range(2)]  # psycopg
        woken = list(listener.notifies(timeout=1.0, stop_after=7))
    assert ours[1:] == ours[:2] and dicts == ours[:2] and theirs == ours[:2]
    assert [n.channel for n in woken] == [store._settings.channel] * 7


def test_one_enqueue_fails_as_through_psycopg(store: PostgresStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A job the database refuses (here an id taken already) raises the same StoreError, over
    the same psycopg error, and the store's connection goes on to the next enqueue."""
    first = NewJob(id=str(uuid.uuid4()), job_type="a", params={})
    store.insert_jobs([first])
    store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="a", params={})])  # prepared
    failures = []
    for path in ("one_text", "one", "psycopg"):
        if path == "one":
            monkeypatch.setattr(wire, "one_text", lambda conn, statement, values: None)
        if path == "psycopg":
            monkeypatch.setattr(wire, "one", lambda conn, statement, params: None)
        with pytest.raises(StoreError) as caught:
            store.insert_jobs([NewJob(id=first.id, job_type="b", params={})])
        failures.append((type(caught.value.__context__), str(caught.value)))
        assert store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="a", params={})])
    assert failures[0] == failures[1] == failures[2]
    assert failures[0][0] is psycopg.errors.UniqueViolation
    assert [job.job_type for job in store.list_jobs(JobQuery())].count("b") == 0


@pytest.mark.parametrize("options", [
    {}, {"run_at": datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)}, {"delay": 2.5},
    {"timeout": 30, "pause_timeout": 3.0, "delay": 0, "priority": -3, "requeued_from": "r",
     "trace": "t", "limit_key": "k", "params": {"s": "é"}, "params_json": None,
     "backoff": {"base": 1.0}, "progress": JobProgress(2, 5, {"at": [1, "é"]})},
])
def test_one_job_text_is_what_one_sends_for_the_params(options: dict[str, Any]) -> None:
    """The enqueue's own encoding (statements.one_job_text, sent by wire.one_text) is, value
    for value, what wire.one sends for one_job_params's dict, in insert_job's placeholder
    order."""
    new = NewJob(**{"id": str(uuid.uuid4()), "job_type": "a", "params": {},
                    "params_json": "{}", **options})
    assert wire.positional(QUERIES["insert_job"])[1] == ONE_JOB_ORDER  # type: ignore[index]
    assert one_job_text(new, "tester", "chan") == _each_value(new, "tester", "chan")


def _each_value(new: NewJob, actor: str, channel: str) -> list[bytes | None]:
    """What wire.one sends for one_job_params's dict, value by value, in insert_job's order."""
    params = one_job_params(new, actor, channel)
    return [wire.text(params[name]) for name in ONE_JOB_ORDER]


@pytest.mark.parametrize("options", [
    {}, {"trace": "t", "limit_key": "k", "params": {"s": "é"}, "params_json": None},
    {"queue": "q", "priority": 7, "max_attempts": 9, "timeout": 1.5, "pause_timeout": 3.0},
    {"timeout": 2, "pause_timeout": 5}, {"priority": True}, {"max_attempts": False},
    {"timeout": 0.0}, {"timeout": -0.0}, {"backoff_json": None, "backoff": {"base": 2.0}},
])
def test_a_kept_shape_writes_what_writing_each_value_writes(
        monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]) -> None:
    """one_job_text copies a kept shape's values for a job like one seen before and fills in
    its own: the same values as written one by one (_each_value), for each job of
    a run of shapes that are equal as keys but not as text (2 and 2.0, 1 and True, 0.0 and
    -0.0), whichever came first."""
    monkeypatch.setattr(statements, "_SHAPES", {})
    base: dict[str, Any] = {"job_type": "a", "params": {}, "params_json": "{}",
                            "backoff_json": "{}"}
    twins: list[dict[str, Any]] = [{}, {"priority": 1}, {"priority": True}, {"timeout": 2},
                                   {"timeout": 2.0}, {"timeout": 0.0}, {"timeout": -0.0},
                                   options]
    for first in (twins, twins[::-1]):
        statements._SHAPES.clear()
        for extra in first * 2:
            new = NewJob(**{"id": str(uuid.uuid4()), **base, **extra})
            for actor in ("tester", "api"):
                assert one_job_text(new, actor, "chan") == _each_value(new, actor, "chan")
    assert statements._SHAPES  # some were kept, and then copied


def test_shapes_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SHAPES_KEPT shapes a new one is written value by value and not kept."""
    monkeypatch.setattr(statements, "_SHAPES", {})
    for n in range(statements.SHAPES_KEPT + 10):
        new = NewJob(id=str(uuid.uuid4()), job_type=f"t{n}", params={}, params_json="{}",
                     backoff_json="{}")
        assert one_job_text(new, "api", "chan") == _each_value(new, "api", "chan")
    assert len(statements._SHAPES) == statements.SHAPES_KEPT


def test_one_job_text_leaves_a_value_it_does_not_send_as_text_to_the_dict() -> None:
    new = NewJob(id=str(uuid.uuid4()), job_type="a", params={}, timeout=Decimal("1.5"))  # type: ignore[arg-type]
    assert one_job_text(new, "tester", "chan") is None


def test_one_enqueue_after_its_statement_was_deallocated(store: PostgresStore) -> None:
    """wire.one_text finds the statement gone (nothing ran): the enqueue goes through
    wire.one, which prepares it again; the job is stored once."""
    first = store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="a", params={})])
    store._run("deallocate", lambda conn: conn.execute("DEALLOCATE ALL"))
    (job,) = store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="a", params={})])
    assert store.get_job(job.id) == job
    assert len(store.list_jobs(JobQuery())) == len(first) + 1
    assert [h.action for h in store.history(job.id)] == ["create"]
