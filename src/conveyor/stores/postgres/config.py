"""Connection settings of the PostgreSQL store: URL, schema, and how failures are worded.

The store keeps all its tables in one schema (``conveyor`` unless told otherwise), so that two
applications, or two test runs, can share a database without seeing each other's jobs. The
schema is set as each connection's ``search_path`` at connect time, which lets the ``.sql``
files use plain table names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from conveyor.errors import ConfigurationError
from conveyor.stores.redaction import ambiguous_password, redact_url, scrub, url_secrets

DEFAULT_SCHEMA = "conveyor"
#: Lowercase, unquoted-identifier names only: they appear in search_path and in the NOTIFY
#: channel name (which must stay within PostgreSQL's 63-byte identifier limit).
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_SCHEMES = ("postgresql://", "postgres://")
#: Connection settings added unless the URL gives its own. A call on a connection whose
#: packets are silently dropped (a half-open partition: no RST) must fail well within a lease
#: (30 s by default), or the worker cannot renew its leases: tcp_user_timeout (ms) bounds how
#: long sent data may stay unacknowledged, and the keepalives (which tcp_user_timeout also
#: bounds) cover a call whose request went through but whose reply never comes.
_DEFAULTS = {
    "connect_timeout": "10",
    "application_name": "conveyor",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}
#: Server-side bounds of every session, in ms (options in the URL may override them): nothing
#: waits on a lock, runs, or holds a transaction open for long, so a worker that vanished in
#: the middle of a transaction releases its row locks within seconds, not at TCP's ~15 minutes.
SESSION_BOUNDS = {
    "statement_timeout": 10_000,
    "lock_timeout": 5_000,
    "idle_in_transaction_session_timeout": 10_000,
}


@dataclass(frozen=True)
class PgSettings:
    """Everything the store needs to connect, worked out once from the URL."""

    url: str
    safe_url: str
    schema: str
    conninfo: str
    #: Every text of the URL that could be its password: scrubbed from libpq's messages.
    secrets: frozenset[str] = field(default=frozenset(), repr=False)

    def __repr__(self) -> str:
        return f"PgSettings(safe_url={self.safe_url!r}, schema={self.schema!r})"

    @property
    def channel(self) -> str:
        """The NOTIFY channel: one per schema, so stores in other schemas are not woken."""
        return f"conveyor_{self.schema}_work"

    @property
    def stop_channel(self) -> str:
        """Where a job that stops (finishes or pauses) is announced, its id as the payload."""
        return f"conveyor_{self.schema}_stop"


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, fit for messages and logs."""
    return redact_url(url)


def parse_url(url: str, schema: str = DEFAULT_SCHEMA) -> PgSettings:
    """Check ``url`` and build the libpq connection string.

    ``?schema=name`` in the URL is ours, not libpq's, so it is taken out before psycopg sees
    the URL. Giving a schema both in the URL and as an option is allowed only if they agree.
    Every error names the URL without its password, and libpq's own words about it are
    scrubbed of it too (libpq quotes the piece of the URL it could not parse).
    """
    if not isinstance(url, str) or not url.lower().startswith(_SCHEMES):
        raise ConfigurationError(
            f"Not a PostgreSQL URL: {redact(str(url))!r} (expected postgresql://user@host/db)"
        )
    safe = redact(url)
    secrets = url_secrets(url)
    if ambiguous_password(url):
        raise ConfigurationError(
            f"Malformed PostgreSQL URL {safe!r}: the user or password holds a '/', '?', '#' "
            "or '@'; percent-encode them (%2F, %3F, %23, %40)")
    scheme, _, rest = url.partition("://")
    base, _, query = (scheme.lower() + "://" + rest).partition("?")
    query, _, fragment = query.partition("#")
    if fragment:
        raise ConfigurationError(f"Malformed PostgreSQL URL {safe!r}: unexpected '#'")
    kept: list[str] = []
    from_url: list[str] = []
    for part in filter(None, query.split("&")):
        key = part.partition("=")[0]
        if key == "schema":
            from_url.extend(value for _, value in parse_qsl(part, keep_blank_values=True))
        else:
            kept.append(part)
    chosen = _choose_schema(safe, schema, from_url)
    libpq_url = base + ("?" + "&".join(kept) if kept else "")
    try:
        params = conninfo_to_dict(libpq_url)
    except psycopg.Error as exc:
        # from None: the original exception's text may quote the password
        raise ConfigurationError(
            f"Malformed PostgreSQL URL {safe!r}: {describe(exc, secrets)}") from None
    _check_ports(safe, str(params.get("port") or ""))
    for key, value in _DEFAULTS.items():
        params.setdefault(key, value)
    # search_path pins every unqualified name to our schema; TimeZone=UTC makes timestamps
    # come back in UTC whatever the server's default is.
    # The session bounds come first, so the URL's own options (later, so winning) may change
    # them; search_path and TimeZone come last, so nothing can change those.
    bounds = " ".join(f"-c {name}={ms}" for name, ms in SESSION_BOUNDS.items())
    extra = f"-c search_path={chosen} -c TimeZone=UTC"
    existing = str(params.get("options") or "").strip()
    params["options"] = " ".join(part for part in (bounds, existing, extra) if part)
    return PgSettings(url=url, safe_url=safe, schema=chosen,
                      conninfo=make_conninfo("", **params), secrets=secrets)


def _check_ports(safe_url: str, ports: str) -> None:
    """A bad port is the user's mistake, not an outage: say so before trying to connect."""
    for port in ports.split(","):
        if port == "":
            continue
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigurationError(
                f"Malformed PostgreSQL URL {safe_url!r}: port {port[:20]!r} is not a number "
                "from 1 to 65535")


def _choose_schema(safe_url: str, option: str, from_url: list[str]) -> str:
    if len(from_url) > 1:
        raise ConfigurationError(f"PostgreSQL URL {safe_url!r} gives schema more than once")
    chosen = option
    if from_url:
        if option not in (DEFAULT_SCHEMA, from_url[0]):
            raise ConfigurationError(
                f"PostgreSQL URL {safe_url!r} asks for schema {from_url[0]!r} but the schema "
                f"option says {option!r}; give it once"
            )
        chosen = from_url[0]
    if not _SCHEMA_NAME.fullmatch(chosen):
        raise ConfigurationError(
            f"Invalid schema name {chosen!r}: use 1-48 lowercase letters, digits and "
            "underscores, not starting with a digit"
        )
    return chosen


def describe(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One line saying what went wrong, from psycopg's multi-line libpq messages.

    libpq repeats where it tried to connect ("connection to server at ... failed:") and adds
    hints on separate lines; the URL in our message already says where, so keep the reasons.
    ``secrets`` (the URL's possible passwords) are scrubbed out of the text.
    """
    reasons: list[str] = []
    for raw in str(exc).splitlines():
        line = raw.strip()
        line = re.sub(r"^connection failed:\s*", "", line)
        line = re.sub(r"^connection to server (at|on) .*? failed:\s*", "", line)
        line = re.sub(r"^(FATAL|ERROR):\s*", "", line)
        if line.startswith("Is the server running"):
            line = "is the server running and accepting connections there?"
        if line and line not in reasons:
            reasons.append(line)
    return scrub("; ".join(reasons), secrets) or type(exc).__name__
