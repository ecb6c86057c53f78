"""Commands that run things: a worker, the dashboard, a migration, the demo."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated

import typer
from rich.text import Text

from conveyor.cli import render
from conveyor.cli.options import AppOption, JsonOption, Settings, command, examples, open_app
from conveyor.errors import ConfigurationError
from conveyor.events import JobEvent, JobProgressed
from conveyor.joblogs import JobLogLimits
from conveyor.logfmt import JsonFormatter, WorkerField, event_fields
from conveyor.retention import Retention, finished_states, parse_age

log = logging.getLogger("conveyor.cli")


# -- running work ---------------------------------------------------------------------------------
class Pool(StrEnum):
    THREAD = "thread"
    PROCESS = "process"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@contextmanager
def worker_logging(level: LogLevel, fmt: LogFormat = LogFormat.TEXT) -> Iterator[WorkerField]:
    """Send conveyor's log lines to stderr while the worker runs, and undo it afterwards.

    Yields the filter that stamps each line with the worker's id (JSON lines carry it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON
                         else logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    stamp = WorkerField()
    handler.addFilter(stamp)
    logger = logging.getLogger("conveyor")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    try:
        yield stamp
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def serve_metrics(port: int, addr: str) -> None:
    """Start the worker's metrics endpoint, or say plainly why it cannot be."""
    try:
        from conveyor.metrics import serve_worker_metrics
    except ImportError:
        raise ConfigurationError("--metrics-port needs the metrics extra: pip install "
                                 "'conveyor[metrics]'") from None
    try:
        serve_worker_metrics(port, addr)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {addr}:{port}: "
                                 f"{exc.strerror or exc}") from None
    log.info("worker metrics on http://%s:%d/metrics", addr, port)


def log_event(event: JobEvent) -> None:
    if not isinstance(event, JobProgressed):
        log.info("%s", render.event_line(event, clock=False).plain, extra=event_fields(event))


def retention_of(keep: list[str] | None, off: bool) -> Retention | None:
    """``--keep STATE=AGE`` (AGE: 7d, 12h..., or ``forever``) over the defaults."""
    if off:
        return None
    ages: dict[str, float | None] = {}
    for item in keep or []:
        state, sep, age = item.partition("=")
        if not sep:
            raise ConfigurationError(f"--keep takes STATE=AGE (e.g. completed=3d), not {item!r}")
        (chosen,) = finished_states([state.strip()])
        ages[chosen.value] = None if age.strip().lower() == "forever" else parse_age(age)
    return Retention(**ages)  # type: ignore[arg-type]


@command("worker", epilog=examples("conveyor worker --app myapp:app -c 8 -q default -q reports",
                            "conveyor worker --app myapp:app --burst",
                            "conveyor worker --app myapp:app --pool process -c 2",
                            note="--burst drains the runnable jobs, then exits. --pool process "
                                 "runs each slot's jobs in a child process (CPU-bound work, "
                                 "hard stops)."))
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
    pool: Annotated[Pool, typer.Option(help="Run jobs in the worker's threads, or each slot's "
                                            "in a child process of its own.")] = Pool.THREAD,
    max_jobs_per_child: Annotated[int | None, typer.Option(
        min=1, help="With --pool process: replace a slot's process after this many jobs "
                    "(default: never).", show_default=False)] = None,
    metrics_port: Annotated[int | None, typer.Option(
        min=1, max=65535, help="Serve Prometheus metrics of this worker on this port (needs "
        "the metrics extra).", show_default=False)] = None,
    metrics_addr: Annotated[str, typer.Option(help="Address the metrics port binds.")] = (
        "127.0.0.1"),
    job_log_lines: Annotated[int, typer.Option(min=0, help="Lines of each attempt's log kept "
                                               "(0: job logs off).")] = 1000,
    job_log_kib: Annotated[int, typer.Option(min=1, help="KiB of each attempt's log "
                                             "kept.")] = 256,
    log_format: Annotated[LogFormat, typer.Option(
        help="text for people; json: one JSON object per line, for log shippers.")] = (
        LogFormat.TEXT),
    keep: Annotated[list[str] | None, typer.Option(
        metavar="STATE=AGE", show_default=False,
        help="Retention: delete finished jobs of STATE (completed, failed, cancelled) older "
             "than AGE (7d, 12h, 30m) or keep them 'forever' (repeatable; defaults: "
             "completed=7d failed=30d cancelled=30d).")] = None,
    no_retention: Annotated[bool, typer.Option(
        help="This worker deletes no finished jobs.")] = False,
) -> None:
    """Run a worker: claim jobs, run them, keep their leases alive, until SIGINT/SIGTERM.

    On SIGTERM running jobs pause at their next checkpoint and are resumed by another worker.
    """
    retention = retention_of(keep, no_retention)
    app = open_app(ctx, app_ref, needs_app="worker")
    settings = ctx.find_object(Settings)
    pooling = {"pool": pool.value, "max_jobs_per_child": max_jobs_per_child,
               "app_path": app_ref or (settings.app_ref if settings else None)}
    with worker_logging(log_level, log_format) as stamp:
        app.store.schema_version()  # a bad store fails now (exit 4), not in a retry loop
        runner = app.worker(concurrency=concurrency, queues=queue, lease_seconds=lease_seconds,
                            heartbeat_interval=heartbeat_interval, poll_interval=poll_interval,
                            shutdown_grace=shutdown_grace, cancel_grace=cancel_grace,
                            metrics=metrics_port is not None,
                            job_logs=JobLogLimits(job_log_lines, job_log_kib),
                            retention=retention, **pooling)
        stamp.worker_id = runner.worker_id
        if metrics_port is not None:
            serve_metrics(metrics_port, metrics_addr)
        unsubscribe = app.subscribe(log_event)
        try:
            runner.run(burst=burst)  # logs its stats when it stops
        finally:
            unsubscribe()


# -- the dashboard, the store and the demo --------------------------------------------------------
@command("dashboard", epilog=examples(
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



@command("migrate", epilog=examples("conveyor --store postgresql://me@db/jobs migrate"))
def migrate(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Create or upgrade the store's schema and print its version (also done on first use)."""
    app = open_app(ctx)
    version = app.store.schema_version()
    if json_out:
        render.print_json({"store": render.redact(app.url), "schema_version": version})
    else:
        render.make_console().print(Text(f"{render.redact(app.url)}: schema version {version}"))


@command("demo", epilog=examples("conveyor demo", note="make demo runs it too; it ignores "
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
