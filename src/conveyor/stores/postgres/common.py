"""What the PostgreSQL store and its mixins share: the named statements and a statement runner.

The store's job operations are split over several modules (the store and its mixins); they
read one dict of statements from ``queries.sql`` and run them through one helper, kept here
so that a mixin never imports the store module it is mixed into.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, dict_row

from conveyor.stores.sqlfiles import load_queries

PACKAGE = "conveyor.stores.postgres"
QUERIES = load_queries(PACKAGE)

Conn = psycopg.Connection[TupleRow]
Row = dict[str, Any]


def fetch_rows(conn: Conn, query: str | sql.SQL | sql.Composed,
               params: Mapping[str, Any] | None = None, *, binary: bool = False
               ) -> list[Row]:
    """Run one statement and return its rows as dicts (none for a statement without rows);
    ``binary``: results in binary format (times and numbers decode several times faster)."""
    statement = sql.SQL(query) if isinstance(query, str) else query
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(statement, params, binary=binary)
        return cur.fetchall() if cur.description is not None else []
