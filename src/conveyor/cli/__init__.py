"""The ``conveyor`` command line: a thin adapter over :class:`conveyor.Conveyor`.

Each command parses its options, calls one method of the app and prints the outcome; the
lifecycle rules, validation and wording of errors all come from the app, so the command line
can never disagree with the Python API or the dashboard. The package: :mod:`.options` (what
every command shares: exit codes, errors, option types), :mod:`.jobs`, :mod:`.control` and
:mod:`.ops` (the commands by group), :mod:`.render` (tables, panels, live bars) and
:mod:`.input` (``--app`` and params).
"""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.app import DEFAULT_URL
from conveyor.cli import control, flow, jobs, operations, ops
from conveyor.cli.options import (
    COMMANDS,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STORE,
    EXIT_USAGE,
    ROOT_EPILOG,
    AppOption,
    ConveyorGroup,
    Settings,
    exit_code_for,
)
from conveyor.lifecycle import Verb

cli = typer.Typer(
    name="conveyor", cls=ConveyorGroup, no_args_is_help=True, epilog=ROOT_EPILOG,
    rich_markup_mode="rich", pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: The commands in the order ``conveyor --help`` lists them; the control verbs in table order.
HELP_ORDER = ("worker", "enqueue", "ls", "show", "history", "logs",
              *(verb.value for verb in Verb), "run-now", "reschedule", "queues", "limits",
              "schedules", "watch", "dashboard", "migrate", "prune", "check", "demo")
_GROUPS = (jobs, control, flow, ops, operations)  # imported for the commands they record


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



for _name in HELP_ORDER:
    _func, _settings = COMMANDS[_name]
    cli.command(_name, **_settings)(_func)
cli.add_typer(flow.queue_app, name="queue")
cli.add_typer(operations.workers_app, name="workers")
if set(COMMANDS) != set(HELP_ORDER):  # pragma: no cover - a programming error
    raise RuntimeError(f"commands not in HELP_ORDER: {sorted(set(COMMANDS) - set(HELP_ORDER))}")


def main() -> None:
    """The ``conveyor`` console script."""
    cli(prog_name="conveyor")


__all__ = ["EXIT_CODES", "EXIT_INTERRUPTED", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_REFUSED",
           "EXIT_STORE", "EXIT_USAGE", "cli", "exit_code_for", "main"]
