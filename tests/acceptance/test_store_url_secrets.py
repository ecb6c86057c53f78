"""A password in a store URL never shows: not in an error, a log line, a traceback or CLI output.

Each URL below once printed its password somewhere (our own messages, or psycopg's quoting the
piece of the URL it could not parse). The secret text is ``SECRET...PW`` with a separator that
breaks naive parsers in between; the test checks that neither the whole password nor its
percent-decoded form appears anywhere a user or a log could see it.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import pytest

from conveyor import Conveyor, ConveyorError
from conveyor.errors import ConfigurationError
from conveyor.stores.redaction import redact_url, scrub, url_secrets
from tests.acceptance.cli_helpers import assert_one_error_line, cli_on

# (url, the password as the user meant it). Port 1 on loopback refuses at once: no test waits
# on DNS or a timeout.
HOSTILE = [
    ("postgresql://u:SECRET/PW@127.0.0.1:1/db", "SECRET/PW"),
    ("postgresql://u:SECRET?PW@127.0.0.1:1/db", "SECRET?PW"),
    ("postgresql://u:SECRET#PW@127.0.0.1:1/db", "SECRET#PW"),
    ("postgresql://u:SECRET%zzPW@127.0.0.1:1/db", "SECRET%zzPW"),
    ("postgresql://u:SECRET@PW@127.0.0.1:1/db", "SECRET@PW"),
    ("postgresql://u:SECRET:PW@127.0.0.1:1/db", "SECRET:PW"),
    ("POSTGRESQL://u:SECRETxPW@127.0.0.1:1/db", "SECRETxPW"),
    ("Postgres://u:SECRETxPW@127.0.0.1:1/db", "SECRETxPW"),
    ("postgresq://u:SECRETxPW@h/db", "SECRETxPW"),
    ("postgresql://u:SECRETxPW@[::1/db", "SECRETxPW"),
    ("postgresql://u:SECRETxPW@127.0.0.1:notaport/db", "SECRETxPW"),
    ("postgresql://u:SECRETxPW@127.0.0.1:99999/db", "SECRETxPW"),
    ("postgresql://u:SECRET%2FPW@127.0.0.1:1/db", "SECRET/PW"),
    ("postgresql://u@127.0.0.1:1/db?password=SECRETxPW", "SECRETxPW"),
    ("postgresql://u:SECRETxPW@127.0.0.1:1/db#frag", "SECRETxPW"),
    ("postgresql:/u:SECRETxPW@127.0.0.1:1/db", "SECRETxPW"),
    ("sqlite://u:SECRETxPW@h/db", "SECRETxPW"),
    ("mysql://u:SECRET/PW@h/db", "SECRET/PW"),
]
IDS = [url for url, _ in HOSTILE]


def _forbidden(secret: str) -> list[str]:
    """The password and the two halves a parser may have split it into around its separator."""
    return [secret, "SECRET", "PW@", ":PW"]


def _assert_hidden(text: str, secret: str) -> None:
    for piece in _forbidden(secret):
        assert piece not in text, f"{piece!r} shown in: {text}"


def _everything_shown(exc: BaseException) -> str:
    """What a traceback (with its chained causes) would print."""
    return "".join(traceback.format_exception(exc))


@pytest.mark.parametrize(("url", "secret"), HOSTILE, ids=IDS)
@pytest.mark.parametrize("call", ["get", "enqueue"])
def test_python_api_never_shows_the_password(url: str, secret: str, call: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = Conveyor(url)
    operations: dict[str, Callable[[], object]] = {
        "get": lambda: app.get("00000000-0000-0000-0000-000000000000"),
        "enqueue": lambda: app.enqueue("some.type", {})}
    operation = operations[call]
    try:
        with pytest.raises(ConveyorError) as raised:
            operation()
    finally:
        app.close()
    _assert_hidden(_everything_shown(raised.value), secret)
    for record in caplog.records:
        _assert_hidden(record.getMessage() + (record.exc_text or ""), secret)


@pytest.mark.parametrize(("url", "secret"), HOSTILE, ids=IDS)
def test_cli_never_shows_the_password(url: str, secret: str,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = cli_on(url, "ls")
    assert result.exit_code in (2, 4), result.output
    _assert_hidden(result.output + result.stderr, secret)
    assert "error: " in result.stderr and "Traceback" not in result.stderr
    for record in caplog.records:
        _assert_hidden(record.getMessage() + (record.exc_text or ""), secret)


@pytest.mark.parametrize("url", ["postgresql://u@127.0.0.1:notaport/db",
                                 "postgresql://u@127.0.0.1:99999/db",
                                 "postgresql://u@127.0.0.1:0/db",
                                 "postgresql://u@127.0.0.1:5432,h2:x/db"])
def test_a_malformed_port_is_a_configuration_error(url: str) -> None:
    app = Conveyor(url)
    try:
        with pytest.raises(ConfigurationError, match="port"):
            app.get("x")
    finally:
        app.close()
    result = cli_on(url, "ls")
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "port")


def test_ambiguous_userinfo_is_refused_with_advice_to_percent_encode() -> None:
    app = Conveyor("postgresql://u:SECRET/PW@127.0.0.1:1/db")
    try:
        with pytest.raises(ConfigurationError, match="percent-encode"):
            app.get("x")
    finally:
        app.close()


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:pw@h:5/db", "postgresql://u:***@h:5/db"),
    ("postgresql://u:a/b@h/db", "postgresql://***@h/db"),
    ("postgresql://u@h/db?sslmode=require&password=x&a=b",
     "postgresql://u@h/db?sslmode=require&password=***&a=b"),
    ("u:pw@h/db", "***@h/db"),
    ("postgresql://h/db", "postgresql://h/db"),
])
def test_redacted_urls_keep_what_is_not_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_withholds_a_message_holding_a_short_password() -> None:
    secrets = url_secrets("postgresql://u:ab%41@h/db")
    assert {"ab%41", "abA"} <= secrets
    assert scrub('bad token "ab%41" in port', secrets) == 'bad token "***" in port'
    assert "ab" not in scrub("port ab is bad", url_secrets("postgresql://u:ab@h/db"))
