"""The dashboard's search form and its bulk action bar.

The form is a plain GET form (it works before the script loads); its fields are the HTTP
API's filter parameters. The bulk bar carries the page's filter, as the server read it (times
resolved, so the preview and the action name the same jobs), for ``dashboard.js``: it asks the
API how many jobs match (``dry_run``), shows that count in a confirmation, then acts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from conveyor.lifecycle import JobState, Verb
from conveyor.web.search import FILTER_FIELDS, filters_from_query
from conveyor.web.templates import Markup, join, render

#: The verbs the bulk bar offers, in the order shown.
BULK_VERBS = (Verb.CANCEL, Verb.RETRY, Verb.REQUEUE, Verb.PAUSE, Verb.RESUME)


def page_filters(query: QueryParams) -> tuple[dict[str, Any], dict[str, str]]:
    """The app's filter arguments from the page's query, and the raw values to show again."""
    raw = {name: query.get(name, "") for name in FILTER_FIELDS}
    given = QueryParams([(k, v) for k, v in query.multi_items() if v])  # a form's empty fields
    return filters_from_query(given), raw


def pager_query(raw: dict[str, str], before: str) -> str:
    return urlencode({**{k: v for k, v in raw.items() if v}, "before": before})


def filter_form(raw: dict[str, str], types: list[str], queues: list[str]) -> Markup:
    if raw["job_type"] and raw["job_type"] not in types:
        types = [*types, raw["job_type"]]
    if raw["queue"] and raw["queue"] not in queues:
        queues = [*queues, raw["queue"]]
    times = join([render('<label>{label} <input name="{name}" value="{value}" size="10" '
                         'placeholder="2h or ISO time"></label>', label=label, name=name,
                         value=raw[name])
                  for name, label in (("created_after", "Created after"),
                                      ("created_before", "before"),
                                      ("finished_after", "Finished after"),
                                      ("finished_before", "before"))])
    return render(
        '<label>State <select name="state">{states}</select></label>'
        '<label>Type <select name="job_type">{types}</select></label>'
        '<label>Queue <select name="queue">{queues}</select></label>'
        '<label>Id <input name="id_prefix" value="{id_prefix}" size="10" '
        'placeholder="start or end" class="mono"></label>'
        '<label>Text <input name="text" value="{text}" size="14" type="search" '
        'placeholder="in params or error"></label>'
        '<span class="times">{times}</span>'
        '<button type="submit" class="btn">Filter</button>'
        '<a class="btn btn-quiet" href="{root}/">Reset</a>',
        states=_options([s.value for s in JobState], raw["state"], "any state"),
        types=_options(types, raw["job_type"], "any type"),
        queues=_options(queues, raw["queue"], "any queue"),
        id_prefix=raw["id_prefix"], text=raw["text"], times=times)


def bulk_bar(filters: dict[str, Any], *, can_write: bool) -> Markup:
    """Buttons acting on every job the filter matches; none without a filter or rights."""
    given = {name: value for name, value in filters.items() if value}
    if not can_write or not given:
        return Markup("")
    body = {name: _json_value(value) for name, value in given.items()}
    buttons = join([render('<button type="button" class="btn btn-{verb}" data-bulk="{verb}">'
                           '{label} all matching</button>', verb=verb.value,
                           label=verb.value.capitalize()) for verb in BULK_VERBS])
    return render('<div class="bulk" id="bulk" data-filter="{filter}"><span class="muted">'
                  'Every job this filter matches:</span> {buttons}</div>',
                  filter=json.dumps(body, separators=(",", ":")), buttons=buttons)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return value


def _options(values: list[str], selected: str, everything: str) -> Markup:
    options = [render('<option value="">{label}</option>', label=everything)]
    options.extend(render('<option value="{v}"{sel}>{v}</option>', v=value,
                          sel=Markup(" selected") if value == selected else "")
                   for value in values)
    return join(options)
