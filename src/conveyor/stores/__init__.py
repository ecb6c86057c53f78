"""Stores: where jobs live. Chosen by URL scheme; each backend is imported only when used."""

from __future__ import annotations

from typing import Any

from conveyor.errors import ConfigurationError
from conveyor.stores.base import Store


def open_store(url: str, **options: Any) -> Store:
    """Open the store named by ``url``: ``sqlite:///file.db`` or ``postgresql://...``."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"Malformed store URL {url!r}: expected sqlite:///path/to/file.db or "
            "postgresql://user@host/db"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        from conveyor.stores.sqlite import SQLiteStore

        return SQLiteStore(url, **options)
    if scheme in ("postgresql", "postgres"):
        try:
            from conveyor.stores.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ConfigurationError(
                "The PostgreSQL store needs psycopg: pip install 'conveyor[postgres]'"
            ) from exc
        store: Store = PostgresStore(url, **options)
        return store
    raise ConfigurationError(
        f"Unknown store scheme {scheme!r} in {url!r}: use sqlite:// or postgresql://"
    )


__all__ = ["Store", "open_store"]
