"""The PostgreSQL store's own adapters on the worker path: a ``text[]`` encoded once
(:class:`TextArray`) must reach the server as the very value a plain list does, and rows made
with column names kept from an earlier result (:class:`KnownColumns`) must equal ``dict_row``'s."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg.adapt import PyFormat, Transformer
from psycopg.rows import dict_row

from conveyor.stores.postgres.rows import KnownColumns, TextArray, register_loaders
from tests.conftest import pg_test_url

pytestmark = pytest.mark.postgres
LISTS = [[], ["t"], ["a", "b", "completed"], ["é ü", "", "with,comma", 'quote"', "NULL"]]


@pytest.fixture
def conn() -> Iterator[psycopg.Connection[dict[str, object]]]:
    with psycopg.connect(pg_test_url(), autocommit=True, row_factory=dict_row) as conn:
        register_loaders(conn)
        yield conn


@pytest.mark.parametrize("values", LISTS)
def test_a_text_array_is_the_value_a_plain_list_sends(
        conn: psycopg.Connection[dict[str, object]], values: list[str]) -> None:
    pre = TextArray(values)
    for binary in (True, False):
        row = conn.execute(
            "SELECT %(pre)s AS pre, %(pre)s = %(plain)s::text[] AS same,"
            " pg_typeof(%(pre)s)::text AS type, cardinality(%(pre)s) AS n,"
            " 'a' = ANY(%(pre)s) AS has_a",
            {"pre": pre, "plain": values}, binary=binary).fetchone()
        assert row == {"pre": values, "same": True, "type": "text[]", "n": len(values),
                       "has_a": "a" in values}


@pytest.mark.parametrize("values", LISTS[1:])
def test_a_text_array_holds_the_bytes_psycopg_makes_of_the_list(
        conn: psycopg.Connection[dict[str, object]], values: list[str]) -> None:
    dumper = Transformer(conn).get_dumper(values, PyFormat.BINARY)
    assert dumper.oid == 1009
    assert bytes(dumper.dump(values) or b"") == TextArray(values).data


def test_kept_column_names_make_the_rows_dict_row_makes(
        conn: psycopg.Connection[dict[str, object]]) -> None:
    kept = KnownColumns()
    queries = ["SELECT 1 AS a, 'x' AS b, NULL::int AS c",
               "SELECT 2 AS a, 'y' AS b, 3 AS c",   # same columns: the kept names
               "SELECT 2 AS a, 'y' AS b, 3 AS d",   # same width, another last name
               "SELECT 5 AS z",                    # another width
               "SELECT 1 AS a, 2 AS a",            # a name twice
               "SELECT 1 AS a WHERE false"]        # no row
    for query in queries:
        plain = conn.cursor(row_factory=dict_row).execute(query).fetchall()
        known = conn.cursor(row_factory=kept).execute(query).fetchall()
        assert known == plain, query
    # a statement that returns no rows at all (no columns) still works
    with conn.cursor(row_factory=kept) as cursor:
        cursor.execute("SET application_name = 'kept'")
        assert cursor.pgresult is not None
