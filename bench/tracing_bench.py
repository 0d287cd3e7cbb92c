"""What the kit's per-event instrumentation costs: the handler's span, its metrics, and the checks before it (µs of CPU, printed).

Prints figures; never asserts. In process, on one signed proposal, each step alone, as `Bus.handle_record`
runs it for every event: bounds, decode into the topic's union, the signature check, the handler span
(child of the envelope's `traceparent`, with the attribute set the kit gives it), the handled and
published metrics; then signing and encoding an event, what `Bus.publish` adds. CPU time, not wall time.
The handler span is measured as a service runs it without an exporter (its context alone) and then
with an exporter installed (recorded, handed to a batch processor whose exporter drops it).

    .venv/bin/python -m bench.tracing_bench [--full] [-n 5000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from bench.clients import emit_figures
from schemas import decode, encode
from schemas.examples import sample_events
from servicekit import Attr, KitSettings, deployment_authority, install_tracing, service_key, sign_as_producer, sign_event, span
from servicekit.intake import Bounds, check_bounds
from servicekit.metrics import observe_handled, observe_published


def cpu_us(step: Callable[[], Any], n: int) -> float:
    """Mean CPU time of `step`, µs (after a warm-up)."""
    for _ in range(min(n, 200)):
        step()
    started = time.process_time()
    for _ in range(n):
        step()
    return (time.process_time() - started) / n * 1e6


class _Dropped(SpanExporter):
    """An exporter that sends nowhere: what is measured is recording a span and handing it over."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=None, help="Runs of each step (default 5,000; --full 20,000).")
    parser.add_argument("--full", action="store_true", help="20,000 runs of each step.")
    opts = parser.parse_args()
    n = opts.n or (20_000 if opts.full else 5_000)
    install_tracing("bench")  # the SDK's provider, as a service has it without an OTLP endpoint
    kit = KitSettings(keys_dir=Path(tempfile.mkdtemp(prefix="tidegate-bench-keys-")))
    authority = deployment_authority(kit)
    event = next(e for _, e in sample_events() if e.type == "tidegate.action.proposed")
    event = event.model_copy(update={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    raw = encode(sign_as_producer(kit, event))
    decoded = decode("actions.proposed", raw)
    key = service_key(kit, "policy")
    attrs = {
        Attr.SERVICE: "policy",
        Attr.TOPIC: "tidegate.actions.proposed",
        Attr.EVENT_ID: decoded.id,
        Attr.EVENT_TYPE: decoded.type,
        Attr.TENANT: decoded.tenantid,
        Attr.TASK: decoded.subject,
    }

    def handler_span() -> None:
        with span("policy handle action.proposed", parent=decoded.traceparent, attributes=attrs):
            pass

    steps = {
        "bounds": lambda: check_bounds(raw, Bounds()),
        "decode": lambda: decode("actions.proposed", raw),
        "signature check": lambda: authority.check(raw, decoded),
        "handler span": handler_span,
        "handled metric": lambda: observe_handled("policy", decoded.type, 0.001, "ok"),
        "published metric": lambda: observe_published("policy", decoded),
        "sign": lambda: sign_event(decoded, key),
        "encode": lambda: encode(decoded),
    }
    figures = {name: cpu_us(step, n) for name, step in steps.items()}
    install_tracing("bench", exporter=_Dropped())  # from here on spans are recorded and exported
    figures["handler span, exported"] = cpu_us(handler_span, n)
    print(f"per event, µs of CPU ({len(raw)} bytes, n={n}):")
    for name, us in figures.items():
        print(f"  {name:<24} {us:7.1f}")
    emit_figures("tracing", {name.replace(",", "").replace(" ", "_") + "_us": us for name, us in figures.items()})


if __name__ == "__main__":
    main()
