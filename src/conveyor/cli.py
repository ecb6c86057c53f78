"""The ``conveyor`` command line: a thin adapter over :class:`conveyor.Conveyor`.

Each command parses its options, calls one method of the app and prints the outcome; the
lifecycle rules, validation and wording of errors all come from the app, so the command line
can never disagree with the Python API or the dashboard. Rendering lives in
:mod:`conveyor.cli_render`.

Errors. Every deliberate failure is a :class:`~conveyor.errors.ConveyorError`; it is printed as
one ``error: ...`` line on stderr and mapped to an exit code (see :data:`EXIT_CODES`). Click's
own usage errors are reduced to one line in the same way by :class:`ConveyorGroup`, so a user
mistake never shows a traceback or a multi-line usage banner.
"""

from __future__ import annotations

import getpass
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text
from typer.core import TyperGroup

from conveyor import cli_render as render
from conveyor.app import DEFAULT_URL, MAX_PAGE, Conveyor
from conveyor.cli_input import load_app, parse_params
from conveyor.display import visible
from conveyor.errors import (
    ConfigurationError,
    ConveyorError,
    InvalidParams,
    JobNotFound,
    StoreError,
    UnknownJobType,
)
from conveyor.events import JobEvent, JobProgressed
from conveyor.lifecycle import VERBS, JobState, Verb
from conveyor.model import Job

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_STORE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
EXIT_CODES = (
    "[bold]Exit codes:[/bold] 0 ok · 1 refused (an illegal transition) · 2 usage error (bad "
    "option or params, unknown job type, malformed --app or store URL) · 3 job not found · "
    "4 store unavailable (unreachable, corrupt or foreign database) · 130 interrupted. "
    "With several ids, each is processed and the exit code is the worst one."
)
log = logging.getLogger("conveyor.cli")


def examples(*lines: str, note: str = "") -> str:
    """A help epilog: example command lines, a paragraph each (Rich joins single lines)."""
    shown = "\n\n".join(f"  [cyan]{escape(line)}[/cyan]" for line in lines)
    return f"[bold]Examples:[/bold]\n\n{shown}" + (f"\n\n{escape(note)}" if note else "")


ROOT_EPILOG = f"{EXIT_CODES}\n\n" + examples(
    "conveyor --store sqlite:///jobs.db ls --state running",
    "conveyor enqueue --app myapp:app files.process -p count=20",
    "conveyor worker --app myapp:app -c 8", "conveyor watch",
    note="Environment: CONVEYOR_STORE (as --store), CONVEYOR_APP (as --app).")


def exit_code_for(exc: ConveyorError) -> int:
    """The documented exit code of a failure, by its class (never by its message)."""
    if isinstance(exc, StoreError):
        return EXIT_STORE
    if isinstance(exc, JobNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, InvalidParams | ConfigurationError | UnknownJobType):
        return EXIT_USAGE
    return EXIT_REFUSED


def report(message: object) -> None:
    """Print one ``error:`` line on stderr (newlines folded so it stays one line; controls in
    a job's data quoted back in the message are shown escaped)."""
    typer.echo(f"error: {visible(' '.join(str(message).split()))}", err=True)


class ConveyorGroup(TyperGroup):
    """Typer's group, with every failure turned into one stderr line and an exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False,
                                  windows_expand_args=windows_expand_args, **extra)
            code = result if isinstance(result, int) else EXIT_OK
        except typer.TyperException as exc:  # Click's errors: bad option, missing argument
            code = exc.exit_code
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one printed the help already
                report(exc.format_message() + _help_hint(exc))
        except typer.Abort:
            report("aborted")
            code = EXIT_REFUSED
        except ConveyorError as exc:
            report(exc)
            code = exit_code_for(exc)
        if standalone_mode:
            sys.exit(code)
        return code


def _help_hint(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    return f" (see '{ctx.command_path} --help')" if ctx is not None else ""


cli = typer.Typer(
    name="conveyor", cls=ConveyorGroup, no_args_is_help=True, epilog=ROOT_EPILOG,
    rich_markup_mode="rich", pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- options shared by several commands -----------------------------------------------------------
AppOption = Annotated[str | None, typer.Option(
    "--app", envvar="CONVEYOR_APP", metavar="MODULE:ATTR", show_default=False,
    help="The app that registers the job types, e.g. myapp.jobs:app (env CONVEYOR_APP).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
IdsArgument = Annotated[list[str], typer.Argument(metavar="ID...", help="Job ids.",
                                                  show_default=False)]
ReasonOption = Annotated[str, typer.Option(
    "--reason", "-r", help="Why: recorded in the job's history.")]


@dataclass(frozen=True)
class Settings:
    """The global options, kept on the Click context for the commands."""

    store: str | None
    app_ref: str | None


def open_app(ctx: typer.Context, app_ref: str | None = None, *, needs_app: str = "") -> Conveyor:
    """The app to work with: the user's (``--app``), or a bare one on the store URL.

    ``--store`` overrides the app's own URL only when given explicitly. The app is closed when
    the command ends.
    """
    settings: Settings = ctx.find_object(Settings) or Settings(None, None)
    ref = app_ref or settings.app_ref
    if ref:
        app = load_app(ref)
        if settings.store:
            app.use_store(settings.store)
    elif needs_app:
        raise ConfigurationError(
            f"{needs_app} needs the app that registers the job types: pass "
            "--app package.module:app or set CONVEYOR_APP")
    else:
        app = Conveyor(settings.store or DEFAULT_URL)
    ctx.call_on_close(app.close)
    return app


def actor() -> str:
    """``cli:<username>``: who did it, in the job's history."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        name = "unknown"
    return f"cli:{name}"


