"""Flow control at claim time: concurrency and rate limits per job type, queue or key.

Why it is built this way:
- A limit is a row of the store (``flow_limits``): job types' limits are recorded by each
  worker as it starts (from ``@app.job(max_running=..., rate_limit=..., limit_key=...)``),
  queues' limits by an operator. The store's claim reads them in the claim's own transaction,
  so every worker on every host enforces the same numbers against the same counts.
- "Running" is what holds a lease: state ``running``. A paused job, even one with a
  checkpoint, holds no slot anywhere and does not count; resuming it is a claim like any
  other, so it waits for room too.
- A rate limit is a sliding window over the claims themselves (one row per claim of a rate
  limited scope, in the claim's transaction): at most ``count`` claims in any ``seconds``.
- A worker with no limit on its job types or queues pays one read of that small table per
  claim and nothing else: the claim it always made. This module holds no SQL: only the
  decisions both stores share (which candidates fit, and why a waiting job is held).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor import validate
from conveyor.errors import ConfigurationError, InvalidParams
from conveyor.lifecycle import JobState

if TYPE_CHECKING:
    from conveyor.model import Job

__all__ = ["LimitRule", "Rate", "TypeLimits", "parse_rate"]

#: Largest ``max_running`` or rate count accepted.
MAX_LIMIT = 1_000_000
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"([0-9]{1,7})/([smh])")
#: A bucket a limit counts in: (scope, name, key); key is "" unless the rule is per key.
Bucket = tuple[str, str, str]


@dataclass(frozen=True)
class Rate:
    """At most ``count`` claims in any ``seconds``."""

    count: int
    seconds: float

    @property
    def text(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}[self.seconds]
        return f"{self.count}/{unit}"


def parse_rate(value: object, what: str = "rate_limit") -> Rate:
    """``"100/m"``, ``"5/s"`` or ``"1000/h"``: ConfigurationError for anything else."""
    if isinstance(value, Rate):
        return value
    found = _RATE.fullmatch(value) if isinstance(value, str) else None
    if found is None or not 1 <= int(found.group(1)) <= MAX_LIMIT:
        raise ConfigurationError(
            f"{what} must look like '100/m' (a count from 1 to {MAX_LIMIT} per s, m or h), "
            f"not {value!r}")
    return Rate(int(found.group(1)), _UNITS[found.group(2)])


def check_max_running(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ConfigurationError(
            f"max_running must be an integer from 1 to {MAX_LIMIT}, not {value!r}")
    return value


def key_fields(template: object) -> tuple[str, ...]:
    """The params a ``limit_key`` template names (``"tenant:{tenant_id}"``): plain names only,
    no conversions, format specs or attribute access, and at least one."""
    if not isinstance(template, str) or not template:
        raise ConfigurationError(f"limit_key must be a non-empty template string such as "
                                 f"'tenant:{{tenant_id}}', not {template!r}")
    validate.name("limit_key", template, config=True)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigurationError(f"limit_key {template!r} is not a valid template: {exc}"
                                 ) from None
    names = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ConfigurationError(
                f"limit_key {template!r}: {{{name}}} must name a param plainly, like "
                "{tenant_id} (no format spec, conversion, index or attribute)")
        names.append(name)
    if not names:
        raise ConfigurationError(f"limit_key {template!r} names no param: write "
                                 "'tenant:{tenant_id}' so each value gets its own limit")
    return tuple(names)


@dataclass(frozen=True)
class TypeLimits:
    """A job type's limits, as given to ``@app.job``. With ``key`` they apply to each value
    of the key (filled from the job's params at enqueue), not to the type as a whole."""

    max_running: int | None = None
    rate: Rate | None = None
    key: str | None = None

    @classmethod
    def of(cls, max_running: object, rate_limit: object, limit_key: object,
           params: Iterable[str] | None) -> TypeLimits | None:
        """Checked options (None when there are none); ``params``: the function's parameter
        names, or None when it takes ``**kwargs``."""
        if max_running is None and rate_limit is None:
            if limit_key is not None:
                raise ConfigurationError("limit_key needs max_running or rate_limit: the "
                                         "limit it applies to each key value")
            return None
        limits = cls(None if max_running is None else check_max_running(max_running),
                     None if rate_limit is None else parse_rate(rate_limit),
                     None if limit_key is None else str(limit_key))
        if limit_key is not None:
            known = None if params is None else set(params)
            for name in key_fields(limit_key):
                if known is not None and name not in known:
                    raise ConfigurationError(
                        f"limit_key {limit_key!r} names {name!r}, which is not a param of "
                        f"the job function (it takes {', '.join(sorted(known)) or 'none'})")
        return limits

    def key_for(self, job_type: str, params: Mapping[str, Any]) -> str | None:
        """The job's key value; InvalidParams when a param it names is missing or not a
        string or an integer (a float or an object would make unstable keys)."""
        if self.key is None:
            return None
        values = {}
        for name in key_fields(self.key):
            value = params.get(name)
            if isinstance(value, bool) or not isinstance(value, str | int):
                shown = "missing" if name not in params else f"a {type(value).__name__}"
                raise InvalidParams(f"limit_key {self.key!r} of {job_type} needs param "
                                    f"{name!r} as a string or an integer; it is {shown}")
            values[name] = value
        key = self.key.format(**values)
        return validate.name("limit_key", key)

    def rule(self, job_type: str, actor: str) -> LimitRule:
        return LimitRule("type", job_type, self.max_running, self.rate, self.key, actor=actor)


@dataclass(frozen=True)
class LimitRule:
    """One limit as the store keeps it: on a job type (``scope`` "type", per key when
    ``key`` holds the type's template) or on a queue (``scope`` "queue")."""

    scope: str
    name: str
    max_running: int | None = None
    rate: Rate | None = None
    key: str | None = None
    changed_at: datetime | None = None
    actor: str = ""
    reason: str = ""

    def bucket(self, job_type: str, queue: str, limit_key: str | None) -> Bucket | None:
        """Where a job of this type, queue and key counts under this rule (None: not here)."""
        if self.scope == "type":
            if job_type != self.name:
                return None
            return ("type", self.name, (limit_key or "") if self.key else "")
        return ("queue", self.name, "") if queue == self.name else None

    @staticmethod
    def label(bucket: Bucket) -> str:
        scope, name, key = bucket
        return key if key else f"{scope}:{name}"

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "name": self.name, "max_running": self.max_running,
                "rate_limit": self.rate.text if self.rate else None, "limit_key": self.key,
                "changed_at": self.changed_at.isoformat() if self.changed_at else None,
                "actor": self.actor, "reason": self.reason}


