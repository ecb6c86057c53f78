"""Helpers shared by the benchmarks: timing and table printing (Rich)."""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(width=150)


def timed(op: Callable[[], object], repeat: int) -> list[float]:
    """Per-call wall times in seconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        op()
        samples.append(time.perf_counter() - start)
    return samples


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Print the table (Rich) and return it as markdown."""
    out = Table(title=title)
    for column in columns:
        out.add_column(column, justify="right")
    for row in rows:
        out.add_row(*(str(c) for c in row))
    console.print(out)
    return markdown(columns, rows)


def markdown(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The same table as GitHub markdown, for the generated sections of docs/benchmarks.md."""
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_sections(path: Path, sections: dict[str, str]) -> None:
    """Replace each ``<!-- bench:NAME -->`` ... ``<!-- /bench -->`` block with fresh text.

    Only the text between markers is generated; the prose around it is written by hand and
    kept. A marker missing from the page is an error, so a renamed section is not lost silently.
    """
    text = path.read_text()
    for name, body in sections.items():
        pattern = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench -->)",
                             re.DOTALL)
        match = pattern.search(text)
        if match is None:
            raise SystemExit(f"{path}: no <!-- bench:{name} --> ... <!-- /bench --> section")
        text = (text[:match.start()] + match.group(1) + body.strip() + "\n" + match.group(2)
                + text[match.end():])
    path.write_text(text)


def bench_arguments(doc: str | None, quick: str) -> argparse.ArgumentParser:
    """Every benchmark's two options: ``--quick`` (saying what it shortens) and ``--docs``."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--docs", type=Path, help="rewrite this page's generated sections")
    return parser
