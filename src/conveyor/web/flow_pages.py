"""The dashboard's "Queues & schedules" page and the job page's "Run now" button.

Server-rendered like the rest of the dashboard; the buttons post to the HTTP API
(``/api/queues/{name}/pause|resume|limit``, ``/api/jobs/{id}/run_now``) from ``dashboard.js``
and reload the page. Every text shown goes through :func:`~conveyor.web.templates.render`, which
escapes it.
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from conveyor import __version__
from conveyor.app import Conveyor
from conveyor.ids import short_id
from conveyor.lifecycle import JobState
from conveyor.model import Job, QueueInfo, ScheduleInfo
from conveyor.web.common import call
from conveyor.web.middleware import principal_of
from conveyor.web.templates import Markup, join, page, render, when

FLOW_PAGE = """
<p class="crumbs"><a href="{root}/">← all jobs</a></p>
<section class="panel"><h2>Queues</h2>
<p class="muted">A paused queue's jobs are not claimed by any worker until it is resumed;
jobs already running go on. A queue's limits (here, or <code>conveyor queue limit</code>) cap
how many of its jobs run at once and how fast they are claimed; both fields empty removes
them.</p>
<table class="jobs" id="queues"><thead><tr><th>Queue</th><th>State</th><th>Changed</th>
<th>By</th><th>Reason</th><th>Limits</th><th>Jobs</th><th>Actions</th></tr></thead>
<tbody>{queues}</tbody></table></section>
<section class="panel"><h2>Schedules</h2>
<table class="jobs" id="schedules"><thead><tr><th>Schedule</th><th>Cron</th><th>Job type</th>
<th>Next run</th><th>Last tick</th><th>Last job</th></tr></thead>
<tbody>{schedules}</tbody></table></section>
"""


def _queue_row(queue: QueueInfo, can_write: bool) -> Markup:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(queue.counts.items())) or "—"
    action = "resume" if queue.paused else "pause"
    button = render('<button type="button" class="btn btn-{action}" data-queue-action="{action}"'
                    ' data-queue="{name}">{label}</button>', action=action, name=queue.name,
                    label=action.capitalize()) if can_write else Markup("")
    return render(
        '<tr data-queue="{name}"><td>{name}</td><td><span class="badge state-{css}">{state}'
        '</span></td><td>{changed}</td><td>{actor}</td><td>{reason}</td>'
        '<td data-limits="{name}">{limits}{form}</td><td>{counts}</td>'
        '<td class="actions">{button}</td></tr>',
        name=queue.name, css="paused" if queue.paused else "running",
        state="paused" if queue.paused else "active", changed=when(queue.changed_at),
        actor=queue.actor or "—", reason=queue.reason or "—", limits=_limits(queue),
        form=_limit_form(queue) if can_write else Markup(""), counts=counts, button=button)


def _limit_form(queue: QueueInfo) -> Markup:
    """Both fields empty removes the queue's limits (what the API does with neither given)."""
    return render(
        '<form class="limit-form" data-queue="{name}">'
        '<input name="max_running" type="number" min="1" step="1" inputmode="numeric" '
        'value="{running}" placeholder="max running" aria-label="At most this many running">'
        '<input name="rate_limit" value="{rate}" placeholder="rate, e.g. 100/m" maxlength="40" '
        'aria-label="Claimed no faster than (n/s, n/m or n/h)">'
        '<button type="submit" class="btn">Set limits</button></form>',
        name=queue.name, running="" if queue.max_running is None else str(queue.max_running),
        rate=queue.rate_limit or "")


def _limits(queue: QueueInfo) -> str:
    parts = [f"{queue.max_running} running" if queue.max_running else "",
             queue.rate_limit or ""]
    shown = ", ".join(part for part in parts if part)
    return f"{shown} (set by {queue.limit_actor})" if shown else "—"


def _schedule_row(schedule: ScheduleInfo) -> Markup:
    last = (render('<a class="mono" href="{root}/jobs/{id}">{short}</a>',
                   id=schedule.last_job_id, short=short_id(schedule.last_job_id))
            if schedule.last_job_id else Markup('<span class="muted">—</span>'))
    return render(
        '<tr><td>{name}</td><td class="mono">{cron} <span class="muted">{tz}</span></td>'
        '<td>{job_type}</td><td>{next_run}</td><td>{last_tick}</td><td>{last}</td></tr>',
        name=schedule.name, cron=schedule.cron, tz=schedule.timezone,
        job_type=schedule.job_type, next_run=when(schedule.next_run),
        last_tick=when(schedule.last_tick), last=last)


def run_now_button(job: Job, now: datetime, *, can_write: bool) -> Markup:
    """Offered on a pending job that is waiting (a delay or a retry's backoff)."""
    if not can_write or job.state is not JobState.PENDING or job.run_at <= now:
        return Markup("")
    return render('<button type="button" class="btn btn-run-now" data-edit-action="run_now" '
                  'data-job-id="{id}">Run now</button>', id=job.id)


class FlowPages:
    def __init__(self, app: Conveyor) -> None:
        self.app = app

    def routes(self) -> list[Route]:
        return [Route("/flow", self.flow_page, methods=["GET"], name="flow_page")]

    async def flow_page(self, request: Request) -> Response:
        from conveyor.web.pages import _user_box  # pages imports this module

        principal = principal_of(request)
        queues = await call(self.app.queues)
        schedules = await call(self.app.schedules)
        body = render(
            FLOW_PAGE,
            queues=join([_queue_row(q, principal.can_write) for q in queues]) or Markup(
                '<tr class="empty"><td colspan="8">No queues yet.</td></tr>'),
            schedules=join([_schedule_row(s) for s in schedules]) or Markup(
                '<tr class="empty"><td colspan="6">No schedules.</td></tr>'))
        return HTMLResponse(page(
            "Queues & schedules", body, page_name="flow", csrf=principal.csrf_token or "",
            can_write=principal.can_write, user=_user_box(principal), version=__version__,
            live=""))
