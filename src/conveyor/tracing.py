"""OpenTelemetry: a span per job run, linked to the span that enqueued the job.

Imported only when ``opentelemetry`` is installed (``pip install 'conveyor[otel]'``, see
:func:`conveyor.observe.otel_installed`). At enqueue, the current span's W3C ``traceparent``
is stored with the job; the worker starts a ``CONSUMER`` span for each run, in a trace of its
own, *linked* to that span (a job may run long after, and more than once), with an event per
transition (``started``, then how the run ended). The span is current while the job's code
runs, so spans the job makes are its children. Without a configured SDK, the API's no-op
tracer makes all of this free.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from conveyor.model import Job

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER = trace.get_tracer("conveyor")
#: How a run's end shows on its span (anything else is ``ok``).
_ERRORS = frozenset({"failed", "retried", "lost", "error"})


def current_traceparent() -> str | None:
    """The current span's ``traceparent``, or None when there is no valid span.

    An empty current context (nothing attached: no span, the common case of an enqueue outside
    any traced request) is None at once: the span's lookup through the API's layers cost
    several times that test, paid for each ``enqueue()``."""
    if not context.get_current():
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def _link(traceparent: str | None) -> list[trace.Link]:
    if not traceparent:
        return []
    found = trace.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent}))
    span_context = found.get_span_context()
    return [trace.Link(span_context)] if span_context.is_valid else []


def start_run(job: Job) -> tuple[Any, object]:
    """Start the run's span and make it current in this thread; returns what
    :func:`end_run` needs."""
    span = _TRACER.start_span(
        f"conveyor.run {job.job_type}", kind=trace.SpanKind.CONSUMER, links=_link(job.trace),
        attributes={"conveyor.job.id": job.id, "conveyor.job.type": job.job_type,
                    "conveyor.job.queue": job.queue, "conveyor.job.attempt": job.attempt,
                    "messaging.system": "conveyor"})
    span.add_event("started", {"attempt": job.attempt})
    token = context.attach(trace.set_span_in_context(span))
    return span, token


def end_run(started: tuple[Any, object], outcome: str) -> None:
    span, token = started
    span.add_event(outcome)
    span.set_attribute("conveyor.job.outcome", outcome)
    if outcome in _ERRORS:
        span.set_status(trace.Status(trace.StatusCode.ERROR, outcome))
    context.detach(token)  # type: ignore[arg-type]
    span.end()
