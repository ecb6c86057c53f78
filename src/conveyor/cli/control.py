"""The control verbs, one command each, from the lifecycle's verbs table.

The verbs that act on a job (pause, resume, cancel, retry) share one shape and are registered
in a loop over the table; requeue makes a new job and has options of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from conveyor.cli import render
from conveyor.cli.options import (
    AppOption,
    JsonOption,
    ReasonOption,
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
    YesOption,
    bulk_command,
    filters,
)
from conveyor.errors import InvalidParams
from conveyor.lifecycle import VERBS, Verb
from conveyor.model import Job

OptionalIds = Annotated[list[str] | None, typer.Argument(
    metavar="[ID]...", help="Job ids (or none, and a filter).", show_default=False)]
BULK_HELP = ("\n\nWith a filter (--state, --type, --queue, --id, a time window, --search) "
             "instead of ids: every job it matches, after a confirmation that shows how many "
             "(--yes skips it); in batches, each job's change still a compare-and-set.")

# -- control ---------------------------------------------------------------------------------------
#: Each verb's help and example; the verbs themselves come from the lifecycle's verbs table.
CONTROL_HELP: dict[Verb, tuple[str, tuple[str, ...]]] = {
    Verb.PAUSE: ("Ask running jobs to pause at their next checkpoint (they stay running until "
                 "then).", ("conveyor pause ID --reason 'database maintenance'",
                             "conveyor pause --state running --type reports.build")),
    Verb.RESUME: ("Resume paused jobs from their checkpoint (a worker picks them up), or "
                  "withdraw a pause request not yet honoured.",
                  ("conveyor resume ID1 ID2", "conveyor resume --state paused --yes")),
    Verb.CANCEL: ("Cancel jobs: pending and paused ones at once, running ones at their next "
                  "checkpoint (or by force after the worker's grace period).",
                  ("conveyor cancel ID -r 'not needed'",
                   "conveyor cancel --state pending --type reports.build")),
    Verb.RETRY: ("Send failed jobs that have retries left back to pending now.",
                 ("conveyor retry ID", "conveyor retry --state failed --since 2h")),
}


def add_control_command(verb: Verb) -> None:
    """Register a verb that acts on the job itself: same shape, one app method each."""
    summary, example = CONTROL_HELP[verb]

    def run(ctx: typer.Context, job_ids: OptionalIds = None, reason: ReasonOption = "",
            state: StateFilter = None, job_type: TypeFilter = None, queue: QueueFilter = None,
            id_prefix: IdPrefix = None, created_after: CreatedAfter = None,
            created_before: CreatedBefore = None, finished_after: FinishedAfter = None,
            finished_before: FinishedBefore = None, text: SearchText = None,
            yes: YesOption = False, json_out: JsonOption = False) -> None:
        given = filters(state, job_type, queue, id_prefix, created_after, created_before,
                        finished_after, finished_before, text)
        app = open_app(ctx)
        if not job_ids:
            bulk_command(app, verb, given, yes=yes, reason=reason, json_out=json_out)
            return
        _no_filter_with_ids(given)
        operation: Callable[..., Job] = getattr(app, verb.value)
        for_each(job_ids, lambda job_id: render.print_outcome(
            verb.value, operation(job_id, actor=actor(), reason=reason), json_out))

    command(verb.value, help=summary + BULK_HELP, epilog=examples(*example))(run)


def _no_filter_with_ids(given: dict[str, Any]) -> None:
    if any(value is not None for value in given.values()):
        raise InvalidParams("give job ids or a filter, not both")


for _verb in Verb:
    if not VERBS[_verb].copies:  # requeue has options of its own: its command is below
        add_control_command(_verb)


@command("requeue", epilog=examples(
    "conveyor requeue ID --app myapp:app --keep-checkpoint",
    "conveyor requeue --state failed --finished-after 1h --yes"))
def requeue(
    ctx: typer.Context,
    job_ids: OptionalIds = None,
    keep_checkpoint: Annotated[bool, typer.Option(
        help="Start the copy from the original's checkpoint.")] = False,
    state: StateFilter = None, job_type: TypeFilter = None, queue: QueueFilter = None,
    id_prefix: IdPrefix = None, created_after: CreatedAfter = None,
    created_before: CreatedBefore = None, finished_after: FinishedAfter = None,
    finished_before: FinishedBefore = None, text: SearchText = None,
    yes: YesOption = False,
    app_ref: AppOption = None,
    json_out: JsonOption = False,
) -> None:
    """Enqueue a fresh copy of jobs that stopped for good; each links back to its original.

    Stopped for good: completed, cancelled, or failed with no retry left. With a filter
    instead of ids: every matching job, after a confirmation.
    """
    given = filters(state, job_type, queue, id_prefix, created_after, created_before,
                    finished_after, finished_before, text)
    app = open_app(ctx, app_ref)  # with --app the copy's params are checked again
    if not job_ids:
        bulk_command(app, Verb.REQUEUE, given, yes=yes, reason="", json_out=json_out,
                     keep_checkpoint=keep_checkpoint)
        return
    _no_filter_with_ids(given)
    for_each(job_ids, lambda job_id: render.print_outcome(
        f"requeue {job_id} ->", app.requeue(job_id, actor=actor(),
                                            keep_checkpoint=keep_checkpoint), json_out))
