"""Flow-control commands: queues (list, pause, resume) and edits of waiting jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from conveyor.cli import render
from conveyor.cli.options import (
    AppOption,
    IdsArgument,
    JsonOption,
    ReasonOption,
    actor,
    command,
    examples,
    for_each,
    open_app,
)
from conveyor.errors import ConfigurationError
from conveyor.ids import short_id
from conveyor.model import QueueInfo

#: ``conveyor queue pause|resume NAME``: registered by the package as a group of its own.
queue_app = typer.Typer(name="queue", help="Pause, resume or limit a queue.",
                        no_args_is_help=True)
QueueArgument = Annotated[str, typer.Argument(metavar="NAME", help="The queue.")]


@command("queues", epilog=examples("conveyor queues", "conveyor queues --json"))
def list_queues(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """List queues: paused or not (who, when, why), and their jobs by state."""
    queues = open_app(ctx).queues()
    if json_out:
        for queue in queues:
            render.print_json(queue.to_dict())
        return
    now = render.utcnow()
    table = Table("queue", "state", "changed", "by", "reason", "limits", "jobs")
    for queue in queues:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(queue.counts.items()))
        table.add_row(render.shown(queue.name),
                      render.shown("paused" if queue.paused else "active",
                                   "yellow" if queue.paused else "green"),
                      render.timestamp(queue.changed_at, now), render.shown(queue.actor),
                      render.shown(queue.reason), render.shown(_limits_text(queue)),
                      counts or "-")
    render.make_console().print(table)


@command("schedules", epilog=examples("conveyor schedules --app myapp:app",
                                      "conveyor schedules --json"))
def list_schedules(ctx: typer.Context, app_ref: AppOption = None,
                   json_out: JsonOption = False) -> None:
    """List periodic schedules with their next run, latest tick and its job.

    Without --app, the schedules workers recorded in the store.
    """
    schedules = open_app(ctx, app_ref).schedules()
    if json_out:
        for schedule in schedules:
            render.print_json(schedule.to_dict())
        return
    now = render.utcnow()
    table = Table("schedule", "cron", "timezone", "job type", "next run", "last tick",
                  "last job")
    for s in schedules:
        table.add_row(render.shown(s.name), render.shown(s.cron), render.shown(s.timezone),
                      render.shown(s.job_type), render.timestamp(s.next_run, now),
                      render.timestamp(s.last_tick, now),
                      short_id(s.last_job_id) if s.last_job_id else "-")
    render.make_console().print(table)


def _limits_text(queue: QueueInfo) -> str:
    parts = [f"{queue.max_running} running" if queue.max_running else "",
             queue.rate_limit or ""]
    shown = ", ".join(part for part in parts if part)
    return f"{shown} (by {queue.limit_actor})" if shown else "-"


@command("limits", epilog=examples("conveyor limits", "conveyor limits --json"))
def list_limits(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """List the concurrency and rate limits claims obey: job types' and queues'."""
    rules = open_app(ctx).limits()
    if json_out:
        for rule in rules:
            render.print_json(rule.to_dict())
        return
    now = render.utcnow()
    table = Table("scope", "name", "max running", "rate", "per key", "changed", "by",
                  "reason")
    for rule in rules:
        table.add_row(rule.scope, render.shown(rule.name),
                      str(rule.max_running) if rule.max_running else "-",
                      rule.rate.text if rule.rate else "-", render.shown(rule.key or "-"),
                      render.timestamp(rule.changed_at, now), render.shown(rule.actor),
                      render.shown(rule.reason))
    render.make_console().print(table)


@queue_app.command("limit", epilog=examples(
    'conveyor queue limit mail --max-running 2 -r "smtp quota"',
    "conveyor queue limit mail --rate 100/m", "conveyor queue limit mail  # removes both"))
def limit_queue(
    ctx: typer.Context,
    name: QueueArgument,
    max_running: Annotated[int | None, typer.Option(
        "--max-running", metavar="N", show_default=False,
        help="At most N of the queue's jobs running at once, across all workers.")] = None,
    rate: Annotated[str | None, typer.Option(
        "--rate", metavar="RATE", show_default=False,
        help="Claimed no faster than RATE: 100/s, 100/m or 100/h.")] = None,
    reason: ReasonOption = "",
    json_out: JsonOption = False,
) -> None:
    """Set a queue's limits (neither option: remove them); held jobs stay pending."""
    queue = open_app(ctx).set_queue_limit(name, max_running=max_running, rate_limit=rate,
                                          actor=actor(), reason=reason)
    if json_out:
        render.print_json(queue.to_dict())
    else:
        render.make_console().print(render.shown(
            f"queue {queue.name} limits: {_limits_text(queue)}"))


def _print_queue(queue: QueueInfo, json_out: bool) -> None:
    if json_out:
        render.print_json(queue.to_dict())
    else:
        render.make_console().print(render.shown(
            f"queue {queue.name} {'paused' if queue.paused else 'resumed'}"))


@queue_app.command("pause", epilog=examples('conveyor queue pause mail -r "smtp is down"'))
def pause_queue(ctx: typer.Context, name: QueueArgument, reason: ReasonOption = "",
                json_out: JsonOption = False) -> None:
    """Stop workers claiming the queue's jobs; running jobs are not touched."""
    _print_queue(open_app(ctx).pause_queue(name, actor=actor(), reason=reason), json_out)


@queue_app.command("resume", epilog=examples("conveyor queue resume mail"))
def resume_queue(ctx: typer.Context, name: QueueArgument, reason: ReasonOption = "",
                 json_out: JsonOption = False) -> None:
    """Let workers claim the queue's jobs again."""
    _print_queue(open_app(ctx).resume_queue(name, actor=actor(), reason=reason), json_out)


@command("run-now", epilog=examples("conveyor run-now ID"))
def run_now(ctx: typer.Context, job_ids: IdsArgument, reason: ReasonOption = "",
            json_out: JsonOption = False) -> None:
    """Run pending jobs now that wait out a delay or a retry's backoff."""
    app = open_app(ctx)
    for_each(job_ids, lambda job_id: render.print_outcome(
        "run now", app.run_now(job_id, actor=actor(), reason=reason), json_out))


@command("reschedule", epilog=examples(
    "conveyor reschedule ID --delay 3600", "conveyor reschedule ID --priority 10",
    "conveyor reschedule ID --run-at 2026-12-01T08:00:00+00:00"))
def reschedule(
    ctx: typer.Context,
    job_ids: IdsArgument,
    run_at: Annotated[str | None, typer.Option(
        "--run-at", metavar="ISO", show_default=False,
        help="New not-before time: ISO 8601 with a time zone.")] = None,
    delay: Annotated[float | None, typer.Option(
        help="New not-before time, seconds from now.", show_default=False)] = None,
    priority: Annotated[int | None, typer.Option(help="New priority.",
                                                 show_default=False)] = None,
    reason: ReasonOption = "",
    app_ref: AppOption = None,
    json_out: JsonOption = False,
) -> None:
    """Change when pending jobs may run and/or their priority."""
    when = None
    if run_at is not None:
        try:
            when = datetime.fromisoformat(run_at)
        except ValueError:
            raise ConfigurationError(f"--run-at must be an ISO 8601 date-time with a time "
                                     f"zone, not {run_at!r}") from None
    app = open_app(ctx, app_ref)
    for_each(job_ids, lambda job_id: render.print_outcome(
        "rescheduled", app.reschedule(job_id, run_at=when, delay=delay, priority=priority,
                                      actor=actor(), reason=reason), json_out))
