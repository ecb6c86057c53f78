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
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError
from conveyor.stores.base import NewJob
from conveyor.stores.postgres import PostgresStore, wire
from conveyor.stores.postgres.common import Conn
from conveyor.stores.postgres.rows import TextArray, json_loads, register_loaders
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
