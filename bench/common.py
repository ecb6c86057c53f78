"""Helpers shared by the benchmarks: timing and table printing (Rich)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

console = Console()


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


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    out = Table(title=title)
    for column in columns:
        out.add_column(column, justify="right")
    for row in rows:
        out.add_row(*(str(c) for c in row))
    console.print(out)
