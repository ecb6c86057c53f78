"""Commands that add and read jobs: enqueue, ls, show, history, logs, watch."""

from __future__ import annotations

import shlex
import time
from typing import Annotated

import typer

from conveyor.app import MAX_PAGE
from conveyor.cli import render
from conveyor.cli.input import parse_params
from conveyor.cli.options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    AppOption,
    IdsArgument,
    JsonOption,
    actor,
    command,
    examples,
    for_each,
    open_app,
)
from conveyor.cli.search import (
    CreatedAfter,
    CreatedBefore,
    FinishedAfter,
    FinishedBefore,
    IdPrefix,
    QueueFilter,
    SearchText,
    StateFilter,
    TypeFilter,
    filters,
)
from conveyor.dependencies import linked_jobs
from conveyor.model import Job


@command("enqueue", epilog=examples(
    "conveyor enqueue --app myapp:app reports.generate -p month=2026-10",
    """conveyor enqueue --app myapp:app files.process --params '{"count": 20}' --delay 60"""))
def enqueue(
    ctx: typer.Context,
    job_type: Annotated[str, typer.Argument(metavar="TYPE", help="A registered job type.")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", metavar="KEY=VALUE", show_default=False,
        help="One param (repeatable); VALUE is JSON if it parses, else a string.")] = None,
    params: Annotated[str | None, typer.Option(
        "--params", metavar="JSON", help="All params as a JSON object; --param adds to it.",
        show_default=False)] = None,
    queue: Annotated[str | None, typer.Option(help="Queue (default: the type's).",
                                              show_default=False)] = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs first.",
                                                 show_default=False)] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds before it may run.",
                                                show_default=False)] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Retries allowed (default: the "
                                                          "type's).", show_default=False)] = None,
    unique_key: Annotated[str | None, typer.Option(
        "--unique-key", metavar="KEY", show_default=False,
        help="Create no second job while an unfinished one holds KEY.")] = None,
    on_conflict: Annotated[str, typer.Option(
        "--on-conflict", metavar="MODE",
        help="With --unique-key: return_existing (print the holder) or raise (exit 3).",
    )] = "return_existing",
    depends_on: Annotated[list[str] | None, typer.Option(
        "--depends-on", metavar="ID", show_default=False,
        help="Run only once job ID completed (repeatable).")] = None,
    on_dependency_failure: Annotated[str, typer.Option(
        "--on-dependency-failure", metavar="MODE",
        help="When a dependency is cancelled or fails for good: cancel this job, or run it.",
    )] = "cancel",
    app_ref: AppOption = None,
    json_out: JsonOption = False,
) -> None:
    """Enqueue one job; prints its id (or the job as JSON)."""
    values = parse_params(params, param or [])
    app = open_app(ctx, app_ref, needs_app="enqueue")
    job = app.enqueue(job_type, values, queue=queue, priority=priority, delay=delay,
                      max_attempts=max_attempts, unique_key=unique_key,
                      on_conflict=on_conflict, depends_on=depends_on,
                      on_dependency_failure=on_dependency_failure, actor=actor())
    if json_out and job.existing:  # as the HTTP API says it: the holder, flagged
        render.print_json({**job.to_dict(), "existing": True})
    else:
        render.print_outcome("already enqueued" if job.existing else "enqueued", job, json_out)


# -- reading --------------------------------------------------------------------------------------
@command("ls", epilog=examples(
    "conveyor ls --state running --state paused", "conveyor ls --type files.process -n 50",
    "conveyor ls --state failed --finished-after 2h --search timeout",
    "conveyor ls --before ID", note="--before takes the cursor printed for the next page."))
def list_jobs(
    ctx: typer.Context,
    state: StateFilter = None,
    job_type: TypeFilter = None,
    queue: QueueFilter = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=MAX_PAGE,
                                       help="Jobs per page.")] = 20,
    before: Annotated[str | None, typer.Option(
        metavar="ID", help="Start after this job (the cursor printed for the next page).",
        show_default=False)] = None,
    id_prefix: IdPrefix = None,
    created_after: CreatedAfter = None,
    created_before: CreatedBefore = None,
    finished_after: FinishedAfter = None,
    finished_before: FinishedBefore = None,
    text: SearchText = None,
    json_out: JsonOption = False,
) -> None:
    """List jobs, newest first, a page at a time; filter by state, type, queue, id, time, text."""
    given = filters(state, job_type, queue, id_prefix, created_after, created_before,
                    finished_after, finished_before, text)
    app = open_app(ctx)
    fetched = app.list(**given, limit=min(limit + 1, MAX_PAGE), before=before)
    page = fetched[:limit]
    more = bool(page) and (len(fetched) > limit or len(page) == MAX_PAGE)
    cursor = page[-1].id if more else None
    if json_out:
        render.print_json({"jobs": [job.to_dict() for job in page], "next_before": cursor})
        return
    out = render.make_console()
    if not page:
        out.print("no jobs", style="dim")
        return
    out.print(render.jobs_table(page, render.utcnow(), ascii_bar=render.ascii_only(out)))
    if cursor:
        out.print(render.shown(f"next page: {_next_page(ctx, limit, cursor)}", style="dim"))


