"""A handler's span continues the trace its envelope names, and a bad `traceparent` starts a new one instead of failing."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from servicekit.tracing import context_from_traceparent, install_tracing, span

TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


def test_a_handler_span_is_a_child_of_the_envelopes_trace_context() -> None:
    install_tracing("test")
    with span("policy handle action.proposed", parent=f"00-{TRACE}-{PARENT}-01", attributes={"a": "x", "b": None}) as s:
        context = s.get_span_context()
        assert format(context.trace_id, "032x") == TRACE
        parent = getattr(s, "parent", None)  # the SDK's span (the API's type does not name its parent)
        assert parent is not None
        assert format(parent.span_id, "016x") == PARENT
        assert parent.is_remote
        assert trace.get_current_span() is s  # what the handler publishes carries this span's context


@pytest.mark.parametrize(
    "traceparent",
    [
        "zz",
        f"00-{'0' * 32}-{PARENT}-01",  # an all-zero trace id is invalid
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE.upper()}-{PARENT}-01",  # hex is lower case
        f"00-{TRACE}-{PARENT}-01-extra",
        "",
        None,
    ],
)
def test_an_invalid_traceparent_gives_no_parent(traceparent: str | None) -> None:
    context = context_from_traceparent(traceparent)
    assert context is None or not trace.get_current_span(context).get_span_context().is_valid


def test_a_later_version_is_read_by_the_propagator() -> None:
    context = context_from_traceparent(f"01-{TRACE}-{PARENT}-01-more")
    assert context is not None
    assert format(trace.get_current_span(context).get_span_context().trace_id, "032x") == TRACE
