"""Finds and runs the code examples of the README and the docs, so that a broken one fails.

A page's examples run in order, in one empty folder, as a reader would type them: ``python``
blocks in one shared namespace (so a later block sees an earlier one's names), ``sh`` blocks
with bash (``-e -u -o pipefail``) in the same folder and environment. A ``python`` block whose
first line is ``# NAME.py`` is the file a reader saves: it is written, not run. Blocks of
other languages (output, config files) are not run. A ``python`` block with a top-level
``await`` runs on an event loop of its own, as in ``python -m asyncio``.

Markers, in an HTML comment on the line before a block (invisible on the page):

- ``<!-- example: skip: REASON -->``: not run (the reason is required: a server to name, a
  package to install, a process that runs forever);
- ``<!-- example: postgres -->`` anywhere on a page: its examples run with ``CONVEYOR_STORE``
  set to a fresh schema of the test PostgreSQL server;
- ``<!-- example: files-from PAGE -->`` anywhere on a page: the ``# NAME.py`` files of that
  page (same folder) are written first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_LANGUAGES = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^\n`]*)$")
_MARKER = re.compile(r"<!--\s*example:\s*(?P<body>.*?)\s*-->")
_FILE_LINE = re.compile(r"^#\s*(?P<name>[\w./-]+\.py)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, with where it starts (for messages)."""

    page: Path
    line: int
    language: str
    code: str
    skip_reason: str | None

    @property
    def kind(self) -> str:
        return RUN_LANGUAGES.get(self.language, "")

    @property
    def file_name(self) -> str | None:
        """The file a ``# NAME.py`` block stands for, or None for code to run."""
        first = self.code.split("\n", 1)[0]
        match = _FILE_LINE.match(first) if self.kind == "python" else None
        return match["name"] if match else None

    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a page, with the skip marker that precedes it, if any."""
    lines = page.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        language = opening["info"].strip().split(" ")[0].lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        found.append(Block(page, i + 1, language, "\n".join(body) + "\n", _skip_reason(lines, i)))
        i = j + 1
    return found


def _skip_reason(lines: list[str], fence_index: int) -> str | None:
    """The reason of a ``skip`` marker on the nearest non-blank line above the fence."""
    k = fence_index - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    marker = _MARKER.search(lines[k]) if k >= 0 else None
    if marker and marker["body"].startswith("skip"):
        return marker["body"].removeprefix("skip").lstrip(":").strip()
    return None


def files_from(page: Path) -> list[Path]:
    """The pages whose ``# NAME.py`` files this page builds on."""
    text = page.read_text(encoding="utf-8")
    return [page.parent / m["body"].removeprefix("files-from").strip()
            for m in _MARKER.finditer(text) if m["body"].startswith("files-from")]


def pages() -> list[Path]:
    """The README and every Markdown page of the docs."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def needs_postgres(page: Path) -> bool:
    """Whether the page's examples run against PostgreSQL (``<!-- example: postgres -->``):
    the tests then set ``CONVEYOR_STORE`` to a fresh schema of the test server."""
    return any(m["body"] == "postgres"
               for m in _MARKER.finditer(page.read_text(encoding="utf-8")))
