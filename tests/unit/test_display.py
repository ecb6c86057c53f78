"""visible(): untrusted text is shown as stored, one line, in its real order."""

from __future__ import annotations

import pytest

from conveyor.display import visible


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred", "\\x1b[31mred"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("a\tb\nc\rd\x00", "a\\x09b\\x0ac\\x0dd\\x00"),
        ("\x7f\x85\x9b", "\\x7f\\x85\\x9b"),
        ("\u202egpj.exe", "\\u202egpj.exe"),
        ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200eL\u200fR", "\\u200eL\\u200fR"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("lone\udc80", "lone\\udc80"),
        ("ad\u200dmin", "ad\\u200dmin"),
        ("\u200dedge", "\\u200dedge"),
    ],
)
def test_hidden_characters_are_escaped(raw: str, shown: str) -> None:
    assert visible(raw) == shown
    assert visible(raw).isprintable()


@pytest.mark.parametrize(
    "text",
    [
        "plain", "日本語のジョブ", "émigré", "emoji 🚀", "👨\u200d👩\u200d👧", "नमस्ते",
        "C:\\path", "nb\u00a0sp",
    ],
)
def test_printable_text_is_unchanged(text: str) -> None:
    assert visible(text) == text


def test_non_strings_are_converted() -> None:
    assert visible(42) == "42"
    assert visible(None) == "None"
