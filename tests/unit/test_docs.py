"""The docs' lifecycle diagram and verbs table are the lifecycle tables: regenerate and compare."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.lifecycle import TRANSITION_TABLE, mermaid_diagram, verbs_markdown

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("doc", ["README.md", "docs/lifecycle.md"])
def test_diagram_in_docs_matches_the_table(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert f"```mermaid\n{mermaid_diagram()}\n```" in text


def test_lifecycle_doc_has_a_row_per_transition() -> None:
    text = (ROOT / "docs/lifecycle.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip() + "->" + line.split("|")[2].strip()
            for line in text.splitlines()
            if line.startswith("| ") and line.count("|") >= 6}
    table = {f"{t.source.value}->{t.target.value}" for t in TRANSITION_TABLE}
    assert table <= rows


def test_verbs_table_in_docs_matches_the_table() -> None:
    text = (ROOT / "docs/lifecycle.md").read_text(encoding="utf-8")
    assert f"\n{verbs_markdown()}\n" in text
