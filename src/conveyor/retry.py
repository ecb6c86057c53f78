"""Backoff policies for automatic retries: pure functions of the attempt, jitter injected."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from conveyor.errors import ConfigurationError


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``min(max_delay, base * factor ** (attempt - 1))``.

    ``jitter`` is the fraction of the delay that is randomised: 0.5 means the delay is drawn
    uniformly from [50 %, 100 %] of the computed value, so that jobs failing together (an API
    going down) do not all retry in the same instant. Stored on each job as a small JSON
    object so that any process, the reaper included, applies the job's own policy.
    """

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        for name in ("base", "factor", "max_delay", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ConfigurationError(f"backoff {name} must be a finite number, not {value!r}")
        if self.base < 0 or self.max_delay < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ConfigurationError(
                "backoff needs base >= 0, factor >= 1, max_delay >= 0 and 0 <= jitter <= 1"
            )

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        exponent = max(0, attempt - 1)
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:  # the exponential passed any float: it is past the cap
            raw = math.inf if self.base > 0 else 0.0
        capped = min(self.max_delay, raw)
        return capped * (1 - self.jitter * rand())

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Backoff:
        if not data:
            return cls()
        try:
            known = {k: float(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        except (TypeError, ValueError):
            raise ConfigurationError(f"backoff values must be numbers, not {data!r}") from None
        return cls(**known)
