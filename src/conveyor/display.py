"""Make untrusted text safe to show: nothing in it may act on the terminal or the page.

Job types, queues, reasons, actors and errors come from users and jobs. Shown raw, an ESC
sequence could recolour or erase a terminal line, and a Unicode bidi override (U+202E) could
reorder what an operator reads (``gpj.exe`` shown as ``exe.jpg``). ``visible`` turns every
such character into a visible escape instead, so what is shown is what is stored, one line,
in its real order. Both the CLI and the dashboard use it; HTML escaping is a separate, later
step (this module knows nothing about markup).
"""

from __future__ import annotations

import unicodedata

__all__ = ["visible"]

# Categories that never print as themselves: controls (C0, DEL, C1), format characters
# (bidi embeddings/overrides/isolates, LRM/RLM, zero-width space, BOM, tag characters),
# surrogates, and the line/paragraph separators that break a line like a newline would.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

# Joiners shape emoji sequences and Indic/Arabic scripts; they neither reorder nor hide text
# when they sit between two non-ASCII characters, so only there are they kept as they are.
_JOINERS = frozenset({"\u200c", "\u200d"})


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _joins(text: str, index: int) -> bool:
    """A joiner between two non-ASCII characters (an emoji ZWJ sequence, a script's shaping)."""
    if index == 0 or index == len(text) - 1:
        return False
    return ord(text[index - 1]) > 0x7F and ord(text[index + 1]) > 0x7F


def visible(text: object) -> str:
    """``str(text)`` with every control, bidi or invisible format character as a ``\\x``/``\\u``
    escape; printable text (any script, emoji) is returned unchanged."""
    value = text if isinstance(text, str) else str(text)
    if value.isprintable():
        return value  # the common case: nothing to look at twice
    out: list[str] = []
    for index, char in enumerate(value):
        if char in _JOINERS and _joins(value, index):
            out.append(char)
        elif unicodedata.category(char) in _HIDDEN:
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)
