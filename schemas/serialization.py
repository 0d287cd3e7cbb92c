"""Bytes on the wire: encode events, decode them per topic, and the canonical JSON for digests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from schemas.envelope import Envelope
from schemas.topics import adapter_for, any_event_adapter

__all__ = ["CONTENT_TYPE", "canonical_json", "decode", "decode_any", "digest", "encode", "headers_for"]

CONTENT_TYPE = "application/cloudevents+json"


def encode(event: Envelope) -> bytes:
    """The event as structured-mode CloudEvents JSON (UTF-8)."""
    return event.model_dump_json(exclude_none=True).encode()


def headers_for(event: Envelope) -> dict[str, str]:
    """Kafka headers of an event: content type and W3C `traceparent`."""
    headers = {"content-type": CONTENT_TYPE}
    if event.traceparent:
        headers["traceparent"] = event.traceparent
    return headers


def decode(topic: str, raw: bytes | str) -> Any:
    """Parse and validate one message of `topic` (catalog name, no prefix); raises ValidationError."""
    return adapter_for(topic).validate_json(raw)


def decode_any(raw: bytes | str) -> Any:
    """Parse any Tidegate event by its `type` tag."""
    return any_event_adapter.validate_json(raw)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no whitespace, UTF-8) used for every digest and signature."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str).encode()


def digest(value: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
