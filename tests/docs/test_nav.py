"""Every page under docs/ is reachable from the site's navigation.

``make docs --strict`` refuses a page left out of ``nav``, but ``make test`` does not build the
site; this check keeps a new page from reaching ``main`` unlisted.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _nav_pages(config: str) -> set[str]:
    nav = config.split("\nnav:\n", 1)[1]
    return set(re.findall(r":\s*([\w./-]+\.md)\s*$", nav, flags=re.MULTILINE))


def test_every_docs_page_is_in_the_navigation() -> None:
    listed = _nav_pages((ROOT / "mkdocs.yml").read_text())
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    # The other way round is not checked here: docs_src/hooks.py writes some reference pages
    # at build time, and --strict catches a nav entry with no page.
    assert pages - listed == set(), "pages missing from mkdocs.yml nav"


def test_a_page_left_out_is_noticed() -> None:
    config = "site_name: x\nnav:\n  - Home: index.md\n  - Guides:\n      - A: how-to/a.md\n"
    assert _nav_pages(config) == {"index.md", "how-to/a.md"}
