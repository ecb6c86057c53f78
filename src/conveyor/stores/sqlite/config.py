"""Where the SQLite store lives and how it meets the file: URL, file mode, locks, migrations.

A database file is marked as conveyor's by ``PRAGMA application_id``; a file that holds other
tables, or that a newer conveyor migrated, is refused before anything is written to it (the
store's ``_check_foreign``, with the queries in ``queries.sql``).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import parse_qsl

from conveyor.errors import ConfigurationError, StoreError

APPLICATION_ID = 0x434F4E56  # "CONV": marks a file as a conveyor database
#: A new database file's mode; SQLite gives its -wal and -shm files the same one.
FILE_MODE = 0o600


_SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}


def parse_sqlite_url(url: str) -> str:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite://:memory:``.

    The one option, ``?synchronous=full|normal``, is read by :func:`sqlite_synchronous`.
    """
    if not url.startswith("sqlite://"):
        raise ConfigurationError(f"Not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    rest = url[len("sqlite://"):].split("?", 1)[0]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise ConfigurationError(
            f"Malformed SQLite URL {url!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = rest[1:]
    if "#" in url:
        raise ConfigurationError(f"Malformed SQLite URL {url!r}: '#' is not allowed")
    return path


def sqlite_synchronous(url: str) -> str:
    """The ``PRAGMA synchronous`` level a SQLite URL asks for: NORMAL unless ``?synchronous=``.

    NORMAL (in WAL mode) survives a crash of the process but may lose the last commits on a
    power failure; FULL syncs the WAL at every commit. docs/workers.md says what each costs.
    """
    query = url.split("?", 1)[1] if "?" in url else ""
    if not query:
        return _SYNCHRONOUS["normal"]
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        pairs = [("", query)]
    names = [name for name, _ in pairs]
    if names != ["synchronous"] or pairs[0][1].lower() not in _SYNCHRONOUS:
        raise ConfigurationError(
            f"Bad options in SQLite URL {url!r}: the only option is synchronous=full or "
            "synchronous=normal (given once)")
    return _SYNCHRONOUS[pairs[0][1].lower()]


def create_private(path: str) -> None:
    """Create a missing database file readable by its owner only, whatever the umask.

    Jobs' params and results may be private. SQLite would create the file with 0644 (less the
    umask); it creates -wal and -shm with the main file's mode, so those follow. An existing
    file keeps the mode its owner gave it.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"Cannot create SQLite store file {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, FILE_MODE)  # os.open's mode is filtered by the umask
    finally:
        os.close(fd)


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for another connection's lock (worth retrying)."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def split_sql(script: str) -> list[str]:
    """Split a migration into statements, so it runs inside our transaction.

    ``executescript`` would commit first, which would break the one-transaction migration.
    """
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not current.strip():
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def outbox_connection(connection: object, path: str) -> sqlite3.Connection:
    """The caller's connection for ``enqueue(connection=...)``, if it is one to the file at
    ``path``; a connection to another file (or to memory) would hide its jobs from workers."""
    if not isinstance(connection, sqlite3.Connection):
        raise ConfigurationError(
            "connection= must be a sqlite3.Connection to the store's file, not "
            f"{type(connection).__name__}")
    try:
        files = [row[2] for row in connection.execute("PRAGMA database_list") if row[1] == "main"]
    except sqlite3.Error as exc:
        raise ConfigurationError(f"connection= cannot be used: {exc}") from exc
    main = files[0] if files else ""
    same = bool(main) and path != ":memory:" and Path(path).exists() and Path(main).samefile(
        path)
    if not same:
        raise ConfigurationError(
            f"connection= is to {main or 'an in-memory database'!s}, not the store's file "
            f"{path}: enqueue in a transaction on the store's own file")
    return connection


def autocommits(connection: sqlite3.Connection) -> bool:
    """Whether the connection commits each statement by itself (so has no transaction for the
    jobs to join): ``isolation_level=None``, or ``autocommit=True`` (Python 3.12+)."""
    mode = getattr(connection, "autocommit", None)
    if mode is True:
        return True
    return mode is not False and connection.isolation_level is None
