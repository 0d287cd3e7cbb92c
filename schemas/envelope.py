"""The CloudEvents 1.0 envelope (structured JSON mode) that carries every Tidegate event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import Field

from schemas.common import Contract

__all__ = ["EVENT_TYPE_PREFIX", "Envelope", "new_id", "utcnow"]

EVENT_TYPE_PREFIX = "tidegate."


def new_id() -> str:
    """A fresh random identifier (UUID4, string form)."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Envelope(Contract):
    """CloudEvents 1.0 attributes shared by every event; subclasses fix `type` and `data`."""

    specversion: Literal["1.0"] = Field(default="1.0", description="CloudEvents spec version.")
    id: str = Field(
        default_factory=new_id,
        min_length=1,
        description="Unique id of this event (UUID).",
        examples=["5b0c1e1e-1d4b-4f56-9c0d-6d2a4b8e1f00"],
    )
    source: str = Field(
        min_length=1, description="Producer, as `tidegate/<service>` or the outside agent's URI.", examples=["tidegate/policy"]
    )
    type: str = Field(description="Event type, `tidegate.<name>`.")
    subject: str | None = Field(default=None, description="The task id for task-scoped events.", examples=["t-42"])
    time: datetime = Field(default_factory=utcnow, description="When the event was produced (RFC 3339, UTC).")
    datacontenttype: Literal["application/json"] = Field(default="application/json", description="Always JSON.")
    tenantid: str = Field(min_length=1, description="Tenant the event belongs to (CloudEvents extension).", examples=["acme"])
    traceparent: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        description="W3C trace context of the producing span (also sent as a Kafka header).",
        examples=["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    )
    data: Any

    event_type: ClassVar[str] = ""

    @classmethod
    def build(cls, data: Any, *, source: str, traceparent: str | None = None, subject: str | None = None) -> Self:
        """Wrap `data` in a new envelope; subject and tenant come from the data when it has them."""
        tenant = getattr(data, "tenant_id", None)
        if not tenant:
            raise ValueError(f"{cls.__name__}: data carries no tenant_id")
        if subject is None:
            subject = getattr(data, "task_id", None)
        return cls(source=source, subject=subject, tenantid=tenant, traceparent=traceparent, data=data)  # type: ignore[call-arg]  # `type` has a default in every subclass

    @property
    def key(self) -> bytes | None:
        """The Kafka key: the task id (UTF-8) for task-scoped events."""
        return self.subject.encode() if self.subject else None
