"""Job types: the functions registered with ``@app.job`` and their per-type options."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from conveyor import payload, validate
from conveyor.errors import ConfigurationError, FailJob, InvalidParams
from conveyor.limits import TypeLimits
from conveyor.retry import Backoff

DEFAULT_PAUSE_TIMEOUT = 24 * 3600.0


@dataclass(frozen=True)
class JobOptions:
    """Options of a job type; each may be overridden per ``enqueue``."""

    max_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float | None = None
    pause_timeout: float = DEFAULT_PAUSE_TIMEOUT
    priority: int = 0
    queue: str = "default"
    #: The retry policy (see docs/workflows.md): only these exceptions are retried
    #: automatically (empty: any) ...
    retry_on: tuple[type[BaseException], ...] = ()
    #: ... and never these (they fail the job for good).
    no_retry_on: tuple[type[BaseException], ...] = ()
    #: False: a failed job stays ``failed`` with its retries left, for an operator's retry().
    auto_retry: bool = True

    def __post_init__(self) -> None:
        check_options(self.max_attempts, self.timeout, self.pause_timeout, self.queue,
                      self.priority)
        for name in ("retry_on", "no_retry_on"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(
                    isinstance(c, type) and issubclass(c, BaseException) for c in value):
                raise ConfigurationError(f"{name} must be a tuple of exception classes, "
                                         f"not {value!r}")
        if not isinstance(self.auto_retry, bool):
            raise ConfigurationError(f"auto_retry must be True or False, not "
                                     f"{self.auto_retry!r}")

    def gives_up_on(self, raised: BaseException | None) -> str | None:
        """Why a run that raised ``raised`` fails for good (no retry, whatever attempts are
        left), or None when it may be retried."""
        if raised is None:
            return None
        if isinstance(raised, FailJob) and not raised.retry:
            return "failed for good (FailJob)"
        name = type(raised).__name__
        if self.no_retry_on and isinstance(raised, self.no_retry_on):
            return f"failed for good ({name} is in no_retry_on)"
        if self.retry_on and not isinstance(raised, self.retry_on):
            return f"failed for good ({name} is not in retry_on)"
        return None


INT32_MAX = 2**31 - 1
#: Longest timeout, pause timeout or delay accepted: ten years, in seconds.
MAX_SECONDS = 10 * 365 * 24 * 3600.0


def check_seconds(name: str, value: object, *, zero_ok: bool = False) -> None:
    """A duration in seconds: a finite real number in range."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}")
    low_ok = value >= 0 if zero_ok else value > 0
    if not low_ok or value > MAX_SECONDS:
        bound = ">= 0" if zero_ok else "> 0"
        raise ConfigurationError(f"{name} must be {bound} and at most {MAX_SECONDS:g} seconds, "
                                 f"not {value!r}")


def check_options(max_attempts: int | None, timeout: float | None, pause_timeout: float | None,
                  queue: str | None, priority: int | None = None) -> None:
    """Refuse nonsense options up front, with a message naming the option."""
    if max_attempts is not None and (isinstance(max_attempts, bool)
                                     or not isinstance(max_attempts, int)
                                     or not 0 <= max_attempts <= 1000):
        raise ConfigurationError(f"max_attempts must be an integer from 0 to 1000, "
                                 f"not {max_attempts!r}")
    if timeout is not None:
        check_seconds("timeout", timeout)
    if pause_timeout is not None:
        check_seconds("pause_timeout", pause_timeout)
    if queue is not None:
        validate.name("queue", queue, config=True)
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not -INT32_MAX - 1 <= priority <= INT32_MAX):
        raise ConfigurationError(f"priority must be a 32-bit integer, not {priority!r}")


_FITTING_KEPT = 64
_NO_NAMES: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=256)
def stored_backoff(backoff: Backoff) -> tuple[dict[str, float], str]:
    """A frozen Backoff's dict and its encoding, made once per policy rather than once per
    enqueued job (the stores only encode it, never change it)."""
    data = backoff.to_dict()
    return data, payload.dumps(data)


class JobDefaults(NamedTuple):
    """A job type's options as a new job of it stores them (see
    :attr:`JobType.new_job_defaults`). The backoff dict is shared by every job of the type:
    the stores only encode it, never change it."""

    queue: str
    priority: int
    max_attempts: int
    timeout: float | None
    pause_timeout: float
    backoff: dict[str, float]
    backoff_json: str


@dataclass(frozen=True)
class JobType:
    """A registered job function: its name, options, and how to call it."""

    name: str
    func: Callable[..., Any]
    options: JobOptions
    is_async: bool
    signature: inspect.Signature
    #: Claim-time limits (``max_running``, ``rate_limit``, ``limit_key``), None when unlimited.
    limits: TypeLimits | None = None
    #: Sets of param names known to fit: whether params bind depends on their names only,
    #: so each set is checked against the signature once (inspect's bind is slow on the
    #: enqueue path). Bounded: a type called with ever new names stops adding.
    _fitting: set[frozenset[str]] = field(default_factory=set, compare=False, repr=False)

    @classmethod
    def from_function(cls, name: str, func: Callable[..., Any], options: JobOptions, *,
                      max_running: int | None = None, rate_limit: str | None = None,
                      limit_key: str | None = None) -> JobType:
        validate.name("job type name", name, config=True)
        signature = inspect.signature(func)
        params = list(signature.parameters.values())
        if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                                inspect.Parameter.POSITIONAL_OR_KEYWORD):
            raise ConfigurationError(
                f"job function {func.__qualname__} must take the JobContext as its first "
                "positional parameter"
            )
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        limits = TypeLimits.of(max_running, rate_limit, limit_key,
                               None if takes_any else [p.name for p in params[1:]])
        return cls(name, func, options, inspect.iscoroutinefunction(func), signature, limits)

    def limit_key(self, params: dict[str, Any]) -> str | None:
        """The job's ``limit_key`` value, from its params (defaults included); InvalidParams
        when the template names a param the job lacks."""
        if self.limits is None or self.limits.key is None:
            return None
        bound = self.signature.bind_partial(None, **params)
        bound.apply_defaults()
        return self.limits.key_for(self.name, {**bound.arguments, **params})

    @functools.cached_property
    def new_job_defaults(self) -> JobDefaults:
        """What a job of this type stores for each option its enqueue leaves out, made once
        per type (the backoff's dict and encoding too: hashing the policy to find them in a
        cache cost more per enqueued job than building the rest of the job's options)."""
        opts = self.options
        return JobDefaults(opts.queue, opts.priority, opts.max_attempts, opts.timeout,
                           opts.pause_timeout, *stored_backoff(opts.backoff))

    def bind(self, params: dict[str, Any]) -> None:
        """Check that ``params`` fit the function's signature (after the context)."""
        names = frozenset(params) if params else _NO_NAMES  # most jobs: no params, no set
        if names in self._fitting:
            return
        try:
            self.signature.bind(None, **params)
        except TypeError as exc:
            raise InvalidParams(f"params do not fit {self.name}{self._shown()}: {exc}") from None
        if len(self._fitting) < _FITTING_KEPT:
            self._fitting.add(names)

    def _shown(self) -> str:
        params = list(self.signature.parameters.values())[1:]
        return "(" + ", ".join(str(p) for p in params) + ")"
