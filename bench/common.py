"""Helpers shared by the benchmarks: timing and table printing (Rich)."""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

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


class Steps(Protocol):
    """A rate measured a chunk at a time: ``step(count)`` does ``count`` more of its work and
    returns the seconds they took (its own set-up for them outside the clock)."""

    def step(self, count: int) -> float: ...


def interleaved(steps: Mapping[str, Steps], total: int, chunk: int) -> dict[str, float]:
    """Each rate of ``steps`` over ``total`` operations, run in turns of ``chunk``: per
    second, the operations over the sum of their chunks' seconds. Why: on a shared machine,
    or with a database whose commits drift (durable PostgreSQL's flush time moved 2x within
    minutes here), rates measured one after the other, even seconds apart, compare the drift
    more than the work; chunks a few milliseconds long, their order rotated at each turn, see
    the same drift. Compare them as ratios."""
    names = list(steps)
    spent = dict.fromkeys(names, 0.0)
    done = 0
    for turn in range(max(1, -(-total // chunk))):
        count = min(chunk, total - done)
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            spent[name] += steps[name].step(count)
        done += count
    return {name: done / seconds for name, seconds in spent.items()}


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