def _next_page(ctx: typer.Context, limit: int, cursor: str) -> str:
    """The command line of the next page: this one's options, with the new cursor."""
    words = ["conveyor ls"]
    for name, value in ctx.params.items():
        option = "--" + {"job_type": "type", "text": "search", "id_prefix": "id"}.get(
            name, name).replace("_", "-")
        if name in ("limit", "before", "json_out") or not value:
            continue
        values = list(value) if isinstance(value, list | tuple) else [value]
        words.extend(f"{option} {shlex.quote(str(getattr(v, 'value', v)))}" for v in values)
    return " ".join([*words, f"--limit {limit}", f"--before {cursor}"])


@command("show", epilog=examples("conveyor show ID", "conveyor show ID1 ID2 --json",
                            note="--json prints one JSON object per line."))
def show(ctx: typer.Context, job_ids: IdsArgument, json_out: JsonOption = False) -> None:
    """Show everything about jobs: state, progress, checkpoint, result or error, times."""
    app = open_app(ctx)
    out = render.make_console()

    def show_one(job_id: str) -> None:
        job = app.get(job_id)
        held = app.held_reason(job)
        upstream, downstream = app.dependencies(job.id)
        if json_out:
            render.print_json({**job.to_dict(), "held": held, "upstream": linked_jobs(upstream),
                               "downstream": linked_jobs(downstream)})
        else:
            out.print(render.job_panel(job, render.utcnow(), ascii_bar=render.ascii_only(out),
                                       held=held, links=(upstream, downstream)))

    for_each(job_ids, show_one)


@command("history", epilog=examples("conveyor history ID", "conveyor history ID --json"))
def history(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="Job id.")],
    json_out: JsonOption = False,
) -> None:
    """Show a job's transitions and requests, oldest first, with actor and reason."""
    entries = open_app(ctx).history(job_id)
    if json_out:
        render.print_json([entry.to_dict() for entry in entries])
    else:
        render.make_console().print(render.history_table(entries, render.utcnow(), title=job_id))


@command("logs", epilog=examples(
    "conveyor logs ID", "conveyor logs ID --follow", "conveyor logs ID --attempt 1 --json",
    note="Lines are kept per attempt (the last 1,000 lines / 256 KiB of each by default); "
         "--follow ends when the job has finished."))
def logs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="Job id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines "
                                         "until the job has finished.")] = False,
    attempt: Annotated[int | None, typer.Option(min=0, help="Only this attempt (retries used "
                                                "before it: 0 is the first run).")] = None,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between looks while "
                                                           "following.")] = 1.0,
    json_out: JsonOption = False,
) -> None:
    """Show what a job logged while it ran (``logging`` and ``ctx.log``), oldest first."""
    app = open_app(ctx)
    after = 0
    try:
        while True:
            job = app.get(job_id) if follow else None
            lines = app.logs(job_id, attempt=attempt, after=after, limit=MAX_PAGE * 10)
            for line in lines:
                if json_out:
                    render.print_json({"job_id": line.job_id, **line.to_dict()})
                else:
                    typer.echo(render.log_line(line))
            after = lines[-1].id if lines else after
            if not follow or (job is not None and job.is_terminal and not lines):
                return
            if not lines:
                time.sleep(interval)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


# -- watching --------------------------------------------------------------------------------------
@command("watch", epilog=examples(
    "conveyor watch", "conveyor watch ID1 ID2",
    note="Without ids: every unfinished job. Ctrl-C stops watching (exit 130) and leaves the "
         "jobs alone."))
def watch(
    ctx: typer.Context,
    job_ids: Annotated[list[str] | None, typer.Argument(
        metavar="[ID]...", help="Jobs to watch (default: every unfinished job).",
        show_default=False)] = None,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between looks at the "
                                                           "store.")] = 0.25,
) -> None:
    """Live progress bars and state changes until the jobs are finished.

    Finished: completed, cancelled, or failed with no retry left.
    """
    app = open_app(ctx)
    jobs: list[Job] = []
    worst = EXIT_OK
    if job_ids:
        try:
            for_each(job_ids, lambda job_id: jobs.append(app.get(job_id)))
        except typer.Exit as missing:  # reported; watch the others
            worst = missing.exit_code
    else:
        jobs = render.unfinished(app.list(list(render.UNFINISHED), limit=MAX_PAGE))
    out = render.make_console()
    if not jobs:
        out.print("nothing to watch" if job_ids else "nothing to watch: no unfinished jobs")
    else:
        try:
            render.watch_until_done(app, jobs, out, interval)
        except KeyboardInterrupt:
            typer.echo("stopped watching; the jobs are left as they are", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if worst:
        raise typer.Exit(worst)
