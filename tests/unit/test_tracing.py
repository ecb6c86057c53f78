"""The traceparent an enqueue stores: the current span's, None outside any span."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry")

from opentelemetry import baggage, context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from conveyor.tracing import current_traceparent

_SPAN = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331,
                    is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def test_outside_any_span_there_is_none() -> None:
    assert not context.get_current()  # the shortcut's case: nothing attached
    assert current_traceparent() is None


def test_a_context_without_a_span_has_none() -> None:
    """Something attached (baggage) but no span: the span's own lookup answers."""
    token = context.attach(baggage.set_baggage("tenant", "7"))
    try:
        assert context.get_current() and current_traceparent() is None
    finally:
        context.detach(token)


def test_the_current_span_is_carried() -> None:
    with trace.use_span(NonRecordingSpan(_SPAN)):
        assert current_traceparent() == (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert current_traceparent() is None
