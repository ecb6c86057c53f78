"""Keeping passwords in store URLs out of every message, log line and CLI output.

A store URL is typed by people, so it is often not the URL its parser expects: a password with
an unencoded ``/``, ``?``, ``#`` or ``@``, a broken percent escape, an upper-case or misspelled
scheme, a broken host. Each parser (ours, libpq's, psycopg's) then splits it differently, and
error texts quote whatever piece it thought was the host, port or whole string. So redaction
does not trust any one parse: :func:`redact_url` hides everything that *could* be a password
(when in doubt, all of ``scheme://...@`` up to the last ``@``), and :func:`scrub` removes every
candidate password, raw and percent-decoded, from texts that others wrote (a library's error).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"
#: Characters that end the authority of a URL: one of them before the last ``@`` means the
#: userinfo cannot be told apart from the path, query or fragment.
_AUTHORITY_END = re.compile(r"[/?#]")
_QUERY_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('[^']*'|[^&#\s]*)")
#: Below this length a password is too likely to occur by chance in a message to be replaced
#: piecemeal: a message that contains it is withheld instead.
_MIN_REPLACEABLE = 4


def _split(url: str) -> tuple[str, str]:
    """``(scheme + separator, rest)``; a URL without ``://`` has no scheme to keep."""
    head, sep, rest = url.partition("://")
    return (head + sep, rest) if sep else ("", url)


def redact_url(url: object) -> str:
    """``url`` fit for a message: no password, whatever shape the URL has.

    A plain ``user:password@host`` keeps the user name. When the userinfo is ambiguous (a
    ``/``, ``?``, ``#`` or another ``@`` before the last ``@``), everything between ``://``
    and the last ``@`` is hidden. ``password=`` parameters are hidden too.
    """
    text = url if isinstance(url, str) else repr(url)
    prefix, rest = _split(text)
    at = rest.rfind("@")
    if at >= 0:
        userinfo, host = rest[:at], rest[at:]
        if _AUTHORITY_END.search(userinfo) or "@" in userinfo or not prefix:
            rest = MASK + host
        elif ":" in userinfo:
            rest = userinfo.split(":", 1)[0] + ":" + MASK + host
    return prefix + _QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK, rest)


def ambiguous_password(url: str) -> bool:
    """Whether ``url`` may hold a password that parsers would split in different places."""
    _, rest = _split(url)
    at = rest.rfind("@")
    if at < 0:
        return False
    userinfo = rest[:at]
    return ":" in userinfo and ("@" in userinfo or bool(_AUTHORITY_END.search(userinfo)))


def url_secrets(url: object) -> frozenset[str]:
    """Every text of ``url`` that some parser could take for its password.

    For each ``@`` after the first ``:`` of the userinfo, the text between them (libpq stops at
    the first ``@``, a person means the last); the ``password=`` values; and the
    percent-decoded form of each.
    """
    if not isinstance(url, str):
        return frozenset()
    _, rest = _split(url)
    found: set[str] = set()
    colon = rest.find(":")
    if colon >= 0:
        for match in re.finditer("@", rest[colon + 1:]):
            found.add(rest[colon + 1:colon + 1 + match.start()])
    for match in _QUERY_PASSWORD.finditer(url):
        found.add(match.group(2).strip("'"))
    decoded = {unquote(secret) for secret in found}
    return frozenset(s for s in found | decoded if s)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any of ``secrets`` (longest first, so no fragment of one survives)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret not in text:
            continue
        if len(secret) < _MIN_REPLACEABLE:
            return "(details withheld: they might contain the password)"
        text = text.replace(secret, MASK)
    return text


def leaks(text: str, url: object) -> bool:
    """Whether ``text`` contains anything :func:`url_secrets` would hide."""
    return any(secret in text for secret in url_secrets(url))
