"""The consume path of one record: its bytes checked and turned into an event, its handler run under a span, retried.

Bounds first, then the contract, then the producer's signature: what fails is dead-lettered alone,
with the reason, and no handler ever sees it. A handler runs under the event's trace; transient errors
are retried (`Bus.retrying`), a `Reject` or any other error dead-letters the event, never the batch.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError

from schemas import ReasonCode, decode_document
from servicekit import metrics
from servicekit._bus_base import Handler, log
from servicekit._bus_deadletter import DeadLettering, raw_text
from servicekit.authority import appended_ms
from servicekit.deliveries import publishing_for
from servicekit.intake import Refused, check_bounds
from servicekit.kafka_record import KafkaRecord
from servicekit.refusals import refusal_code
from servicekit.start_checkpoint import digest
from servicekit.tracing import Attr, exporting, span

__all__ = ["Handling", "Reject"]


class Reject(Exception):
    """Raised by a handler for an event it will not accept; the event goes to `deadletter`."""

    def __init__(self, code: ReasonCode | str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message


def _contract_code(exc: ValidationError) -> str:
    """`not_finite` when the contract refused a NaN or Infinity, else `invalid_event`."""
    return ReasonCode.NOT_FINITE if any(e["type"] == "finite_number" for e in exc.errors()) else ReasonCode.INVALID_EVENT


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc or '(event)'}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)


def _attributes(service: str, record: KafkaRecord, event: Any) -> dict[str, Any]:
    """What a handler's recorded span says of the event it handles."""
    return {
        Attr.SERVICE: service,
        Attr.TOPIC: record.topic,
        Attr.EVENT_ID: event.id,
        Attr.EVENT_TYPE: event.type,
        Attr.TENANT: event.tenantid,
        Attr.TASK: event.subject,
    }


class Handling(DeadLettering):
    """`Bus`'s handling of one record: `decode_record`, `handle_record`, `handle_event`, `mark_handled`."""

    async def decode_record(self, topic: str, record: KafkaRecord) -> Any | None:
        """The record's event, or None once it is dead-lettered with the reason.

        The one place where every consume path of the kit and the policy's batch path turn bytes
        into an event: bounds first, then the contract, then the producer's signature (`Authority`,
        docs/security/signatures.md), so no handler ever sees an event its signer may not produce.
        Any exception (`RecursionError`, `MemoryError`) is the record's.
        """
        code: str
        try:
            check_bounds(record.value, self.bounds)
            raw = record.value or b""
            event, document = decode_document(topic, raw)  # parsed once: the check reads the same document
            refusal = self.authority.check(raw, event, document, appended_ms=appended_ms(record)) if self.authority is not None else None
            if refusal is None:
                self.records_read[record.topic] = self.records_read.get(record.topic, 0) + 1
                return event
            code, error = refusal.code, refusal.message
        except Refused as exc:
            code, error = exc.code, exc.message
        except ValidationError as exc:
            try:
                code, error = _contract_code(exc), _describe(exc)
            except Exception:  # describing it failed too: the reason is still the contract
                code, error = ReasonCode.INVALID_EVENT, "invalid event (not describable)"
        except Exception as exc:
            code, error = ReasonCode.INVALID_EVENT, f"undecodable: {type(exc).__name__}"
        await self.dead_letter(record, topic, code, error)
        self.records_read[record.topic] = self.records_read.get(record.topic, 0) + 1
        return None

    async def handle_record(self, topic: str, record: KafkaRecord, handler: Handler) -> None:
        """Decode one record and handle it; what cannot be accepted is dead-lettered, transient errors retried."""
        with self.liveness.running():
            event = await self.decode_record(topic, record)
            if event is not None:
                await self.handle_event(record, event, handler)

    async def handle_event(self, record: KafkaRecord, event: Any, handler: Handler) -> None:
        """Run the handler on a decoded event under a span; retried while errors are transient."""
        # The envelope's (signed) trace context; the header's only for an event that carries none.
        parent = event.traceparent or next((raw_text(v) for k, v in (record.headers or ()) if k == "traceparent"), None)
        # Named and described only when recorded (`exporting`): without an exporter a span is its context alone.
        name, attrs = (
            (f"{self.service} handle {event.type.removeprefix('tidegate.')}", _attributes(self.service, record, event))
            if exporting()
            else ("", None)
        )
        started = time.perf_counter()

        async def attempt() -> str:
            with span(name, parent=parent, attributes=attrs) as s:
                source = publishing_for.set(record)  # what it publishes is owed to this record
                try:
                    await handler(event)
                except Reject as rej:
                    s.set_attribute(Attr.REJECTED, rej.code)
                    await self.dead_letter(record, record.topic.removeprefix(self.prefix), rej.code, rej.message)
                    return "rejected"
                finally:
                    publishing_for.reset(source)
            return "ok"

        try:
            result = await self.retrying(f"{record.topic}@{record.offset}", attempt)
        except Exception as exc:  # a bug must not kill the consumer; the event is kept with the reason
            log.exception("%s: handler failed on %s@%d", self.service, record.topic, record.offset)
            code = refusal_code(exc) or ReasonCode.HANDLER_ERROR  # an event it published that Kafka refuses for good (at send)
            await self.dead_letter(record, record.topic.removeprefix(self.prefix), code, f"{type(exc).__name__}: {exc}")
            result = "error"
        metrics.observe_handled(self.service, event.type, time.perf_counter() - started, result)

    def mark_handled(self, record: KafkaRecord) -> None:
        """Record that `record` is handled or dead-lettered (what `wait_caught_up` and the liveness check read)."""
        position = (record.topic, record.partition)
        self.positions[position] = max(self.positions.get(position, 0), record.offset + 1)
        if position in self._kept:  # a topic whose start resumes from a checkpoint: the last record read, for its continuity
            self._last_read[position] = (record.offset, digest(record.value))
        self.liveness.progressed()
