"""The dashboard overview: throughput and queue depth over the last hour, and jobs per queue.

The charts are inline SVG drawn here, on the server: no script, no chart library and nothing
fetched from elsewhere, so the dashboard works offline and under its strict CSP (colours come
from classes in ``dashboard.css``, never from inline styles). Every number is a minute of the
store's clock: throughput from the index on ``finished_at``, queue depth from the per-minute
samples workers (and this page) record (:meth:`Store.record_depth`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor.app import Conveyor
from conveyor.lifecycle import JobState
from conveyor.model import QueueInfo
from conveyor.web.templates import Markup, join, render

MINUTES = 60
OUTCOMES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
QUEUE_STATES = (JobState.PENDING, JobState.RUNNING, JobState.PAUSED, JobState.FAILED)
_WIDTH, _HEIGHT, _BAR = 600, 120, 10


@dataclass(frozen=True)
class Overview:
    """The overview's numbers: per minute (oldest first) and per queue."""

    start: datetime
    throughput: list[dict[JobState, int]]
    pending: list[int | None]
    running: list[int | None]
    queues: list[QueueInfo]

    def counts(self) -> dict[JobState, int]:
        """Jobs per state over every queue."""
        total = dict.fromkeys(JobState, 0)
        for queue in self.queues:
            for state, n in queue.counts.items():
                total[JobState(state)] += n
        return total


def read_overview(app: Conveyor) -> Overview:
    """Record this minute's depth sample if nobody has, then read the last hour (blocking)."""
    store = app.store
    store.record_depth()
    now = store.now()
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=MINUTES - 1)
    throughput: list[dict[JobState, int]] = [{} for _ in range(MINUTES)]
    for minute, state, n in store.finished_per_minute(start):
        index = _index(start, minute)
        if index is not None:
            throughput[index][state] = throughput[index].get(state, 0) + n
    pending: list[int | None] = [None] * MINUTES
    running: list[int | None] = [None] * MINUTES
    for minute, _queue, waiting, busy in store.depth_samples(start):
        index = _index(start, minute)
        if index is not None:
            pending[index] = (pending[index] or 0) + waiting
            running[index] = (running[index] or 0) + busy
    return Overview(start, throughput, pending, running, app.queues())


def _index(start: datetime, minute: datetime) -> int | None:
    index = int((minute - start).total_seconds() // 60)
    return index if 0 <= index < MINUTES else None


def overview_html(data: Overview) -> Markup:
    return render(OVERVIEW, throughput=throughput_chart(data), depth=depth_chart(data),
                  queues=queue_table(data.queues))


def throughput_chart(data: Overview) -> Markup:
    """Stacked bars, one per minute: completed, failed and cancelled."""
    top = max([sum(counts.values()) for counts in data.throughput] + [1])
    bars: list[Markup] = []
    for index, counts in enumerate(data.throughput):
        if not counts:
            continue
        y = float(_HEIGHT)
        rects = []
        for state in OUTCOMES:
            height = counts.get(state, 0) / top * _HEIGHT
            if height:
                y -= height
                rects.append(render('<rect class="{state}" x="{x}" y="{y}" width="{w}" '
                                    'height="{h}"></rect>', state=state.value,
                                    x=index * _BAR + 1, y=f"{y:.1f}", w=_BAR - 2,
                                    h=f"{height:.1f}"))
        label = ", ".join(f"{counts.get(s, 0)} {s.value}" for s in OUTCOMES)
        bars.append(render('<g class="bar" data-minute="{minute}" data-total="{total}">'
                           '<title>{time}: {label}</title>{rects}</g>',
                           minute=index, total=sum(counts.values()), label=label,
                           time=_clock(data.start, index), rects=join(rects)))
    legend = join([render('<span class="key {s}">{s}</span>', s=s.value) for s in OUTCOMES])
    return _svg("throughput", "Jobs finished per minute, last hour", top, join(bars), legend)


def depth_chart(data: Overview) -> Markup:
    """Lines of pending and running jobs, from the minutes sampled (gaps where none was)."""
    top = max([v for v in [*data.pending, *data.running] if v is not None] + [1])
    lines = [_line(name, values, top) for name, values in
             (("pending", data.pending), ("running", data.running))]
    legend = join([render('<span class="key {s}">{s}</span>', s=s) for s in ("pending",
                                                                            "running")])
    return _svg("depth", "Jobs waiting and running, sampled each minute", top, join(lines),
                legend)


def _line(name: str, values: Sequence[int | None], top: int) -> Markup:
    runs: list[list[str]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            runs.append([])
            continue
        x = index * _BAR + _BAR / 2
        runs[-1].append(f"{x:.0f},{_HEIGHT - value / top * _HEIGHT:.1f}")
    shapes = []
    for run in runs:
        if len(run) == 1:  # a lone sample: a dot, so it shows
            cx, cy = run[0].split(",")
            shapes.append(render('<circle class="{n}" cx="{x}" cy="{y}" r="2.5"></circle>',
                                 n=name, x=cx, y=cy))
        elif run:
            shapes.append(render('<polyline class="{n}" points="{p}"></polyline>', n=name,
                                 p=" ".join(run)))
    samples = [v for v in values if v is not None]
    return render('<g class="series" data-series="{n}" data-samples="{count}" '
                  'data-last="{last}">{shapes}</g>', n=name, count=len(samples),
                  last=samples[-1] if samples else "", shapes=join(shapes))


def _svg(name: str, title: str, top: int, body: Markup, legend: Markup) -> Markup:
    return render(
        '<figure class="chart" id="chart-{name}"><figcaption>{title}<span class="legend">'
        '{legend}</span></figcaption>'
        '<svg viewBox="0 -12 {w} {h}" role="img" aria-label="{title}" '
        'preserveAspectRatio="none"><line class="axis" x1="0" y1="{base}" x2="{w}" '
        'y2="{base}"></line><text class="scale" x="2" y="-2">{top}</text>{body}</svg>'
        '<div class="ticks"><span>60 min ago</span><span>now</span></div></figure>',
        name=name, title=title, legend=legend, w=_WIDTH, h=_HEIGHT + 14, base=_HEIGHT,
        top=top, body=body)


def _clock(start: datetime, index: int) -> str:
    return (start + timedelta(minutes=index)).strftime("%H:%M UTC")


def queue_table(queues: Sequence[QueueInfo]) -> Markup:
    rows = [render('<tr data-queue="{name}"><td>{name}{paused}</td>{cells}</tr>',
                   name=queue.name,
                   paused=Markup(' <span class="badge state-paused">paused</span>')
                   if queue.paused else "",
                   cells=join([render('<td class="num" data-state="{s}">{n}</td>', s=s.value,
                                      n=queue.counts.get(s.value, 0))
                               for s in QUEUE_STATES]))
            for queue in queues]
    head = join([render("<th>{s}</th>", s=s.value) for s in QUEUE_STATES])
    body = join(rows) or Markup('<tr class="empty"><td colspan="5">No queues yet.</td></tr>')
    return render('<table class="jobs queues-mini" id="queue-counts"><thead><tr><th>Queue</th>'
                  '{head}</tr></thead><tbody>{body}</tbody></table>', head=head, body=body)


OVERVIEW = """
<section class="overview" aria-label="overview">
<div class="panel">{throughput}</div>
<div class="panel">{depth}</div>
<div class="panel"><h2>Queues</h2>{queues}</div>
</section>
"""
