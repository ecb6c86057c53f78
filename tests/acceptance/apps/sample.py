"""A small app for the CLI's acceptance tests: a quick job, a checkpointed slow one, a failing one.

Tests build their own apps with ``register(...)``, so a test's worker thread never shares an
app object with the in-process CLI (which repoints ``app`` at each test's store).
"""

from __future__ import annotations

import os
import time
from typing import Any

from conveyor import Conveyor, JobContext


def add(ctx: JobContext, a: int, b: int) -> int:
    return a + b


def run_steps(ctx: JobContext, steps: int = 10, delay: float = 0.05) -> dict[str, int]:
    """Checkpoints after every step, so it can be paused, resumed and cancelled anywhere."""
    start = int(ctx.checkpoint_data.get("next", 0))
    ctx.progress(start, steps)
    for index in range(start, steps):
        time.sleep(delay)
        ctx.progress(index + 1, steps)
        ctx.checkpoint({"next": index + 1})
    return {"steps": steps, "resumed_from": start}


def always_fails(ctx: JobContext) -> None:
    raise RuntimeError("this job always fails")


def echo(ctx: JobContext, **params: Any) -> dict[str, Any]:
    return params


def register(app: Conveyor) -> Conveyor:
    """Register the sample job types on ``app`` (the tests' own apps use this)."""
    app.job("math.add")(add)
    app.job("steps.run")(run_steps)
    app.job("always.fails", max_attempts=0)(always_fails)
    app.job("echo.params")(echo)
    return app


def make_app(url: str) -> Conveyor:
    return register(Conveyor(url))


app = make_app(os.environ.get("SAMPLE_APP_STORE", "sqlite:///conveyor.db"))
not_an_app = 42
