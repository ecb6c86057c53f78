"""Commands for operators: ``prune`` (retention on demand), ``workers`` (list, stop) and
``check`` (a readiness probe for containers)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from conveyor.cli import render
from conveyor.cli.options import (
    EXIT_REFUSED,
    EXIT_STORE,
    AppOption,
    JsonOption,
    command,
    examples,
    open_app,
    report,
)
from conveyor.lifecycle import JobState
from conveyor.operations import check_store
from conveyor.presence import WorkerInfo, WorkerStatus
from conveyor.retention import parse_age
from conveyor.stores import open_store

#: ``conveyor workers [stop ID]``: registered by the package as a group of its own.
workers_app = typer.Typer(name="workers", invoke_without_command=True,
                          help="List the workers (alive first), or ask one to stop.")
_STATUS_STYLES = {WorkerStatus.RUNNING: "green", WorkerStatus.STOPPING: "yellow",
                  WorkerStatus.STOPPED: "bright_black", WorkerStatus.GONE: "red"}


@command("prune", epilog=examples(
    "conveyor prune --dry-run", "conveyor prune --older-than 7d --state completed",
    note="Without --older-than each state keeps its default age: completed 7d, failed (for "
         "good) and cancelled 30d. Workers also prune on their own (see conveyor worker "
         "--keep)."))
def prune(
    ctx: typer.Context,
    older_than: Annotated[str | None, typer.Option(
        metavar="AGE", show_default=False,
        help="Delete finished jobs older than AGE (7d, 12h, 30m, 90s, 2w).")] = None,
    state: Annotated[list[JobState] | None, typer.Option(
        metavar="STATE", show_default=False,
        help="Only jobs in this state: completed, failed or cancelled (repeatable; default "
             "all three).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Only count what would be deleted.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000,
                                            help="Jobs deleted per transaction.")] = 500,
    json_out: JsonOption = False,
) -> None:
    """Delete finished jobs (completed, cancelled, failed for good) and their history."""
    age = None if older_than is None else parse_age(older_than)
    app = open_app(ctx)
    counts = app.prune(age, states=state, dry_run=dry_run, batch_size=batch_size)
    total = sum(counts.values())
    if json_out:
        render.print_json({"dry_run": dry_run, "total": total,
                           "by_state": {s.value: n for s, n in counts.items()}})
        return
    detail = ", ".join(f"{n:,} {s.value}" for s, n in counts.items()) or "no state to prune"
    verb = "would delete" if dry_run else "deleted"
    render.make_console().print(Text(f"{verb} {total:,} job{'s' * (total != 1)} ({detail})"))


@workers_app.callback()
def workers(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """List the registered workers: running, stopping, stopped or gone (alive first)."""
    if ctx.invoked_subcommand is not None:
        return
    found = open_app(ctx).workers()
    if json_out:
        for worker in found:
            render.print_json(worker.to_dict())
        return
    render.make_console().print(workers_table(found))


def workers_table(found: list[WorkerInfo]) -> Table:
    now = render.utcnow()
    table = Table("worker", "status", "host", "pid", "queues", "running", "started",
                  "last heartbeat", "version", header_style="bold")
    for w in found:
        table.add_row(render.shown(w.id), render.shown(w.status.value, _STATUS_STYLES[w.status]),
                      render.shown(w.host), str(w.pid),
                      render.shown(", ".join(w.queues) or "all"),
                      f"{w.running}/{w.concurrency}", render.timestamp(w.started_at, now),
                      render.timestamp(w.seen_at, now), render.shown(w.version))
    if not found:
        table.add_row("(no workers registered)", *[""] * 8)
    return table


@workers_app.command("stop", epilog=examples("conveyor workers stop myhost:4242:1a2b3c"))
def stop_worker(ctx: typer.Context,
                worker_id: Annotated[str, typer.Argument(metavar="ID", help="The worker.")],
                json_out: JsonOption = False) -> None:
    """Ask a worker to stop gracefully, as on SIGTERM: it stops claiming, its running jobs
    finish or pause at a checkpoint (resumed elsewhere). It sees the request on its next
    heartbeat."""
    info = open_app(ctx).stop_worker(worker_id)
    if json_out:
        render.print_json(info.to_dict())
    else:
        render.make_console().print(render.shown(
            f"worker {info.id} asked to stop (it will on its next heartbeat)"))


@command("check", epilog=examples(
    "conveyor --store postgresql://me@db/jobs check",
    note="For container probes: exit 0 when ready; 4 when the store is unreachable (or "
         "corrupt, foreign, newer); 1 when its schema is behind (run conveyor migrate); 2 "
         "for a malformed store URL. Never migrates, never prints a password."))
def check(ctx: typer.Context, app_ref: AppOption = None) -> None:
    """Check that the store is reachable and its schema current; exit 0 when ready."""
    url = open_app(ctx, app_ref).url
    store = open_store(url)  # raises StoreError (exit 4) when unreachable
    try:
        readiness = check_store(store)
    finally:
        store.close()
    if not readiness.ready:
        report(f"not ready: {readiness.message}")
        raise typer.Exit(EXIT_STORE if readiness.schema_version is None else EXIT_REFUSED)
    render.make_console().print(Text(f"{render.redact(url)}: {readiness.message}"))
