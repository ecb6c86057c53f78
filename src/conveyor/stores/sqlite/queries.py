"""The statements of ``queries.sql``, loaded once for the store and the mixins that share them.

One dict, not one per module: a test that runs an older schema swaps a statement in it
(``tests/integration/test_sqlite_migration.py``), and the swap must reach every module that
runs that statement.
"""

from __future__ import annotations

from conveyor.stores.sqlfiles import load_queries

QUERIES = load_queries("conveyor.stores.sqlite")