@dataclass
class Usage:
    """How full each bucket is: jobs running, and claims inside each rate window."""

    running: dict[Bucket, int] = field(default_factory=dict)
    claimed: dict[Bucket, int] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: Sequence[LimitRule], running: Iterable[tuple[str, str, str | None, int]],
           claimed: Iterable[tuple[str, str, str, int]]) -> Usage:
        """From the store's counts: running jobs by (type, queue, key), and rate-window claims
        by bucket."""
        usage = cls(claimed={(s, n, k): c for s, n, k, c in claimed})
        for job_type, queue, key, n in running:
            for rule in rules:
                bucket = rule.bucket(job_type, queue, key)
                if bucket is not None and rule.max_running is not None:
                    usage.running[bucket] = usage.running.get(bucket, 0) + n
        return usage


@dataclass(frozen=True)
class Candidate:
    """A runnable job the limited claim may take, in claim order."""

    id: str
    job_type: str
    queue: str
    limit_key: str | None
    source: JobState


def applying(rules: Iterable[LimitRule], queues: Sequence[str],
             job_types: Sequence[str]) -> list[LimitRule]:
    """The rules a claim over these queues (empty: all) and job types must obey."""
    types = set(job_types)
    return [r for r in rules if (r.name in types if r.scope == "type"
                                 else not queues or r.name in queues)]


def _room(rule: LimitRule, bucket: Bucket, usage: Usage) -> int:
    room = MAX_LIMIT
    if rule.max_running is not None:
        room = min(room, rule.max_running - usage.running.get(bucket, 0))
    if rule.rate is not None:
        room = min(room, rule.rate.count - usage.claimed.get(bucket, 0))
    return room


def full(rules: Sequence[LimitRule], usage: Usage
         ) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """What no candidate can be taken from now: whole types, whole queues, and (type, key)
    pairs; the claim leaves them out of its scan, so a full key never hides the others."""
    types: set[str] = set()
    queues: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for rule in rules:
        if rule.scope == "queue":
            if _room(rule, ("queue", rule.name, ""), usage) <= 0:
                queues.add(rule.name)
        elif not rule.key:
            if _room(rule, ("type", rule.name, ""), usage) <= 0:
                types.add(rule.name)
        else:
            pairs.update((rule.name, b[2]) for b in {*usage.running, *usage.claimed}
                         if b[:2] == ("type", rule.name) and _room(rule, b, usage) <= 0)
    return types, queues, pairs


def admit(candidates: Iterable[Candidate], rules: Sequence[LimitRule], usage: Usage,
          limit: int) -> tuple[list[Candidate], list[Bucket]]:
    """The candidates to claim, in order, each fitting every rule it falls under, and the
    rate buckets each claim counts in (the store records one row per bucket and claim)."""
    room: dict[Bucket, int] = {}
    taken: list[Candidate] = []
    rated: list[Bucket] = []
    for cand in candidates:
        if len(taken) >= limit:
            break
        buckets = [(rule, b) for rule in rules
                   if (b := rule.bucket(cand.job_type, cand.queue, cand.limit_key))]
        for rule, b in buckets:
            room.setdefault(b, _room(rule, b, usage))
        if all(room[b] > 0 for _, b in buckets):
            taken.append(cand)
            for rule, b in buckets:
                room[b] -= 1
                if rule.rate is not None:
                    rated.append(b)
    return taken, rated


def held_reason(job: Job, rules: Sequence[LimitRule], usage: Usage) -> str | None:
    """Why a runnable waiting job is not being claimed, for display (nothing is written):
    ``held: 2/2 running for tenant:7`` or ``held: rate limit type:x 100/m``."""
    if not (job.state is JobState.PENDING or (job.state is JobState.PAUSED
                                              and job.resume_requested)):
        return None
    reasons = []
    for rule in rules:
        bucket = rule.bucket(job.job_type, job.queue, job.limit_key)
        if bucket is None:
            continue
        label = LimitRule.label(bucket)
        running = usage.running.get(bucket, 0)
        if rule.max_running is not None and running >= rule.max_running:
            reasons.append(f"held: {running}/{rule.max_running} running for {label}")
        if rule.rate is not None and usage.claimed.get(bucket, 0) >= rule.rate.count:
            reasons.append(f"held: rate limit {label} {rule.rate.text}")
    return "; ".join(reasons) or None
