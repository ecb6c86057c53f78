"""Flow control on the app: paused queues, and editing a job that is still waiting.

A mixin of :class:`~conveyor.app.Conveyor`, apart from the job verbs of the lifecycle's verbs
table. Editing a waiting job (``run_now``, ``reschedule``) is not a row of that table: whether
"run now" means anything depends on the clock (a job already due gains nothing), and the
table is pure; both are named changes of :mod:`conveyor.transitions`, applied as
compare-and-sets on ``state = 'pending'`` through the engine, recorded in the history.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

from conveyor import transitions, validate
from conveyor.changes import Change
from conveyor.engine import Engine
from conveyor.errors import ConfigurationError, InvalidStateError
from conveyor.lifecycle import JobState
from conveyor.limits import LimitRule, check_max_running, held_reason, parse_rate
from conveyor.model import Job, QueueInfo, ScheduleInfo
from conveyor.registry import check_options, check_seconds
from conveyor.schedules import Schedule, make_schedule

F = TypeVar("F", bound=Callable[..., Any])


def _next_run(info: ScheduleInfo, now: datetime) -> datetime | None:
    try:
        return Schedule(info.name, info.cron, info.job_type, timezone=info.timezone).next_run(now)
    except (ValueError, KeyError):  # a recorded schedule this version cannot read
        return None


class FlowControl:
    """Periodic schedules, queue pause/resume and waiting-job edits, over the app's engine."""

    engine: Engine

    # -- periodic jobs ---------------------------------------------------------------------------
    @overload
    def periodic(self, cron: str, job_type: str, *, params: dict[str, Any] | None = None,
                 timezone: str = "UTC", name: str | None = None, queue: str | None = None,
                 priority: int | None = None) -> Schedule: ...
    @overload
    def periodic(self, cron: str, job_type: None = None, *,
                 params: dict[str, Any] | None = None, timezone: str = "UTC",
                 name: str | None = None, queue: str | None = None,
                 priority: int | None = None) -> Callable[[F], F]: ...

    def periodic(self, cron: str, job_type: str | None = None, *,
                 params: dict[str, Any] | None = None, timezone: str = "UTC",
                 name: str | None = None, queue: str | None = None,
                 priority: int | None = None) -> Schedule | Callable[[F], F]:
        """Enqueue ``job_type`` at every tick of ``cron`` (5 fields, or ``@hourly``...), read
        in ``timezone``; workers run the schedule, one job per tick however many there are.

        ``app.periodic("0 3 * * *", "reports.nightly", params={...})`` schedules a registered
        type; as a decorator above ``@app.job`` it schedules the function's type. ``name``
        (default: the job type) identifies the schedule; give one to schedule a type twice.
        Params are checked against the function now, so a bad schedule fails at import.
        """
        def register(type_name: str) -> Schedule:
            spec = self.engine.job_type(type_name)
            spec.bind(params or {})
            spec.limit_key(params or {})
            check_options(None, None, None, queue, priority)
            schedule = make_schedule(name or type_name, cron, type_name, params, timezone,
                                     queue, priority)
            known = self.engine.schedules.get(schedule.name)
            if known is not None and known != schedule:
                raise ConfigurationError(f"schedule {schedule.name!r} is already registered; "
                                         "give another name=")
            self.engine.schedules[schedule.name] = schedule
            return schedule

        if isinstance(job_type, str):
            return register(job_type)
        if job_type is not None:
            raise ConfigurationError("job_type must be a registered type's name")

        def decorate(func: F) -> F:
            found = [t.name for t in self.engine.types.values() if t.func is func]
            if not found:
                raise ConfigurationError(f"{func.__qualname__} is not a registered job: put "
                                         "@app.periodic(...) above @app.job(...)")
            register(found[0])
            return func

        return decorate

    def schedules(self) -> builtins.list[ScheduleInfo]:
        """Every schedule, registered here or recorded by a worker, with its next run, latest
        tick and that tick's job (a control-only app lists the recorded ones)."""
        now = self.engine.store.now()
        stored = {s.name: s for s in self.engine.store.schedules()}
        for schedule in self.engine.schedules.values():
            record = stored.get(schedule.name)
            stored[schedule.name] = dataclasses.replace(
                record or schedule.info(), cron=schedule.cron, timezone=schedule.timezone,
                job_type=schedule.job_type, queue=schedule.queue)
        return [dataclasses.replace(info, next_run=_next_run(info, now))
                for _, info in sorted(stored.items())]

    # -- queues ----------------------------------------------------------------------------------
    def pause_queue(self, name: str, *, actor: str = "api", reason: str = "") -> QueueInfo:
        """Stop workers claiming the queue's jobs (pending, and paused ones resumed) until
        :meth:`resume_queue`; jobs already running are not touched. Recorded with who, when
        and why; pausing a paused queue records the new actor and reason."""
        return self._set_queue(name, True, actor, reason)

    def resume_queue(self, name: str, *, actor: str = "api", reason: str = "") -> QueueInfo:
        """Let workers claim from the queue again (waiting workers are woken)."""
        return self._set_queue(name, False, actor, reason)

    def queues(self) -> builtins.list[QueueInfo]:
        """Every queue that has jobs, was ever paused or has a limit, by name, with counts by
        state and its limits."""
        found = {q.name: q for q in self.engine.store.queues()}
        for rule in self.engine.store.limits():
            if rule.scope == "queue":
                found[rule.name] = dataclasses.replace(
                    found.get(rule.name) or QueueInfo(rule.name), max_running=rule.max_running,
                    rate_limit=rule.rate.text if rule.rate else None,
                    limit_changed_at=rule.changed_at, limit_actor=rule.actor,
                    limit_reason=rule.reason)
        return [found[name] for name in sorted(found)]

    def set_queue_limit(self, name: str, *, max_running: int | None = None,
                        rate_limit: str | None = None, actor: str = "api",
                        reason: str = "") -> QueueInfo:
        """At most ``max_running`` of the queue's jobs run at once, and they are claimed no
        faster than ``rate_limit`` (``"100/m"``), across every worker; neither removes the
        queue's limits. Recorded with who, when and why; held jobs stay pending."""
        validate.name("queue", name)
        validate.actor(actor)
        validate.reason(reason)
        running = None if max_running is None else check_max_running(max_running)
        rate = None if rate_limit is None else parse_rate(rate_limit)
        self.engine.store.set_queue_limit(name, running, rate, actor=actor, reason=reason)
        return next((q for q in self.queues() if q.name == name), QueueInfo(name))

    def limits(self) -> builtins.list[LimitRule]:
        """Every limit the claim obeys: job types' (as their workers last recorded them) and
        queues' (as operators set them)."""
        return self.engine.store.limits()

    def held_reason(self, job: Job) -> str | None:
        """Why a runnable waiting job is not claimed now (``"held: 2/2 running for
        tenant:7"``), or None; computed from the limits and counts, nothing written."""
        if job.state is JobState.PENDING and job.run_at > self.engine.store.now():
            return None
        rules = [r for r in self.engine.store.limits()
                 if r.bucket(job.job_type, job.queue, job.limit_key) is not None]
        if not rules:
            return None
        return held_reason(job, rules, self.engine.store.limit_usage(rules))

    def _set_queue(self, name: str, paused: bool, actor: str, reason: str) -> QueueInfo:
        validate.name("queue", name)
        validate.actor(actor)
        validate.reason(reason)
        return self.engine.store.set_queue_paused(name, paused, actor=actor, reason=reason)

    # -- waiting jobs ----------------------------------------------------------------------------
    def run_now(self, job_id: str, *, actor: str = "api", reason: str = "") -> Job:
        """Make a pending job waiting out a delay or a retry's backoff runnable now.

        Only a pending job: anything else is refused with InvalidStateError, nothing written.
        """
        self._edit_args(job_id, actor, reason)
        return self._edit(job_id, "run now", lambda job: [
            transitions.run_now(job.id, actor, reason or "run now")])

    def reschedule(self, job_id: str, *, run_at: datetime | None = None,
                   delay: float | None = None, priority: int | None = None,
                   actor: str = "api", reason: str = "") -> Job:
        """Change a pending job's ``run_at`` (or ``delay`` from now) and/or ``priority``.

        A compare-and-set on the job still being pending: a job a worker claimed meanwhile,
        or any job not pending, is refused with InvalidStateError and nothing is written.
        """
        self._edit_args(job_id, actor, reason)
        if run_at is not None and delay is not None:
            raise ConfigurationError("give run_at or delay, not both")
        if run_at is None and delay is None and priority is None:
            raise ConfigurationError("give run_at, delay or priority: nothing to change")
        check_options(None, None, None, None, priority)
        when: datetime | float | None = None
        if run_at is not None:
            when = validate.run_at(run_at).astimezone(UTC)
        elif delay is not None:
            check_seconds("delay", delay, zero_ok=True)
            when = float(delay)
        shown = ", ".join(part for part in (
            f"run_at {when.isoformat()}" if isinstance(when, datetime) else "",
            f"delay {when:g}s" if isinstance(when, float) else "",
            f"priority {priority}" if priority is not None else "") if part)
        return self._edit(job_id, "reschedule", lambda job: [transitions.reschedule(
            job.id, actor, reason or shown, run_at=when, priority=priority)])

    @staticmethod
    def _edit_args(job_id: str, actor: str, reason: str) -> None:
        validate.job_id(job_id)
        validate.actor(actor)
        validate.reason(reason)

    def _edit(self, job_id: str, what: str,
              changes: Callable[[Job], builtins.list[Change]]) -> Job:
        def decide(job: Job) -> builtins.list[Change]:
            if job.state is not JobState.PENDING:
                raise InvalidStateError(
                    f"Cannot {what} job {job.id}: it is {job.state.value}, not pending",
                    from_state=job.state.value, to_state=JobState.PENDING.value)
            return changes(job)

        return self.engine.control(job_id, decide)
