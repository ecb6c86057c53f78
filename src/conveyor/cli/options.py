"""What every command shares: exit codes and error reporting, option types, the app to work on.

Errors. Every deliberate failure is a :class:`~conveyor.errors.ConveyorError`; it is printed as
one ``error: ...`` line on stderr and mapped to an exit code (see :data:`EXIT_CODES`). Click's
own usage errors are reduced to one line in the same way by :class:`ConveyorGroup`, so a user
mistake never shows a traceback or a multi-line usage banner.

Commands are recorded with :func:`command` and registered by the package in the order its help
lists them, so a command's module does not decide where it appears.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperGroup

from conveyor.app import DEFAULT_URL, Conveyor
from conveyor.cli.input import load_app
from conveyor.display import visible
from conveyor.errors import (
    ConfigurationError,
    ConveyorError,
    InvalidParams,
    JobNotFound,
    StoreError,
    UnknownJobType,
    WorkerNotFound,
)

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_STORE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
EXIT_CODES = (
    "[bold]Exit codes:[/bold] 0 ok · 1 refused (an illegal transition) · 2 usage error (bad "
    "option or params, unknown job type, malformed --app or store URL) · 3 job not found · "
    "4 store unavailable (unreachable, corrupt or foreign database) · 130 interrupted. "
    "With several ids, each is processed and the exit code is the worst one."
)


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
    if isinstance(exc, JobNotFound | WorkerNotFound):
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



F = TypeVar("F", bound=Callable[..., Any])
#: The commands recorded by the command modules: name -> (function, Typer settings).
COMMANDS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}


def command(name: str, **settings: Any) -> Callable[[F], F]:
    """Record a command for the package to register under ``name``."""

    def record(func: F) -> F:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} is recorded twice")
        COMMANDS[name] = (func, settings)
        return func

    return record
