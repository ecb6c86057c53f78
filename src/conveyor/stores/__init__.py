"""Stores: where jobs live. Chosen by URL scheme; each backend is imported only when used."""

from __future__ import annotations

from typing import Any

from conveyor.errors import ConfigurationError, ConveyorError, StoreError
from conveyor.stores.base import Store
from conveyor.stores.redaction import redact_url, scrub, url_secrets


def open_store(url: str, **options: Any) -> Store:
    """Open the store named by ``url``: ``sqlite:///file.db`` or ``postgresql://...``.

    Whatever goes wrong, the error never shows the URL's password: each backend names the URL
    redacted, and as a last line of defence any message that still holds a possible password
    (say, quoted by a library) is scrubbed here.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"Malformed store URL {redact_url(url)!r}: expected sqlite:///path/to/file.db or "
            "postgresql://user@host/db"
        )
    scheme = url.split("://", 1)[0].lower()
    try:
        return _open(scheme, url, options)
    except ConveyorError as exc:
        secrets = url_secrets(url)
        message = str(exc)
        if not any(secret in message for secret in secrets):
            raise
        kind = type(exc) if isinstance(exc, ConfigurationError | StoreError) else StoreError
        raise kind(scrub(message, secrets)) from None


def _open(scheme: str, url: str, options: dict[str, Any]) -> Store:
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
    shown = redact_url(scheme if len(scheme) <= 40 else scheme[:40] + "...")
    raise ConfigurationError(
        f"Unknown store scheme {shown!r} in {redact_url(url)!r}: use sqlite:// or postgresql://"
    )


__all__ = ["Store", "open_store"]
