"""How the command line shows jobs to people: Rich tables, relative times, bars, transition lines.

Everything here turns model objects into Rich renderables and never talks to a store, so the
same pieces serve ``conveyor ls/show/history/watch`` and the demo. Job data (types, params,
reasons) always goes into :class:`~rich.text.Text` objects, never into markup strings, so a
reason such as ``"[red]"`` is shown as typed instead of being interpreted.

Rich decides whether the terminal gets colour; the bars use block characters that stay legible
without colour, and plain ASCII when the output encoding cannot carry them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from conveyor.events import JobCreated, JobEvent, JobRequested
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job, JobProgress

STATE_STYLES: dict[JobState, str] = {
    JobState.PENDING: "yellow",
    JobState.RUNNING: "cyan",
    JobState.PAUSED: "magenta",
    JobState.COMPLETED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "bright_black",
}
_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
BAR_WIDTH = 20


def utcnow() -> datetime:
    return datetime.now(UTC)


def ascii_only(console: Console) -> bool:
    """Whether the console's encoding cannot carry block characters (a legacy code page)."""
    return not console.encoding.lower().startswith("utf")


def short_id(job_id: str) -> str:
    """The first 8 characters: enough to tell jobs apart on one screen."""
    return job_id[:8]


def relative(when: datetime | None, now: datetime) -> str:
    """``"3 s ago"``, ``"in 2 min"``: what a person wants to know at a glance."""
    if when is None:
        return "-"
    seconds = (when - now).total_seconds()
    size = abs(seconds)
    if size < 1:
        return "just now"
    amount, unit = next((int(size // span), name) for span, name in _UNITS if size >= span)
    return f"{amount} {unit} ago" if seconds < 0 else f"in {amount} {unit}"


def iso(when: datetime | None) -> str:
    """Local time with its offset, to the second: unambiguous and still readable."""
    return when.astimezone().isoformat(timespec="seconds") if when else "-"


def timestamp(when: datetime | None, now: datetime) -> Text:
    if when is None:
        return Text("-", style="dim")
    return Text.assemble(iso(when), (f"  ({relative(when, now)})", "dim"))


def state_text(job: Job, now: datetime) -> Text:
    """The state in its colour, with what is about to happen to it."""
    text = Text(job.state.value, style=STATE_STYLES[job.state])
    notes = [flag.replace("_", " ") for flag in ("pause_requested", "cancel_requested",
                                                  "resume_requested") if getattr(job, flag)]
    if job.state is JobState.PENDING and job.run_at > now:
        notes.append(f"runs {relative(job.run_at, now)}")
    if job.state is JobState.FAILED and job.is_terminal:
        notes.append("no retry left")
    if notes:
        text.append(f" ({', '.join(notes)})", style="dim")
    return text


def progress_bar(progress: JobProgress, *, ascii_bar: bool = False,
                 width: int = BAR_WIDTH) -> Text:
    """A bar, a percentage and the step count; just the count when the total is unknown."""
    if not progress.total_steps:
        return Text(f"{progress.current_step} steps" if progress.current_step else "-",
                    style="dim")
    done_char, left_char = ("#", "-") if ascii_bar else ("█", "░")
    filled = round(width * progress.percent / 100)
    return Text.assemble(
        (done_char * filled, "green"),
        (left_char * (width - filled), "bright_black"),
        f" {progress.percent:3.0f}% ",
        (f"{progress.current_step}/{progress.total_steps}", "dim"),
    )


def compact_json(value: Any, limit: int = 60) -> str:
    """JSON on one line, cut to ``limit`` characters for a table cell."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def outcome_text(job: Job, limit: int = 60) -> Text:
    """The result of a completed job or the error of a failed one, shortened."""
    if job.error is not None:
        return Text(str(job.error)[:limit], style="red")
    if job.state is JobState.COMPLETED:
        return Text(compact_json(job.result, limit))
    return Text("-", style="dim")


def jobs_table(jobs: Iterable[Job], now: datetime, *, ascii_bar: bool = False,
               with_outcome: bool = False, title: str | None = None) -> Table:
    """One row per job: what ``conveyor ls`` prints (and the demo's summary, with outcomes)."""
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("ID", no_wrap=True)
    table.add_column("TYPE", no_wrap=True)
    table.add_column("STATE")
    table.add_column("RETRIES", justify="right", no_wrap=True)
    table.add_column("PROGRESS", no_wrap=True)
    table.add_column("QUEUE")
    table.add_column("RESULT / ERROR" if with_outcome else "CREATED")
    for job in jobs:
        last = outcome_text(job) if with_outcome else Text(relative(job.created_at, now))
        table.add_row(Text(short_id(job.id) if with_outcome else job.id), Text(job.job_type),
                      state_text(job, now), f"{job.attempt}/{job.max_attempts}",
                      progress_bar(job.progress, ascii_bar=ascii_bar), Text(job.queue), last)
    return table


def job_panel(job: Job, now: datetime, *, ascii_bar: bool = False) -> Panel:
    """Everything about one job, for ``conveyor show``."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    rows: list[tuple[str, RenderableType]] = [
        ("type", Text(job.job_type)),
        ("state", state_text(job, now)),
        ("queue", Text(f"{job.queue} (priority {job.priority})")),
        ("retries", Text(f"{job.attempt} used of {job.max_attempts}")),
        ("progress", progress_bar(job.progress, ascii_bar=ascii_bar)),
        ("checkpoint", Text(compact_json(job.progress.last_checkpoint, 400))),
        ("params", Text(compact_json(job.params, 400))),
    ]
    if job.state is JobState.COMPLETED:
        rows.append(("result", Text(compact_json(job.result, 400))))
    if job.error is not None:
        rows.append(("error", Text(str(job.error), style="red")))
    rows += [(name, timestamp(getattr(job, f"{name}_at"), now))
             for name in ("created", "run", "started", "paused", "finished", "updated")
             if getattr(job, f"{name}_at") is not None]
    if job.worker_id:
        rows.append(("worker", Text(f"{job.worker_id} (lease until {iso(job.lease_expires_at)})")))
    if job.requeued_from:
        rows.append(("requeued from", Text(job.requeued_from)))
    rows.append(("actions", Text(", ".join(job.legal_actions) or "none", style="bold")))
    for name, value in rows:
        grid.add_row(name, value)
    body: RenderableType = grid
    if job.error is not None and job.error.traceback:
        body = Group(grid, Text(""), Text(job.error.traceback.rstrip(), style="dim"))
    return Panel(body, title=Text(job.id, style="bold"), title_align="left")


def _arrow(source: JobState | None, target: JobState) -> Text:
    text = Text()
    if source is None:
        text.append("new", style="dim")
    else:
        text.append(source.value, style=STATE_STYLES[source])
    text.append(" -> ")
    text.append(target.value, style=STATE_STYLES[target])
    return text


def history_table(entries: Iterable[HistoryEntry], now: datetime,
                  title: str | None = None) -> Table:
    """A job's audit trail, oldest first, for ``conveyor history`` and the demo."""
    table = Table(title=title, header_style="bold", title_justify="left")
    for name in ("AT", "ACTION", "FROM -> TO", "RETRIES", "ACTOR", "REASON"):
        table.add_column(name, no_wrap=name in ("ACTION", "FROM -> TO"))
    for entry in entries:
        moved = entry.from_state != entry.to_state
        change = _arrow(entry.from_state, entry.to_state) if moved else Text(
            entry.to_state.value, style=STATE_STYLES[entry.to_state])
        table.add_row(timestamp(entry.at, now), Text(entry.action), change, str(entry.attempt),
                      Text(entry.actor), Text(entry.reason))
    return table


def transition_line(at: datetime, job_id: str, job_type: str, change: Text,
                    actor: str, reason: str) -> Text:
    """One line per transition: ``12:00:01.250  3f2c1a9b  files.process  running -> paused``."""
    line = Text.assemble((at.astimezone().strftime("%H:%M:%S.%f")[:-3], "dim"), "  ",
                         (short_id(job_id), "bold"), "  ", (f"{job_type:<16}", ""), " ")
    line.append_text(change)
    if actor:
        line.append(f"  by {actor}", style="dim")
    if reason:
        line.append("  ")
        line.append(reason, style="italic")
    return line


def history_line(entry: HistoryEntry, job_type: str) -> Text:
    """A history row as a transition line (``watch`` prints these as they appear)."""
    if entry.from_state == entry.to_state:
        change = Text.assemble((entry.to_state.value, STATE_STYLES[entry.to_state]),
                               f": {entry.action.replace('_', ' ')}")
    else:
        change = _arrow(entry.from_state, entry.to_state)
    return transition_line(entry.at, entry.job_id, job_type, change, entry.actor, entry.reason)


def event_line(event: JobEvent) -> Text:
    """An in-process event as a transition line (the demo prints these)."""
    job = event.job
    if isinstance(event, JobRequested):
        asked = [flag.replace("_", " ") for flag in ("pause_requested", "cancel_requested",
                                                      "resume_requested") if getattr(job, flag)]
        change = Text.assemble((job.state.value, STATE_STYLES[job.state]),
                               f": {', '.join(asked) or 'request withdrawn'}")
        reason = "" if event.reason.endswith("_requested") else event.reason
    else:
        source = None if isinstance(event, JobCreated) else event.from_state
        change = _arrow(source, job.state)
        reason = event.reason
    return transition_line(event.at, job.id, job.job_type, change, event.actor, reason)


def control_line(verb: str, job: Job, now: datetime) -> Text:
    """What a control verb did, e.g. ``pause 3f2c… files.process: running (pause requested)``."""
    return Text.assemble((f"{verb}: ", "bold"), job.id, "  ", job.job_type, "  ",
                         state_text(job, now))
