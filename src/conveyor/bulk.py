"""Bulk actions: one control verb applied to every job a filter matches.

Why it is built this way:
- The jobs are read a page at a time, newest first, along a cursor (``before``), so a job
  enqueued while the action runs is not touched, and a page of jobs the action moved out of the
  filter does not shift the next page.
- Each page is decided job by job from the verbs table, exactly as the single-job verb
  decides, then written as one batch (:meth:`Engine.apply_many`): one transaction per page,
  each job's change still its own compare-and-set with its history row and event. A job that
  moved between the read and the write (a worker claimed it) is refused by its compare-and-set,
  left as the worker left it, and counted as skipped; it is not decided again, since the
  operator previewed the jobs as they were.
- ``requeue`` makes copies instead (a batch of inserts); the originals are not changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conveyor import lifecycle, validate
from conveyor.changes import Change
from conveyor.decisions import changes_for
from conveyor.engine import Engine
from conveyor.errors import ConfigurationError, ConveyorError, InvalidParams, StoreError
from conveyor.filters import has_filter
from conveyor.lifecycle import VERBS, Effect, Verb
from conveyor.model import Job
from conveyor.stores.base import JobQuery, NewJob

#: Jobs read, decided and written per transaction.
BATCH_SIZE = 500
MAX_BATCH_SIZE = 1000


@dataclass(frozen=True)
class BulkResult:
    """What a bulk action did. ``matched``: the jobs it looked at (a dry run: the jobs the
    filter matches now); ``changed``: the jobs it changed (requeue: the copies it made);
    ``unchanged``: jobs the verb does nothing to as they are (a retry of a completed job, a
    second cancel request); ``skipped``: jobs that moved between the read and the write."""

    verb: str
    matched: int
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_bulk(verb: Verb | str, query: JobQuery, actor: str, reason: str,
               batch_size: int) -> Verb:
    """The verb, after every argument is checked (nothing is read or written before)."""
    try:
        checked = Verb(verb)
    except ValueError:
        raise InvalidParams(f"unknown verb {str(verb)[:40]!r} (valid: "
                            f"{', '.join(v.value for v in Verb)})") from None
    validate.actor(actor)
    validate.reason(reason)
    if not isinstance(batch_size, int) or not 0 < batch_size <= MAX_BATCH_SIZE:
        raise ConfigurationError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, not "
                                 f"{batch_size!r}")
    if not has_filter(query):
        raise InvalidParams("a bulk action needs a filter (a state, type, queue, id prefix, "
                            "time window or text): it would touch every job")
    return checked


def run_bulk(engine: Engine, verb: Verb, query: JobQuery, *, actor: str, reason: str,
             batch_size: int, copy: Callable[[Job], NewJob]) -> BulkResult:
    """Apply ``verb`` to every job ``query`` matches, a page per transaction."""
    counts = {"matched": 0, "changed": 0, "unchanged": 0, "skipped": 0}
    cursor: str | None = None
    while True:
        page = engine.store.list_jobs(dataclasses.replace(query, limit=batch_size,
                                                          before=cursor))
        if not page:
            break
        counts["matched"] += len(page)
        if VERBS[verb].copies:
            _copy_page(engine, page, actor, reason or "bulk requeue", copy, counts)
        else:
            _change_page(engine, verb, page, actor, reason or f"bulk {verb.value}", counts)
        if len(page) < batch_size:
            break
        cursor = page[-1].id
    return BulkResult(verb.value, counts["matched"], counts["changed"], counts["unchanged"],
                      counts["skipped"])


def _change_page(engine: Engine, verb: Verb, page: list[Job], actor: str, reason: str,
                 counts: dict[str, int]) -> None:
    changes: list[Change] = []
    for job in page:
        rule = lifecycle.verb_rule(verb, job)
        if rule is None or rule.effect is Effect.NOTHING:
            counts["unchanged"] += 1
            continue
        changes.extend(changes_for(rule.effect, job, actor, reason))
    if changes:
        rows = engine.apply_many(changes)
        landed = sum(row is not None for row in rows)
        counts["changed"] += landed
        counts["skipped"] += len(rows) - landed


def _copy_page(engine: Engine, page: list[Job], actor: str, reason: str,
               copy: Callable[[Job], NewJob], counts: dict[str, int]) -> None:
    news: list[NewJob] = []
    for job in page:
        try:
            news.append(copy(job))
        except StoreError:
            raise
        except ConveyorError:  # not stopped for good, or its params no longer fit
            counts["unchanged"] += 1
    if news:
        engine.insert(news, actor=actor, reason=reason)
        counts["changed"] += len(news)
