"""The worker's hooks around each run: Prometheus metrics and OpenTelemetry spans.

Both are optional, and neither costs anything when off: the worker then gives its runs no
:class:`RunWatch`, and the executor's only trace of them is one attribute check per run.
``prometheus_client`` is imported only when metrics are asked for (:mod:`conveyor.metrics`),
``opentelemetry`` only when it is installed (:mod:`conveyor.tracing`); without it nothing is
imported and enqueue and run are as before.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.context import Execution
    from conveyor.metrics import WorkerMetrics
    from conveyor.worker.executor import OutcomeKind

_otel: list[bool] = []


def otel_installed() -> bool:
    """Whether the ``opentelemetry`` API can be imported (looked up once, not imported)."""
    if not _otel:
        try:
            found = importlib.util.find_spec("opentelemetry") is not None
        except (ImportError, ValueError):  # blocked, or half there: as good as absent
            found = False
        _otel.append(found)
    return _otel[0]


def enqueue_trace() -> str | None:
    """The W3C ``traceparent`` of the current span, to carry in a job being enqueued; None
    without OpenTelemetry or outside a recording span."""
    if not _traceparent:
        if not otel_installed():
            return None
        from conveyor import tracing  # once: an import statement per enqueue cost ~3,000
        _traceparent.append(tracing.current_traceparent)  # instructions
    return _traceparent[0]()


_traceparent: list[Callable[[], str | None]] = []


class RunWatch:
    """Times, counts and traces each run of one worker (metrics and tracing as configured)."""

    def __init__(self, metrics: WorkerMetrics | None, tracing: bool) -> None:
        self.metrics = metrics
        self.tracing = tracing

    def run(self, execution: Execution, body: Callable[[], OutcomeKind | None]
            ) -> OutcomeKind | None:
        """Run the executor's pipeline (``body``) inside the run's span, then count it; a
        completion handed to the worker's batch (None) counts as completed."""
        job = execution.job
        if self.metrics is not None:
            self.metrics.picked_up(job)
        span: Any = None
        if self.tracing:
            from conveyor import tracing

            span = tracing.start_run(job)
        began = time.monotonic()
        outcome: OutcomeKind | None = None
        failed = True
        try:
            outcome = body()
            failed = False
            return outcome
        finally:
            kind = "error" if failed else outcome.value if outcome else "completed"
            if self.metrics is not None:
                self.metrics.ran(job, kind, time.monotonic() - began)
            if span is not None:
                from conveyor import tracing

                tracing.end_run(span, kind)

    def reaped(self, lost: int) -> None:
        if self.metrics is not None and lost:
            self.metrics.reaped(lost)
