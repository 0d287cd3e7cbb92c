"""A handler's span continues the trace its envelope names, and a bad `traceparent` starts a new one instead of failing."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord
from fake_producer import make_bus
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import schemas as s
from servicekit import _bus_handle, tracing
from servicekit.tracing import batch_span, context_from_traceparent, current_traceparent, install_tracing, span

TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


def test_a_handler_span_is_a_child_of_the_envelopes_trace_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_exporting", False)  # install_tracing with an exporter sets it; put back after
    install_tracing("test", exporter=InMemorySpanExporter())  # spans are recorded (and exported) with an exporter
    with span("policy handle action.proposed", parent=f"00-{TRACE}-{PARENT}-01", attributes={"a": "x", "b": None}) as s:
        context = s.get_span_context()
        assert format(context.trace_id, "032x") == TRACE
        parent = getattr(s, "parent", None)  # the SDK's span (the API's type does not name its parent)
        assert parent is not None
        assert format(parent.span_id, "016x") == PARENT
        assert parent.is_remote
        assert trace.get_current_span() is s  # what the handler publishes carries this span's context


def test_without_an_exporter_a_span_is_its_context_alone_and_the_trace_chain_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_exporting", False)
    with span("policy handle action.proposed", parent=f"00-{TRACE}-{PARENT}-01", attributes={"a": "x"}) as s:
        context = s.get_span_context()
        assert format(context.trace_id, "032x") == TRACE  # the envelope's trace goes on
        assert context.span_id != int(PARENT, 16)  # under a span of its own
        assert current_traceparent() == f"00-{TRACE}-{context.span_id:016x}-01"  # what the handler publishes names it
        with span("policy evaluate") as inner:  # a child of the current span
            assert inner.get_span_context().trace_id == context.trace_id
            assert current_traceparent() == f"00-{TRACE}-{inner.get_span_context().span_id:016x}-01"
        assert not s.is_recording()
    with span("client publish task.submitted") as root:  # no parent: a new trace
        assert root.get_span_context().is_valid
        assert format(root.get_span_context().trace_id, "032x") != TRACE
    assert current_traceparent() is None


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


@pytest.mark.parametrize("traceparent", ["zz", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE}-{PARENT}-01-extra"])
def test_without_an_exporter_a_span_under_an_invalid_parent_starts_a_new_trace(monkeypatch: pytest.MonkeyPatch, traceparent: str) -> None:
    monkeypatch.setattr(tracing, "_exporting", False)
    with span("policy handle action.proposed", parent=traceparent) as s:
        context = s.get_span_context()
        assert context.is_valid
        assert format(context.trace_id, "032x") != TRACE
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        assert current_traceparent() == carrier["traceparent"]  # the propagator's own text


def test_a_later_version_is_read_by_the_propagator() -> None:
    context = context_from_traceparent(f"01-{TRACE}-{PARENT}-01-more")
    assert context is not None
    assert format(trace.get_current_span(context).get_span_context().trace_id, "032x") == TRACE


def test_a_batch_span_links_every_events_trace_and_leaves_the_current_context_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_exporting", False)
    exporter = InMemorySpanExporter()
    provider = install_tracing("test", exporter=exporter)
    other = "1" * 32
    links = [f"00-{other}-{PARENT}-01", None, "zz"]
    with (
        span("outer", parent=f"00-{TRACE}-{PARENT}-01") as outer,
        batch_span("approval handle batch actions.decided", attributes={}, links=links),
    ):
        assert trace.get_current_span() is outer  # what the batch publishes stays in the events' traces
    provider.force_flush()
    [recorded] = [s for s in exporter.get_finished_spans() if s.name == "approval handle batch actions.decided"]
    assert [format(link.context.trace_id, "032x") for link in recorded.links] == [other]  # the invalid ones left out
    with pytest.raises(RuntimeError), batch_span("policy handle batch actions.proposed", attributes={}, links=[]):
        raise RuntimeError("a failed batch")
    provider.force_flush()
    [failed] = [s for s in exporter.get_finished_spans() if s.name == "policy handle batch actions.proposed"]
    assert not failed.status.is_ok


def test_without_an_exporter_a_batch_span_is_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_exporting", False)
    with batch_span("approval handle batch actions.results", attributes={}, links=[f"00-{TRACE}-{PARENT}-01"]):
        assert not trace.get_current_span().get_span_context().is_valid


@pytest.mark.parametrize("exporting", [False, True])
async def test_a_handlers_span_is_named_and_described_only_when_it_is_recorded(monkeypatch: pytest.MonkeyPatch, exporting: bool) -> None:
    """Every event's handler runs under a span; without an exporter its name and attributes were built per event and thrown away."""
    monkeypatch.setattr(tracing, "_exporting", exporting)
    given: list[tuple[str, dict[str, object] | None]] = []
    real = _bus_handle.span

    def spy(name: str, *, parent: str | None = None, attributes: dict[str, object] | None = None) -> object:
        given.append((name, attributes))
        monkeypatch.setattr(tracing, "_exporting", False)  # the span itself records nothing here: no exporter is installed
        return real(name, parent=parent, attributes=attributes)

    monkeypatch.setattr(_bus_handle, "span", spy)
    bus, _ = make_bus()
    data = s.ActionProposedData(action_id="a-1", task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", args={}, proposer="planner")
    event = s.ActionProposed.build(data, source="tidegate/planner", traceparent=f"00-{TRACE}-{PARENT}-01")
    record = ConsumerRecord("p.actions.proposed", 0, 7, 0, 0, b"t-1", b"{}", None, 0, 2, [])
    handled: list[str | None] = []

    async def handler(e: s.ActionProposed) -> None:
        handled.append(current_traceparent())

    await bus.handle_event(record, event, handler)
    assert handled[0] is not None
    assert handled[0].startswith(f"00-{TRACE}-")  # tracing kept on the handler either way
    [(name, attributes)] = given
    if exporting:
        assert name == "planner handle action.proposed"
        assert attributes is not None
        assert attributes["cloudevents.event_id"] == event.id
        assert attributes["messaging.destination.name"] == "p.actions.proposed"
    else:
        assert attributes is None
