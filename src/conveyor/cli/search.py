"""The search options ``ls`` and the control verbs share, and a verb applied to a filter.

``conveyor cancel --state pending --type reports.build`` counts the jobs the filter matches,
asks before touching them (``--yes`` does not ask), then runs :meth:`Conveyor.bulk`. Times are
ISO 8601 or an age (``15m``, ``2h``, ``7d``), read by :func:`conveyor.filters.parse_when`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.app import Conveyor
from conveyor.bulk import BulkResult
from conveyor.cli import render
from conveyor.cli.options import EXIT_REFUSED, actor
from conveyor.display import visible
from conveyor.errors import InvalidParams
from conveyor.filters import parse_when
from conveyor.lifecycle import JobState, Verb

_WHEN = "ISO 8601 time or an age (15m, 2h, 7d)"
StateFilter = Annotated[list[JobState] | None, typer.Option(
    "--state", "-s", metavar="STATE", show_default=False,
    help=f"Only jobs in this state (repeatable): {', '.join(JobState)}.")]
TypeFilter = Annotated[list[str] | None, typer.Option(
    "--type", "-t", metavar="TYPE", help="Only jobs of this type (repeatable).",
    show_default=False)]
QueueFilter = Annotated[list[str] | None, typer.Option(
    "--queue", "-q", metavar="QUEUE", help="Only jobs in this queue (repeatable).",
    show_default=False)]
IdPrefix = Annotated[str | None, typer.Option(
    "--id", metavar="ID", help="Only jobs whose id starts or ends with ID (a short id).",
    show_default=False)]
CreatedAfter = Annotated[str | None, typer.Option(
    "--created-after", "--since", metavar="WHEN", show_default=False,
    help=f"Only jobs created at or after WHEN ({_WHEN}).")]
CreatedBefore = Annotated[str | None, typer.Option(
    "--created-before", metavar="WHEN", show_default=False,
    help="Only jobs created before WHEN.")]
FinishedAfter = Annotated[str | None, typer.Option(
    "--finished-after", metavar="WHEN", show_default=False,
    help="Only jobs finished at or after WHEN.")]
FinishedBefore = Annotated[str | None, typer.Option(
    "--finished-before", metavar="WHEN", show_default=False,
    help="Only jobs finished before WHEN.")]
SearchText = Annotated[str | None, typer.Option(
    "--search", metavar="TEXT", show_default=False,
    help="Only jobs whose params or error contain TEXT (case-insensitive).")]
YesOption = Annotated[bool, typer.Option(
    "--yes", "-y", help="With a filter: do not ask for confirmation.")]


def filters(state: list[JobState] | None = None, job_type: list[str] | None = None,
            queue: list[str] | None = None, id_prefix: str | None = None,
            created_after: str | None = None, created_before: str | None = None,
            finished_after: str | None = None, finished_before: str | None = None,
            text: str | None = None) -> dict[str, Any]:
    """The app's filter arguments from the options given (the times parsed)."""
    found: dict[str, Any] = {"state": state or None, "job_type": job_type or None,
                             "queue": queue or None, "id_prefix": id_prefix, "text": text}
    for name, value in (("created_after", created_after), ("created_before", created_before),
                        ("finished_after", finished_after),
                        ("finished_before", finished_before)):
        found[name] = None if value is None else parse_when(f"--{name.replace('_', '-')}",
                                                            value)
    return found


def described(given: dict[str, Any]) -> str:
    """The filter in words, for the confirmation question."""
    parts = []
    for name, value in given.items():
        if value is None:
            continue
        shown = (", ".join(str(v) for v in value) if isinstance(value, list)
                 else value.isoformat() if hasattr(value, "isoformat") else str(value))
        parts.append(f"{name.replace('_', ' ')} {shown}")
    return visible("; ".join(parts))


def bulk_command(app: Conveyor, verb: Verb, given: dict[str, Any], *, yes: bool, reason: str,
                 json_out: bool, **options: Any) -> None:
    """Count, confirm, act; print what was done."""
    if all(value is None for value in given.values()):
        raise InvalidParams(f"give job ids, or a filter (--state, --type, ...) to {verb.value} "
                            "every job it matches")
    preview = app.bulk(verb, **given, dry_run=True, actor=actor(), reason=reason, **options)
    if preview.matched == 0:
        _print(preview, json_out, f"no jobs match ({described(given)})")
        return
    if not yes and not typer.confirm(
            f"{verb.value} {preview.matched} job(s) matching {described(given)}?"):
        typer.echo("nothing was changed", err=True)
        raise typer.Exit(EXIT_REFUSED)
    result = app.bulk(verb, **given, actor=actor(), reason=reason, **options)
    _print(result, json_out, f"{verb.value}: {result.changed} changed, {result.unchanged} "
           f"left as they were, {result.skipped} skipped (moved meanwhile), of "
           f"{result.matched} looked at")


def _print(result: BulkResult, json_out: bool, text: str) -> None:
    if json_out:
        render.print_json(result.to_dict())
    else:
        typer.echo(text)
