"""PostgreSQL counts by state: one queue's count reads that queue's index entries.

psycopg prepares a statement after a few runs and the server may then keep one generic plan
for every parameter value; a single statement for "all queues or one" (``queue IS NULL OR
queue = ...``) can then only scan the whole table. The store uses one statement for each.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from conveyor.ids import new_job_id
from conveyor.lifecycle import JobState
from conveyor.stores.base import NewJob
from conveyor.stores.postgres import PostgresStore
from conveyor.stores.postgres.common import QUERIES
from conveyor.stores.postgres.statements import count_statement
from tests.conftest import pg_test_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"counts_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(pg_test_url(), schema=name)
    store.migrate()
    store.close()
    yield name
    with psycopg.connect(pg_test_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def _generic_plan(schema: str, queue: str | None) -> str:
    """EXPLAIN of the statement ``count_statement`` picks, as a generic plan (what a
    prepared statement runs once the server stops planning it per call)."""
    statement, params = count_statement(QUERIES, queue)
    text = re.sub(r"%\(queue\)s", "$1", statement)
    with psycopg.connect(pg_test_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("SET enable_seqscan = off")  # an index is taken whenever one can serve
        if params:
            conn.execute(sql.SQL("PREPARE counts (text) AS {}").format(sql.SQL(text)))
            rows = conn.execute("EXPLAIN EXECUTE counts('mail')").fetchall()
        else:
            conn.execute(sql.SQL("PREPARE counts AS {}").format(sql.SQL(text)))
            rows = conn.execute("EXPLAIN EXECUTE counts").fetchall()
    return "\n".join(str(row[0]) for row in rows)


def test_one_queues_count_uses_an_index_under_a_generic_plan(schema: str) -> None:
    plan = _generic_plan(schema, "mail")
    # the queue bounds the index scan (an Index Cond), where `$1 IS NULL OR queue = $1` read
    # every entry of an index and filtered the rows afterwards
    assert re.search(r"Index Cond: \(queue = \$1\)", plan), plan
    assert "Seq Scan" not in plan and "IS NULL" not in plan, plan


def test_counts_by_state_for_all_queues_and_for_one(schema: str) -> None:
    store = PostgresStore(pg_test_url(), schema=schema)
    try:
        store.insert_jobs([NewJob(new_job_id(), "t", {}, queue=queue)
                           for queue in ["mail"] * 3 + ["other"] * 2])
        for _ in range(8):  # past psycopg's prepare threshold: the prepared statements answer
            every, mail = store.count_by_state(), store.count_by_state("mail")
            assert every[JobState.PENDING] == 5
            assert mail[JobState.PENDING] == 3
            assert store.count_by_state("nowhere")[JobState.PENDING] == 0
    finally:
        store.close()
