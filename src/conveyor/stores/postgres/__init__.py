"""The PostgreSQL store: many workers on many machines (``pip install 'conveyor[postgres]'``)."""

from conveyor.stores.postgres.store import LATEST_VERSION, PostgresStore

__all__ = ["LATEST_VERSION", "PostgresStore"]
