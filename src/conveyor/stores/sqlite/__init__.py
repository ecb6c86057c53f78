"""The embedded SQLite store (the default)."""

from conveyor.stores.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