def for_each(job_ids: Sequence[str], operation: Callable[[str], None]) -> None:
    """Run ``operation`` on every id; report failures one line each; exit with the worst code.

    An unavailable store stops the loop at once: the other ids would fail the same way.
    """
    worst = EXIT_OK
    for job_id in job_ids:
        try:
            operation(job_id)
        except StoreError:
            raise
        except ConveyorError as exc:
            report(exc)
            worst = max(worst, exit_code_for(exc))
    if worst:
        raise typer.Exit(worst)


@cli.callback()
def root(
    ctx: typer.Context,
    store: Annotated[str | None, typer.Option(
        "--store", envvar="CONVEYOR_STORE", metavar="URL", show_default=False,
        help=f"Store URL (env CONVEYOR_STORE; default {DEFAULT_URL} in the working folder, "
             "or the app's own URL when --app is given).")] = None,
    app_ref: AppOption = None,
) -> None:
    """Durable background jobs that you can pause, resume, cancel, retry and watch.

    Reading and control commands work on the store alone; [bold]enqueue[/bold] and
    [bold]worker[/bold] need the app that registers the job types (--app or CONVEYOR_APP).
    """
    ctx.obj = Settings(store, app_ref)


# -- running work ---------------------------------------------------------------------------------
class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@contextmanager
def worker_logging(level: LogLevel) -> Iterator[None]:
    """Send conveyor's log lines to stderr while the worker runs, and undo it afterwards."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    logger = logging.getLogger("conveyor")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def log_event(event: JobEvent) -> None:
    if not isinstance(event, JobProgressed):
        log.info("%s", render.event_line(event, clock=False).plain)


@cli.command(epilog=examples("conveyor worker --app myapp:app -c 8 -q default -q reports",
                            "conveyor worker --app myapp:app --burst",
                            note="--burst drains the runnable jobs, then exits."))
def worker(
    ctx: typer.Context,
    app_ref: AppOption = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1,
                                             help="Jobs run at once.")] = 4,
    queue: Annotated[list[str] | None, typer.Option(
        "--queue", "-q", metavar="QUEUE", help="Take jobs from this queue (repeatable; "
        "default all).",
        show_default=False)] = None,
    burst: Annotated[bool, typer.Option(help="Exit once no runnable work is left.")] = False,
    lease_seconds: Annotated[float, typer.Option(help="How long a claim lasts without a "
                                                      "heartbeat.")] = 30.0,
    heartbeat_interval: Annotated[float, typer.Option(help="Seconds between lease "
                                                           "renewals.")] = 10.0,
    poll_interval: Annotated[float, typer.Option(help="Idle wait between looks for "
                                                      "work.")] = 1.0,
    shutdown_grace: Annotated[float, typer.Option(help="Seconds running jobs get to reach a "
                                                       "checkpoint on SIGTERM.")] = 30.0,
    cancel_grace: Annotated[float, typer.Option(help="Seconds a cancelled job may run on "
                                                     "before it is stopped.")] = 10.0,
    log_level: Annotated[LogLevel, typer.Option(help="Log detail on stderr.")] = LogLevel.INFO,
) -> None:
    """Run a worker: claim jobs, run them, keep their leases alive, until SIGINT/SIGTERM.

    On SIGTERM running jobs pause at their next checkpoint and are resumed by another worker.
    """
    app = open_app(ctx, app_ref, needs_app="worker")
    with worker_logging(log_level):
        app.store.schema_version()  # a bad store fails now (exit 4), not in a retry loop
        runner = app.worker(concurrency=concurrency, queues=queue, lease_seconds=lease_seconds,
                            heartbeat_interval=heartbeat_interval, poll_interval=poll_interval,
                            shutdown_grace=shutdown_grace, cancel_grace=cancel_grace)
        unsubscribe = app.subscribe(log_event)
        try:
            runner.run(burst=burst)  # logs its stats when it stops
        finally:
            unsubscribe()


@cli.command(epilog=examples(
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
    app_ref: AppOption = None,
    json_out: JsonOption = False,
) -> None:
    """Enqueue one job; prints its id (or the job as JSON)."""
    values = parse_params(params, param or [])
    app = open_app(ctx, app_ref, needs_app="enqueue")
    job = app.enqueue(job_type, values, queue=queue, priority=priority, delay=delay,
                      max_attempts=max_attempts, actor=actor())
    render.print_outcome("enqueued", job, json_out)


# -- reading --------------------------------------------------------------------------------------
@cli.command("ls", epilog=examples(
    "conveyor ls --state running --state paused", "conveyor ls --type files.process -n 50",
    "conveyor ls --before ID", note="--before takes the cursor printed for the next page."))
def list_jobs(
    ctx: typer.Context,
    state: Annotated[list[JobState] | None, typer.Option(
        "--state", "-s", metavar="STATE", show_default=False,
        help=f"Only jobs in this state (repeatable): {', '.join(JobState)}.")] = None,
    job_type: Annotated[list[str] | None, typer.Option(
        "--type", "-t", metavar="TYPE", help="Only jobs of this type (repeatable).",
        show_default=False)] = None,
    queue: Annotated[list[str] | None, typer.Option(
        "--queue", "-q", metavar="QUEUE", help="Only jobs in this queue (repeatable).",
        show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=MAX_PAGE,
                                       help="Jobs per page.")] = 20,
    before: Annotated[str | None, typer.Option(
        metavar="ID", help="Start after this job (the cursor printed for the next page).",
        show_default=False)] = None,
    json_out: JsonOption = False,
) -> None:
    """List jobs, newest first, a page at a time."""
    app = open_app(ctx)
    fetched = app.list(state or None, job_type=job_type or None, queue=queue or None,
                       limit=min(limit + 1, MAX_PAGE), before=before)
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
        filters = [f"--state {s.value}" for s in state or []] + [
            f"--type {t}" for t in job_type or []] + [f"--queue {q}" for q in queue or []]
        command = " ".join(["conveyor ls", *filters, f"--limit {limit}", f"--before {cursor}"])
        out.print(render.shown(f"next page: {command}", style="dim"))


@cli.command(epilog=examples("conveyor show ID", "conveyor show ID1 ID2 --json",
                            note="--json prints one JSON object per line."))
def show(ctx: typer.Context, job_ids: IdsArgument, json_out: JsonOption = False) -> None:
    """Show everything about jobs: state, progress, checkpoint, result or error, times."""
    app = open_app(ctx)
    out = render.make_console()

    def show_one(job_id: str) -> None:
        job = app.get(job_id)
        if json_out:
            render.print_json(job.to_dict())
        else:
            out.print(render.job_panel(job, render.utcnow(), ascii_bar=render.ascii_only(out)))

    for_each(job_ids, show_one)


@cli.command(epilog=examples("conveyor history ID", "conveyor history ID --json"))
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


# -- control ---------------------------------------------------------------------------------------
#: Each verb's help and example; the verbs themselves come from the lifecycle's verbs table.
CONTROL_HELP: dict[Verb, tuple[str, str]] = {
    Verb.PAUSE: ("Ask running jobs to pause at their next checkpoint (they stay running until "
                 "then).", "conveyor pause ID --reason 'database maintenance'"),
    Verb.RESUME: ("Resume paused jobs from their checkpoint (a worker picks them up), or "
                  "withdraw a pause request not yet honoured.", "conveyor resume ID1 ID2"),
    Verb.CANCEL: ("Cancel jobs: pending and paused ones at once, running ones at their next "
                  "checkpoint (or by force after the worker's grace period).",
                  "conveyor cancel ID -r 'not needed'"),
    Verb.RETRY: ("Send failed jobs that have retries left back to pending now.",
                 "conveyor retry ID"),
}


def add_control_command(verb: Verb) -> None:
    """Register a verb that acts on the job itself: same shape, one app method each."""
    summary, example = CONTROL_HELP[verb]

    def command(ctx: typer.Context, job_ids: IdsArgument, reason: ReasonOption = "",
                json_out: JsonOption = False) -> None:
        app = open_app(ctx)
        operation: Callable[..., Job] = getattr(app, verb.value)
        for_each(job_ids, lambda job_id: render.print_outcome(
            verb.value, operation(job_id, actor=actor(), reason=reason), json_out))

    cli.command(verb.value, help=summary, epilog=examples(example))(command)


for _verb in Verb:
    if not VERBS[_verb].copies:  # requeue has options of its own: its command is below
        add_control_command(_verb)


@cli.command(epilog=examples("conveyor requeue ID --app myapp:app --keep-checkpoint"))
def requeue(
    ctx: typer.Context,
    job_ids: IdsArgument,
    keep_checkpoint: Annotated[bool, typer.Option(
        help="Start the copy from the original's checkpoint.")] = False,
    app_ref: AppOption = None,
    json_out: JsonOption = False,
) -> None:
    """Enqueue a fresh copy of jobs that stopped for good; each links back to its original.

    Stopped for good: completed, cancelled, or failed with no retry left.
    """
    app = open_app(ctx, app_ref)  # with --app the copy's params are checked again
    for_each(job_ids, lambda job_id: render.print_outcome(
        f"requeue {job_id} ->", app.requeue(job_id, actor=actor(),
                                            keep_checkpoint=keep_checkpoint), json_out))


# -- watching --------------------------------------------------------------------------------------
@cli.command(epilog=examples(
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


# -- the dashboard, the store and the demo --------------------------------------------------------
@cli.command(epilog=examples(
    "conveyor dashboard --app myapp:app", "conveyor dashboard --port 9000 --open",
    note="Tokens come from CONVEYOR_TOKEN (full access) and CONVEYOR_READ_TOKEN (read-only); "
         "without CONVEYOR_TOKEN a fresh one is generated and printed. See docs/dashboard.md."))
def dashboard(
    ctx: typer.Context,
    app_ref: AppOption = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = (
        "127.0.0.1"),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the login page in a "
                                                              "browser.")] = False,
    insecure_no_auth: Annotated[bool, typer.Option(
        help="No authentication (refused on anything but loopback).")] = False,
    allow_remote_http: Annotated[bool, typer.Option(
        help="Allow --host off loopback although it serves plain, unencrypted HTTP.")] = False,
    trusted_proxy: Annotated[list[str] | None, typer.Option(
        metavar="IP", help="A TLS proxy whose X-Forwarded-Proto/-For to believe (repeatable; "
        "default 127.0.0.1).", show_default=False)] = None,
    log_level: Annotated[LogLevel, typer.Option(help="uvicorn's log detail.")] = LogLevel.INFO,
) -> None:
    """Serve the web dashboard and the HTTP API until Ctrl-C (needs the web extra)."""
    try:
        from conveyor.web import serve
        from conveyor.web.server import check_bind
    except ImportError as exc:
        raise ConfigurationError(f"the dashboard needs the web extra: pip install "
                                 f"'conveyor[web]' ({exc})") from None
    if not insecure_no_auth:  # (that one has its own, more specific refusal)
        check_bind(host, allow_remote_http)  # before the store is opened: touches nothing
    serve(open_app(ctx, app_ref), host=host, port=port, open_browser=open_browser,
          insecure_no_auth=insecure_no_auth, allow_remote_http=allow_remote_http,
          trusted_proxies=trusted_proxy or (), log_level=log_level.value)



@cli.command(epilog=examples("conveyor --store postgresql://me@db/jobs migrate"))
def migrate(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Create or upgrade the store's schema and print its version (also done on first use)."""
    app = open_app(ctx)
    version = app.store.schema_version()
    if json_out:
        render.print_json({"store": render.redact(app.url), "schema_version": version})
    else:
        render.make_console().print(Text(f"{render.redact(app.url)}: schema version {version}"))


@cli.command(epilog=examples("conveyor demo", note="make demo runs it too; it ignores "
                                               "--store and --app."))
def demo() -> None:
    """Show the whole lifecycle with sample jobs on a fresh SQLite file (about 10 s).

    Progress, a pause and a resume from the checkpoint, a failure retried, a cancel; exits 0
    when every job ended as expected.
    """
    from conveyor.demo import run_demo

    code = run_demo()
    if code:
        raise typer.Exit(code)


def main() -> None:
    """The ``conveyor`` console script."""
    cli(prog_name="conveyor")


if __name__ == "__main__":  # pragma: no cover
    main()

__all__ = ["EXIT_CODES", "cli", "exit_code_for", "main"]
