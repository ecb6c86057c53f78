"""The control verbs, one command each, from the lifecycle's verbs table.

The verbs that act on a job (pause, resume, cancel, retry) share one shape and are registered
in a loop over the table; requeue makes a new job and has options of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

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
from conveyor.lifecycle import VERBS, Verb
from conveyor.model import Job

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

    def run(ctx: typer.Context, job_ids: IdsArgument, reason: ReasonOption = "",
                json_out: JsonOption = False) -> None:
        app = open_app(ctx)
        operation: Callable[..., Job] = getattr(app, verb.value)
        for_each(job_ids, lambda job_id: render.print_outcome(
            verb.value, operation(job_id, actor=actor(), reason=reason), json_out))

    command(verb.value, help=summary, epilog=examples(example))(run)


for _verb in Verb:
    if not VERBS[_verb].copies:  # requeue has options of its own: its command is below
        add_control_command(_verb)


@command("requeue", epilog=examples("conveyor requeue ID --app myapp:app --keep-checkpoint"))
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
