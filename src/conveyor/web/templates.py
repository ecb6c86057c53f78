"""Server-side HTML with escaping on by default, in a few dozen lines instead of a dependency.

Every value put into a template is HTML-escaped unless it is already :class:`Markup` (the output
of another template). So job data — params, errors, tracebacks, type names, all chosen by
whoever enqueued the job — can only ever appear as text, never as markup.
"""

from __future__ import annotations

import html
import json
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from conveyor.display import visible
from conveyor.model import Job

__all__ = ["Markup", "esc", "esc_lines", "join", "render"]


class Markup(str):
    """Text that is already safe HTML (it came out of :func:`render` or :func:`esc`)."""

    __slots__ = ()


EMPTY = Markup("")

#: The prefix the dashboard is mounted under ('' at the root), set per request by the auth
#: middleware: every link a template writes starts with ``{root}`` so that a dashboard mounted
#: at ``/conveyor`` links to ``/conveyor/jobs/...``, not to the host application's ``/jobs``.
ROOT: ContextVar[str] = ContextVar("conveyor_root", default="")


def esc(value: object) -> Markup:
    """``value`` as HTML text; :class:`Markup` passes through unchanged.

    Control, bidi and invisible characters are shown as escapes (:func:`visible`) first, so a
    job type with U+202E cannot reorder what the operator reads; text that needs its line
    breaks (tracebacks, JSON) goes through :func:`esc_lines` instead.
    """
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(visible("" if value is None else value), quote=True))


def esc_lines(text: str) -> Markup:
    """Like :func:`esc`, keeping the line breaks of multi-line text."""
    return Markup("\n".join(esc(line) for line in text.split("\n")))


def render(template: str, **values: object) -> Markup:
    """Fill ``{name}`` slots of ``template`` with escaped values (``{root}``: the mount prefix)."""
    filled = {name: esc(value) for name, value in values.items()}
    filled.setdefault("root", esc(ROOT.get()))
    return Markup(template.format_map(filled))


def join(parts: list[Markup] | tuple[Markup, ...]) -> Markup:
    return Markup("".join(esc(part) for part in parts))


def when(value: datetime | None) -> Markup:
    """A timestamp as a ``<time>`` element, in UTC, to the second."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    return render('<time datetime="{iso}">{text}</time>', iso=value.isoformat(),
                  text=value.strftime("%Y-%m-%d %H:%M:%S UTC"))


def pretty_json(value: Any) -> Markup:
    return esc_lines(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


def flags_text(job: Job) -> str:
    """The requests a job carries that its state does not show yet."""
    return ", ".join(job.pending_requests)


def error_text(job: Job) -> str:
    return str(job.error) if job.error is not None else ""


def state_badge(job: Job, *, with_error: bool = False) -> Markup:
    """The state, the pending requests, and (in lists) the last error in one line."""
    badge = render('<span class="badge state-{state}" data-field="state">{state}</span>'
                   '<span class="flags" data-field="flags">{flags}</span>',
                   state=job.state.value, flags=flags_text(job))
    if not with_error:
        return badge
    return Markup(badge + render('<span class="error-hint" data-field="error" title="{error}">'
                                 '{error}</span>', error=error_text(job)))


def progress_bar(job: Job) -> Markup:
    """An ARIA progress bar; the fill's width is set by the script (no inline styles: CSP)."""
    progress = job.progress
    steps = (f"{progress.current_step}/{progress.total_steps}" if progress.total_steps
             else str(progress.current_step) if progress.current_step else "")
    return render(
        '<div class="progress" role="progressbar" aria-label="progress of job {id}" '
        'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{percent}" data-field="progress">'
        '<div class="fill"></div></div><span class="steps" data-field="steps">{steps}</span>',
        id=job.id, percent=f"{progress.percent:.2f}".rstrip("0").rstrip("."), steps=steps)


def action_buttons(job: Job, *, can_write: bool) -> Markup:
    """One button per action the lifecycle allows now (``Job.legal_actions``), no others."""
    if not can_write:
        return Markup("")
    return join([render('<button type="button" class="btn btn-{action}" data-action="{action}" '
                        'data-job-id="{id}">{label}</button>',
                        action=action, id=job.id, label=action.capitalize())
                 for action in job.legal_actions])


LAYOUT = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<meta name="conveyor-can-write" content="{can_write}">
<meta name="conveyor-root" content="{root}">
<title>{title} · conveyor</title>
<link rel="icon" href="{root}/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{root}/static/dashboard.css?v={version}">
<script src="{root}/static/dashboard.js?v={version}" defer></script>
</head>
<body data-page="{page}">
<header class="top">
  <a class="brand" href="{root}/"><span class="logo" aria-hidden="true"></span>conveyor</a>
  <a class="nav" href="{root}/flow">Queues &amp; schedules</a>
  <a class="nav" href="{root}/workers">Workers</a>
  <span class="live" id="live" data-state="off">{live}</span>
  <span class="spacer"></span>
  {user}
</header>
<div class="flash" id="flash" role="alert" hidden></div>
<main>
{body}
</main>
</body>
</html>
"""


def page(title: str, body: Markup, *, page_name: str, csrf: str = "", can_write: bool = False,
         user: Markup = EMPTY, version: str = "", live: str = "") -> Markup:
    """A whole page in the common layout."""
    return render(LAYOUT, title=title, body=body, page=page_name, csrf=csrf,
                  can_write="true" if can_write else "false", user=user, version=version,
                  live=live)
