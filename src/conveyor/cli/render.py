"""How the command line shows jobs to people: Rich tables, relative times, bars, transition lines.

Everything here turns model objects into Rich renderables and never talks to a store, so the
same pieces serve ``conveyor ls/show/history/watch`` and the demo. Job data (types, params,
reasons) always goes into :class:`~rich.text.Text` objects, never into markup strings, so a
reason such as ``"[red]"`` is shown as typed instead of being interpreted; and it always goes
through :func:`conveyor.display.visible` first, so an ESC sequence, another control character
or a bidi override stored in a job is shown as an escape instead of acting on the terminal.

Rich decides whether the terminal gets colour; the bars use block characters that stay legible
without colour, and plain ASCII when the output encoding cannot carry them.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from conveyor.display import visible
from conveyor.events import JobCreated, JobEvent, JobRequested
from conveyor.ids import short_id
from conveyor.lifecycle import UNFINISHED_STATES, JobState
from conveyor.model import HistoryEntry, Job, JobProgress, LogLine
from conveyor.stores.redaction import redact_url

if TYPE_CHECKING:
    from conveyor.app import Conveyor

STATE_STYLES: dict[JobState, str] = {
    JobState.PENDING: "yellow",
    JobState.RUNNING: "cyan",
    JobState.PAUSED: "magenta",
    JobState.COMPLETED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "bright_black",
}
UNFINISHED = UNFINISHED_STATES
_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
BAR_WIDTH = 20
TABLE_BAR_WIDTH = 12
PIPE_WIDTH = 120  # columns when writing to a pipe or file, where Rich would assume 80


def shown(value: object, style: str = "") -> Text:
    """Untrusted text (job data) as a Text: escaped, and never read as markup."""
    return Text(visible(value), style=style)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_console(*, stderr: bool = False) -> Console:
    """A console that Rich lets decide on colour; wider than 80 columns when not a terminal."""
    console = Console(highlight=False, stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def log_line(line: LogLine) -> str:
    """A job's log line for a terminal: its text is the job's, so control characters are
    shown escaped, never sent (a line could otherwise move the cursor or rewrite the screen)."""
    text = "\n    ".join(visible(part) for part in line.message.split("\n"))
    return f"{line.at:%Y-%m-%d %H:%M:%S} {visible(line.level):<7} #{line.attempt} {text}"


def print_json(value: object) -> None:
    """One JSON document on one line (several ids give JSON Lines), with no Rich styling.

    Characters that would act on a terminal are written as JSON ``\\u`` escapes: the
    document means the same, and ``--json`` read in a terminal is as safe as a table.
    """
    typer.echo(json_safe(json.dumps(value, ensure_ascii=False, default=str)))


def json_safe(document: str) -> str:
    """``document`` with every control, format or surrogate character as a JSON escape (they
    only ever occur inside strings, where such an escape is equivalent)."""
    if document.isprintable():
        return document
    out = []
    for char in document:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(char)
            if code > 0xFFFF:  # a JSON escape is UTF-16: a surrogate pair
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def print_outcome(verb: str, job: Job, json_out: bool) -> None:
    """What a control verb or ``enqueue`` did: the job as JSON, or one line."""
    if json_out:
        print_json(job.to_dict())
    else:
        make_console().print(control_line(verb, job, utcnow()))


def redact(url: str) -> str:
    """Hide a password in a store URL before printing it (the core's rules, for any URL)."""
    return redact_url(url)


def ascii_only(console: Console) -> bool:
    """Whether the console's encoding cannot carry block characters (a legacy code page)."""
    return not console.encoding.lower().startswith("utf")




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
    notes = _flags(job) if job.state in (JobState.RUNNING, JobState.PAUSED) else []
    if job.state is JobState.PENDING and job.run_at > now:
        notes.append(f"runs {relative(job.run_at, now)}")
    if job.state is JobState.FAILED and job.is_terminal:
        notes.append("no retry left")
    if notes:
        text.append(f" ({', '.join(notes)})", style="dim")
    return text


def _flags(job: Job) -> list[str]:
    """The requests waiting on a job, as words (none once it stopped for good)."""
    return job.pending_requests


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
    """JSON on one line, escaped for display, cut to ``limit`` characters for a table cell."""
    text = visible(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def outcome_text(job: Job, limit: int = 60) -> Text:
    """The result of a completed job or the error of a failed one, shortened."""
    if job.error is not None:
        return shown(str(job.error)[:limit], style="red")
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
    extra = ["RESULT / ERROR"] if with_outcome else ["QUEUE", "CREATED"]
    for name in extra:
        table.add_column(name)
    for job in jobs:
        cells = [outcome_text(job)] if with_outcome else [
            shown(job.queue), Text(relative(job.created_at, now))]
        table.add_row(shown(short_id(job.id) if with_outcome else job.id), shown(job.job_type),
                      state_text(job, now), f"{job.attempt}/{job.max_attempts}",
                      progress_bar(job.progress, ascii_bar=ascii_bar, width=TABLE_BAR_WIDTH),
                      *cells)
    return table


def job_panel(job: Job, now: datetime, *, ascii_bar: bool = False,
              held: str | None = None,
              links: tuple[list[Job], list[Job]] = ([], [])) -> Panel:
    """Everything about one job, for ``conveyor show``; ``held``: why a limit holds it;
    ``links``: the jobs it depends on, and those depending on it."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    rows: list[tuple[str, RenderableType]] = [
        ("type", shown(job.job_type)),
        ("state", state_text(job, now)),
        *([("held", shown(held, style="yellow"))] if held else []),
        ("queue", shown(f"{job.queue} (priority {job.priority})")),
        *([("limit key", shown(job.limit_key))] if job.limit_key else []),
        ("retries", Text(f"{job.attempt} used of {job.max_attempts}")),
        ("progress", progress_bar(job.progress, ascii_bar=ascii_bar)),
        ("checkpoint", Text(compact_json(job.progress.last_checkpoint, 400))),
        ("params", Text(compact_json(job.params, 400))),
    ]
    if job.state is JobState.COMPLETED:
        rows.append(("result", Text(compact_json(job.result, 400))))
    if job.error is not None:
        rows.append(("error", shown(job.error, style="red")))
    rows += [(name, timestamp(getattr(job, f"{name}_at"), now))
             for name in ("created", "run", "started", "paused", "finished", "updated")
             if getattr(job, f"{name}_at") is not None]
    if job.worker_id:
        rows.append(("worker", shown(f"{job.worker_id} (lease until {iso(job.lease_expires_at)})")))
    if job.requeued_from:
        rows.append(("requeued from", shown(job.requeued_from)))
    if job.waiting_on and job.state is JobState.PENDING:
        rows.append(("waiting for", Text(f"{job.waiting_on} dependency job(s) to complete")))
    for name, linked in zip(("depends on", "needed by"), links, strict=True):
        if linked:
            rows.append((name, Text("\n").join(shown(f"{j.id} ({j.job_type}, {j.state.value})")
                                               for j in linked)))
    rows.append(("actions", Text(", ".join(job.legal_actions) or "none", style="bold")))
    for name, value in rows:
        grid.add_row(name, value)
    body: RenderableType = grid
    if job.error is not None and job.error.traceback:
        lines = job.error.traceback.rstrip().split("\n")  # a line at a time: keep its shape
        body = Group(grid, Text(""), Text("\n").join(
            shown(line, style="dim") for line in lines))
    return Panel(body, title=shown(job.id, style="bold"), title_align="left")


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
    table = Table(title=None if title is None else shown(title), header_style="bold",
                  title_justify="left")
    for name in ("AT", "ACTION", "FROM -> TO", "RETRIES", "ACTOR", "REASON"):
        table.add_column(name, no_wrap=name in ("AT", "ACTION", "FROM -> TO"))
    for entry in entries:
        moved = entry.from_state != entry.to_state
        change = _arrow(entry.from_state, entry.to_state) if moved else Text(
            entry.to_state.value, style=STATE_STYLES[entry.to_state])
        table.add_row(timestamp(entry.at, now), shown(entry.action), change, str(entry.attempt),
                      shown(entry.actor), shown(entry.reason))
    return table


def transition_line(at: datetime, job_id: str, job_type: str, change: Text,
                    actor: str, reason: str, *, clock: bool = True) -> Text:
    """One line per transition: ``12:00:01.250  3f2c1a9b  files.process  running -> paused``.

    ``clock=False`` leaves the time out, for log lines that carry their own.
    """
    line = Text()
    if clock:
        line.append(f"{at.astimezone().strftime('%H:%M:%S.%f')[:-3]}  ", style="dim")
    line.append(visible(short_id(job_id)), style="bold")
    line.append(f"  {visible(job_type):<16} ")
    line.append_text(change)
    if actor:
        line.append(f"  by {visible(actor)}", style="dim")
    if reason:
        line.append("  ")
        line.append(visible(reason), style="italic")
    return line


def request_label(action: str) -> str:
    """``request_pause`` -> ``pause requested``; ``withdraw_pause`` -> ``pause request
    withdrawn``: the same words as the job's flags."""
    verb, _, what = action.partition("_")
    if verb == "request":
        return f"{what} requested"
    if verb == "withdraw":
        return f"{what} request withdrawn"
    return action.replace("_", " ")


def history_line(entry: HistoryEntry, job_type: str) -> Text:
    """A history row as a transition line (``watch`` prints these as they appear)."""
    if entry.from_state == entry.to_state:
        change = Text.assemble((entry.to_state.value, STATE_STYLES[entry.to_state]),
                               f": {request_label(entry.action)}")
    else:
        change = _arrow(entry.from_state, entry.to_state)
    return transition_line(entry.at, entry.job_id, job_type, change, entry.actor, entry.reason)


def event_line(event: JobEvent, *, clock: bool = True) -> Text:
    """An in-process event as a transition line (the demo prints these)."""
    job = event.job
    if isinstance(event, JobRequested):
        # with no reason given, the event's reason is the action itself ("request_pause")
        is_action = event.reason.startswith(("request_", "withdraw_"))
        label = (request_label(event.reason) if is_action
                 else ", ".join(_flags(job)) or "request withdrawn")
        change = Text.assemble((job.state.value, STATE_STYLES[job.state]), f": {label}")
        reason = "" if is_action else event.reason
    else:
        source = None if isinstance(event, JobCreated) else event.from_state
        change = _arrow(source, job.state)
        reason = event.reason
    return transition_line(event.at, job.id, job.job_type, change, event.actor, reason,
                           clock=clock)


def control_line(verb: str, job: Job, now: datetime) -> Text:
    """What a control verb did, e.g. ``pause 3f2c… files.process: running (pause requested)``."""
    return Text.assemble((f"{verb}: ", "bold"), visible(job.id), "  ", visible(job.job_type),
                         "  ", state_text(job, now))


def state_line(job: Job, now: datetime) -> Text:
    """``3f2c1a9b  files.process  running (pause requested)``."""
    return Text.assemble((visible(short_id(job.id)), "bold"), "  ", visible(job.job_type), "  ",
                         state_text(job, now))


class LiveBoard:
    """Live progress bars, one row per job, with transition lines printed above them.

    Rows are updated from any thread (the demo's event subscriber, ``watch``'s poll loop);
    Rich redraws them a few times a second on a terminal. On a file or a dumb terminal, Rich
    prints the lines as they come and the board once, when it stops (unless ``transient``).
    """

    def __init__(self, console: Console, *, transient: bool = False) -> None:
        self.console = console
        self.transient = transient
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ascii = ascii_only(console)
        self._live = Live(console=console, get_renderable=self.render, refresh_per_second=8,
                          transient=transient)

    def __enter__(self) -> LiveBoard:
        self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._live.stop()
        if not self.console.is_terminal and not self.transient:
            self.console.line()  # Rich leaves a file's last frame without its newline

    def update(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job

    def update_progress(self, job: Job) -> None:
        """Take only the progress from ``job`` (a progress event may trail a transition)."""
        with self._lock:
            known = self._jobs.get(job.id)
            if known is not None:
                known = copy.copy(known)
                known.progress = job.progress
            self._jobs[job.id] = known or job

    def print(self, line: Text) -> None:
        """Print ``line`` above the bars, redrawing them first so they are not a frame late."""
        if self._live.is_started:
            self._live.refresh()
        self.console.print(line)

    def render(self) -> RenderableType:
        now = utcnow()
        grid = Table.grid(padding=(0, 2))
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            grid.add_row(shown(short_id(job.id), style="bold"), shown(job.job_type),
                         progress_bar(job.progress, ascii_bar=self._ascii),
                         state_text(job, now))
        return grid


def _signature(job: Job) -> tuple[object, ...]:
    """What changes when a job moves or gets a request (progress alone does not count)."""
    return (job.state, job.attempt, job.paused_at, job.pause_requested, job.cancel_requested,
            job.resume_requested)


def watch_until_done(app: Conveyor, jobs: list[Job], console: Console, interval: float) -> None:
    """Poll the store and redraw until every job is terminal.

    Events are in-process only, so another process's transitions are found by polling; each
    new history row of a job that changed is printed, so no step is missed between two looks.
    """
    last_seen = {job.id: max((e.id for e in app.history(job.id)), default=0) for job in jobs}
    with LiveBoard(console) as board:
        for job in jobs:
            board.update(job)
            board.print(Text.assemble("watching ", state_line(job, utcnow())))
        while not all(job.is_terminal for job in jobs):
            time.sleep(interval)
            fresh = [app.get(job.id) for job in jobs]
            for line in _new_history(app, jobs, fresh, last_seen):
                board.print(line)
            for job in fresh:
                board.update(job)
            jobs = fresh
    console.print(f"all {len(jobs)} watched job(s) finished: {count_states(jobs)}")


def _new_history(app: Conveyor, old: list[Job], fresh: list[Job],
                 last_seen: dict[str, int]) -> list[Text]:
    """History rows written since the last look, for the jobs that changed, in time order."""
    rows: list[tuple[HistoryEntry, str]] = []
    for before, job in zip(old, fresh, strict=True):
        if _signature(before) != _signature(job):
            rows += [(e, job.job_type) for e in app.history(job.id) if e.id > last_seen[job.id]]
    for entry, _ in rows:
        last_seen[entry.job_id] = max(last_seen[entry.job_id], entry.id)
    rows.sort(key=lambda row: (row[0].at, row[0].id))
    return [history_line(entry, job_type) for entry, job_type in rows]


def unfinished(jobs: Iterable[Job]) -> list[Job]:
    """The jobs something may still happen to (a failed job may have a retry left)."""
    return [job for job in jobs if not job.is_terminal]


def count_states(jobs: Iterable[Job]) -> str:
    """``"2 completed, 1 cancelled"``, in lifecycle order."""
    states = [job.state for job in jobs]
    return ", ".join(f"{states.count(s)} {s.value}" for s in JobState if s in states)
