"""The CloudEvents 1.0 envelope (structured JSON mode) that carries every Tidegate event."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, ValidationInfo, model_validator

from schemas.common import Contract

__all__ = ["EVENT_TYPE_PREFIX", "FROM_THE_WIRE", "REQUIRED_ATTRIBUTES", "Envelope", "new_id", "utcnow"]

EVENT_TYPE_PREFIX = "tidegate."
# CloudEvents' required attributes, plus `time` and `tenantid`: required on the wire, never invented on decode.
REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type", "time", "tenantid")
# Validation context of a document parsed from the wire and validated as Python (`schemas.decode_document`): held to
# the wire's rules, as `validate_json` holds its input.
FROM_THE_WIRE: dict[str, Any] = {"from_the_wire": True}


# A UUID's version and variant bits: cleared, then set to version 4 and RFC 4122's variant, as `uuid.UUID(version=4)` does.
_UUID4_CLEAR = ~(0xC000 << 48 | 0xF000 << 64)
_UUID4_SET = 0x8000 << 48 | 4 << 76


def uuid4_text(raw: bytes) -> str:
    """`str(uuid.UUID(bytes=raw, version=4))` for 16 bytes, without building the `UUID` (its checks cost twice this)."""
    digits = "%032x" % (int.from_bytes(raw, "big") & _UUID4_CLEAR | _UUID4_SET)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def new_id() -> str:
    """A fresh random identifier (UUID4, string form): `str(uuid.uuid4())`, made from 16 random bytes as it is."""
    return uuid4_text(os.urandom(16))


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def _require_attributes(schema: dict[str, Any]) -> None:
    schema["required"] = sorted(set(schema.get("required", [])) | set(REQUIRED_ATTRIBUTES) | {"data"})


class Envelope(Contract):
    """CloudEvents 1.0 attributes shared by every event; subclasses fix `type` and `data`.

    Building an event in code fills `id`, `time` and `type`; decoding one from JSON fills nothing:
    an event without any of `REQUIRED_ATTRIBUTES`, or whose `tenantid` is not its data's tenant, is invalid.
    """

    model_config = ConfigDict(json_schema_extra=_require_attributes)

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
    keyid: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Id of the producer's Ed25519 key that signed the event (extension; see docs/security/signatures.md).",
        examples=["policy-3f9a1c2b7d4e"],
    )
    sequence: int | None = Field(
        default=None,
        ge=1,
        description="Version of a `control` or `directory` record within its scope (its Kafka key: `killswitch:<tenant>:<tool>`, "
        "`budget:<tenant>`, `tenant:<tenant>`, `policy`, `directory:<tenant>`), whoever signed it: the signing time in nanoseconds "
        "(extension). A record whose sequence is not greater than the last one applied for its scope is refused (replayed or older).",
        examples=[1764528725000000000],
    )
    signature: str | None = Field(
        default=None,
        max_length=200,
        description="Ed25519 signature (base64url) over the canonical JSON of the whole event without this attribute (extension).",
    )
    data: Any

    event_type: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _required_on_the_wire(cls, value: Any, info: ValidationInfo) -> Any:
        wire = info.mode == "json" or (isinstance(info.context, dict) and info.context.get("from_the_wire") is True)
        if wire and isinstance(value, dict):
            missing = [name for name in REQUIRED_ATTRIBUTES if value.get(name) in (None, "")]
            if missing:
                raise ValueError(f"missing required attribute(s): {', '.join(missing)}")
        return value

    @model_validator(mode="after")
    def _tenant_is_the_data_tenant(self) -> Self:
        tenant = getattr(self.data, "tenant_id", None)
        if tenant is not None and tenant != self.tenantid:
            raise ValueError(f"tenantid {self.tenantid!r} differs from data.tenant_id {tenant!r}")
        return self

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
