"""Bar charts of the benchmark tables, drawn at build time as inline SVG.

``make bench`` rewrites the tables of docs/benchmarks.md between ``<!-- bench:NAME -->`` and
``<!-- /bench -->``; the plots are drawn from those very tables when the site is built, so a
plot can never disagree with its table, and the page needs no plotting library or image file.
"""

from __future__ import annotations

import html
import re

#: block name -> (columns that label a row, columns plotted as bars, what the bars measure)
CHARTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], str]] = {
    "claim": ((0,), (2, 3), "milliseconds per claim (lower is better)"),
    "throughput": ((0, 1), (2, 4), "jobs per second: conveyor beside the hand-written loop"),
    "latency": ((0,), (3, 4), "pickup latency in milliseconds (lower is better)"),
    "enqueue": ((0,), (1, 2, 4), "jobs enqueued per second"),
    "sqlite-sync": ((0,), (1, 2, 3, 4), "operations per second, SQLite NORMAL against FULL"),
}
COLOURS = ("#3f51b5", "#ff9800", "#009688", "#9c27b0")
_BLOCK = re.compile(r"(<!-- bench:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /bench -->)", re.S)
ROW, BAR, LABEL_W, PLOT_W = 22, 14, 260, 420


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _number(text: str) -> float | None:
    match = re.match(r"^[\d,]*\.?\d+", text.replace("x", "").replace("%", ""))
    return float(match.group(0).replace(",", "")) if match else None


def chart(name: str, table: str) -> str:
    """An SVG grouped bar chart of the first table in a block, or "" if it cannot be drawn."""
    labels_at, values_at, title = CHARTS[name]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    if len(lines) < 3:
        return ""
    header, rows = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    rows = [row for row in rows if len(row) == len(header)]
    groups = [(" / ".join(row[i] for i in labels_at), [_number(row[i]) for i in values_at])
              for row in rows]
    top = max((v for _, values in groups for v in values if v is not None), default=0.0)
    if not groups or top <= 0:
        return ""
    parts, y = [], 30
    for label, values in groups:
        parts.append(f'<text x="0" y="{y + BAR}" font-size="12">{html.escape(label)}</text>')
        for k, value in enumerate(values):
            if value is None:
                continue
            width = max(1.0, PLOT_W * value / top)
            parts.append(f'<rect x="{LABEL_W}" y="{y}" width="{width:.1f}" height="{BAR - 2}" '
                         f'fill="{COLOURS[k % len(COLOURS)]}"/>')
            parts.append(f'<text x="{LABEL_W + width + 4:.1f}" y="{y + BAR - 4}" '
                         f'font-size="11">{value:,.6g}</text>')
            y += BAR
        y += ROW - BAR + 6
    legend = "".join(
        f'<rect x="{LABEL_W + 150 * k}" y="{y + 4}" width="10" height="10" '
        f'fill="{COLOURS[k % len(COLOURS)]}"/><text x="{LABEL_W + 150 * k + 14}" y="{y + 13}" '
        f'font-size="11">{html.escape(header[i][:24])}</text>' for k, i in enumerate(values_at))
    height = y + 24
    width = max(LABEL_W + PLOT_W + 80, LABEL_W + 150 * len(values_at) + 20)
    return (f'<figure class="bench-plot" style="display:block;margin:1em 0">'
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" style="max-width:100%;height:auto">'
            f'<text x="0" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>'
            f'{"".join(parts)}{legend}</svg></figure>\n')


def add_plots(markdown: str) -> str:
    """The page with a chart after each benchmark table that has one."""
    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        plot = chart(name, match["body"]) if name in CHARTS else ""
        return match.group(1) + ("\n\n" + plot if plot else "")
    return _BLOCK.sub(replace, markdown)
