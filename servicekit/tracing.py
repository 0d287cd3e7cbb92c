"""OpenTelemetry set-up, the span attribute registry, and W3C `traceparent` helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["Attr", "context_from_traceparent", "current_traceparent", "install_tracing", "span", "tracer"]

_propagator = TraceContextTextMapPropagator()


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


def install_tracing(service: str, *, otlp_endpoint: str | None = None, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the global tracer provider once per process; export over OTLP/HTTP when configured."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    else:
        provider = TracerProvider(resource=Resource.create({"service.name": f"tidegate-{service}"}))
        trace.set_tracer_provider(provider)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    elif otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
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
    """An OpenTelemetry context whose parent is the given W3C trace context, if any."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, or None outside a recording span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def span(name: str, *, parent: str | None = None, attributes: dict[str, Any] | None = None) -> Iterator[trace.Span]:
    """A span, child of `parent` (a traceparent) when given, else of the current span."""
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    with tracer().start_as_current_span(name, context=context_from_traceparent(parent), attributes=attrs) as s:
        yield s
