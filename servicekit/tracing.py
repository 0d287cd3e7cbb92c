"""OpenTelemetry set-up, the span attribute registry, and W3C `traceparent` helpers."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["Attr", "context_from_traceparent", "current_traceparent", "exporting", "install_tracing", "span", "tracer"]

_propagator = TraceContextTextMapPropagator()
# Version 00 of W3C trace context, as every Tidegate producer writes it; anything else goes through the propagator.
_VERSION_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class Attr:
    """Every span attribute name Tidegate sets, in one place."""

    SERVICE = "tidegate.service"
    TOPIC = "messaging.destination.name"
    EVENT_ID = "cloudevents.event_id"
    EVENT_TYPE = "cloudevents.event_type"
    TENANT = "tidegate.tenant_id"
    TASK = "tidegate.task_id"
    ACTION = "tidegate.action_id"
    TOOL = "tidegate.tool"
    OUTCOME = "tidegate.outcome"
    REASONS = "tidegate.reasons"
    POLICY_VERSION = "tidegate.policy_version"
    ATTEMPTS = "tidegate.attempts"
    COST_USD = "tidegate.cost_usd"
    APPROVAL = "tidegate.approval_id"
    REJECTED = "tidegate.rejected_code"
    BATCH_SIZE = "messaging.batch.message_count"


# Whether a span exporter is installed in this process (`install_tracing`). Without one a span would be built,
# filled and thrown away: `span` then makes only its context (new span id, the parent's trace), which is what
# travels in `traceparent`, at a fraction of the cost (`bench.tracing_bench`).
_exporting = False
_ids = RandomIdGenerator()


def install_tracing(service: str, *, otlp_endpoint: str | None = None, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the global tracer provider once per process; export over OTLP/HTTP when configured."""
    global _exporting
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    else:
        provider = TracerProvider(resource=Resource.create({"service.name": f"tidegate-{service}"}))
        trace.set_tracer_provider(provider)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
        _exporting = True
    elif otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
        _exporting = True
    return provider


_tracer: trace.Tracer | None = None


def tracer() -> trace.Tracer:
    """Tidegate's tracer (made once: the SDK builds a new one per `get_tracer` call, on every event's path)."""
    global _tracer
    if _tracer is None:
        # Before `install_tracing` this is a proxy that follows the provider once it is installed.
        _tracer = trace.get_tracer("tidegate")
    return _tracer


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """An OpenTelemetry context whose parent is the given W3C trace context, if any.

    A version-00 value is read directly (the propagator's general parse was a third of a handler span's
    cost); any other value, and ids of all zeros, are left to the propagator, which refuses what is invalid.
    """
    if not traceparent:
        return None
    ids = _version_00(traceparent)
    if ids is not None:
        trace_id, span_id, flags = ids
        parent = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
        return trace.set_span_in_context(trace.NonRecordingSpan(parent))
    return _propagator.extract({"traceparent": traceparent})


def _version_00(traceparent: str) -> tuple[int, int, trace.TraceFlags] | None:
    """The trace id, span id and flags of a version-00 `traceparent` whose ids are not all zeros; else None."""
    match = _VERSION_00.fullmatch(traceparent)
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    return (trace_id, span_id, trace.TraceFlags(int(match[3], 16))) if trace_id and span_id else None


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, or None outside a recording span.

    What the propagator's `inject` writes (it fills a carrier dict and formats the ids through helpers), made directly.
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:  # the propagator's rule: it injects nothing for an invalid context
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def span(name: str, *, parent: str | None = None, attributes: dict[str, Any] | None = None) -> AbstractContextManager[trace.Span]:
    """A span, child of `parent` (a traceparent) when given, else of the current span.

    Recorded (named, with its attributes, exported) when an exporter is installed; else only its
    context exists, a child of the same parent, so the trace chain in every `traceparent` is the same
    (`_ContextOnly`, a plain context manager: a generator's would cost more than the context itself).
    """
    if not _exporting:
        return _ContextOnly(parent)
    return _recorded(name, parent, attributes)


def exporting() -> bool:
    """Whether spans are recorded and exported in this process: a caller builds a span's name and attributes only then."""
    return _exporting


class _ContextOnly:
    """A span that records nothing: its context alone (a new span id under the parent's trace), current while entered."""

    __slots__ = ("_span", "_token")

    def __init__(self, parent: str | None) -> None:
        trace_id, flags = _parent_trace(parent)
        self._span = trace.NonRecordingSpan(trace.SpanContext(trace_id, _ids.generate_span_id(), is_remote=False, trace_flags=flags))
        self._token: object = None

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(
            trace.set_span_in_context(self._span)
        )  # what `trace.use_span` does for a span that records nothing
        return self._span

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]  # the token `attach` gave


@contextmanager
def _recorded(name: str, parent: str | None, attributes: dict[str, Any] | None) -> Iterator[trace.Span]:
    context = context_from_traceparent(parent)
    attrs = {k: v for k, v in attributes.items() if v is not None} if attributes else None
    s = tracer().start_span(name, context=context, attributes=attrs)
    with trace.use_span(s, end_on_exit=True, record_exception=True, set_status_on_exception=True):
        yield s


_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)


def _parent_trace(parent: str | None) -> tuple[int, trace.TraceFlags]:
    """The trace id and flags a child of `parent` (a traceparent; else the current span) carries: a new trace if neither is valid.

    A version-00 `parent` with ids that are not all zeros is read straight from its text; anything
    else goes through `context_from_traceparent`, as for a recorded span.
    """
    ids = _version_00(parent) if parent else None
    if ids is not None:
        return ids[0], ids[2]
    outer = trace.get_current_span(context_from_traceparent(parent)).get_span_context()
    return (outer.trace_id, outer.trace_flags) if outer.is_valid else (_ids.generate_trace_id(), _SAMPLED)


@contextmanager
def batch_span(name: str, *, attributes: dict[str, Any], links: Sequence[str | None]) -> Iterator[None]:
    """A span around a polled batch handled together, linked to the trace of each of its events (`links`: traceparents).

    It never becomes the current span: what the batch's handler publishes, and the spans it opens for
    one event, stay in that event's trace. Recorded only when an exporter is installed; without one
    there is nothing to keep, and it costs nothing.
    """
    if not _exporting:
        yield
        return
    linked = []
    for traceparent in links:
        context = context_from_traceparent(traceparent)
        span_context = trace.get_current_span(context).get_span_context() if context is not None else None
        if span_context is not None and span_context.is_valid:
            linked.append(trace.Link(span_context))
    s = tracer().start_span(name, attributes=attributes, links=linked)
    try:
        yield
    except BaseException as exc:
        s.record_exception(exc)
        s.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        s.end()
