"""The topic catalog: names, the event union each carries, and how Kafka should keep them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from schemas.control_events import (
    ControlBudget,
    ControlConnectorGrant,
    ControlKillswitch,
    ControlPolicy,
    ControlRedrive,
    ControlTenant,
    ControlTokenRevoked,
    DirectoryEndpoint,
    DirectoryTokenRevoked,
    DirectoryUpdated,
)
from schemas.envelope import Envelope
from schemas.events import (
    ActionAuthorized,
    ActionDecided,
    ActionFailed,
    ActionProposed,
    ActionSucceeded,
    ActionUnknown,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ApprovalResolved,
    AuditCheckpoint,
    EventRejected,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    ToolInvocation,
    ToolReply,
)

__all__ = [
    "DEFAULT_PREFIX",
    "TOPICS",
    "ActionResult",
    "AnyEvent",
    "Approval",
    "ControlEvent",
    "DirectoryRecord",
    "TaskOutcome",
    "TopicSpec",
    "adapter_for",
    "any_event_adapter",
    "topic_spec",
]

DEFAULT_PREFIX = "tidegate."
DAY_MS = 24 * 3600 * 1000

TaskEvent = TaskSubmitted
ActionResult = Annotated[Union[ActionSucceeded, ActionFailed, ActionUnknown], Field(discriminator="type")]
Approval = Annotated[
    Union[ApprovalRequested, ApprovalGranted, ApprovalRejected, ApprovalExpired, ApprovalResolved], Field(discriminator="type")
]
TaskOutcome = Annotated[Union[TaskCompleted, TaskFailed], Field(discriminator="type")]
ControlEvent = Annotated[
    Union[ControlKillswitch, ControlPolicy, ControlBudget, ControlTenant, ControlRedrive, ControlConnectorGrant, ControlTokenRevoked],
    Field(discriminator="type"),
]
DirectoryRecord = Annotated[Union[DirectoryUpdated, DirectoryEndpoint, DirectoryTokenRevoked], Field(discriminator="type")]
AnyEvent = Annotated[
    Union[
        TaskSubmitted,
        ActionProposed,
        ActionDecided,
        ApprovalRequested,
        ApprovalGranted,
        ApprovalRejected,
        ApprovalExpired,
        ApprovalResolved,
        ActionAuthorized,
        ActionSucceeded,
        ActionFailed,
        ActionUnknown,
        TaskCompleted,
        TaskFailed,
        ControlKillswitch,
        ControlPolicy,
        ControlBudget,
        ControlTenant,
        ControlRedrive,
        ControlConnectorGrant,
        ControlTokenRevoked,
        DirectoryUpdated,
        DirectoryEndpoint,
        DirectoryTokenRevoked,
        EventRejected,
        ToolInvocation,
        ToolReply,
        AuditCheckpoint,
    ],
    Field(discriminator="type"),
]


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the catalog (name without prefix) and how it is kept."""

    name: str
    events: tuple[type[Envelope], ...]
    adapter: TypeAdapter[Any]
    description: str
    partitions: int = 6  # the catalog's: up to six copies of a service share the load (`KitSettings.topic_partitions` sets another)
    retention_ms: int = 7 * DAY_MS
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()
    config: dict[str, str] = field(default_factory=dict)

    @property
    def ordered(self) -> bool:
        """One partition, so that its records are totally ordered (`control`, `directory`, the checkpoints): no setting changes it."""
        return self.partitions == 1

    def partitions_given(self, spread: int | None) -> int:
        """Partitions it is created with: one when `ordered`; else `spread` (the deployment's `topic_partitions`), else the catalog's."""
        return self.partitions if self.ordered or spread is None else spread

    def full_name(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The topic name on the broker, with the deployment's prefix."""
        return f"{prefix}{self.name}"

    def kafka_config(self) -> dict[str, str]:
        """Topic-level configs for creation.

        No topic is compacted: compaction keeps the last record per key by offset, so on `control` a replayed
        old record would delete the newer one it replays (servicekit.control). Every topic is stamped by the
        broker, not by the producer: a retired signing key's grace is judged at that time, which whoever holds
        the key cannot choose, by the live services and by the audit log alike (servicekit.authority).
        """
        return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms), "message.timestamp.type": "LogAppendTime"} | self.config


def _spec(name: str, union: Any, events: tuple[type[Envelope], ...], description: str, **kw: Any) -> TopicSpec:
    return TopicSpec(name=name, events=events, adapter=TypeAdapter(union), description=description, **kw)


TOPICS: dict[str, TopicSpec] = {
    s.name: s
    for s in (
        _spec(
            "tasks", TaskSubmitted, (TaskSubmitted,), "Tasks submitted by clients.", producers=("clients", "cli"), consumers=("planner",)
        ),
        _spec(
            "actions.proposed",
            ActionProposed,
            (ActionProposed,),
            "Actions proposed by the planner or any outside agent.",
            producers=("planner", "outside agents"),
            consumers=("policy",),
        ),
        _spec(
            "actions.decided",
            ActionDecided,
            (ActionDecided,),
            "Policy decisions: allow, deny, escalate.",
            producers=("policy",),
            consumers=("approval", "planner"),
        ),
        _spec(
            "approvals",
            Approval,
            (ApprovalRequested, ApprovalGranted, ApprovalRejected, ApprovalExpired, ApprovalResolved),
            "Approval requests and human decisions (decisions signed by the approval service).",
            producers=("approval",),
            consumers=("policy", "planner"),
        ),
        _spec(
            "actions.authorized",
            ActionAuthorized,
            (ActionAuthorized,),
            "Signed authorizations; only the policy service produces them.",
            producers=("policy",),
            consumers=("executor",),
        ),
        _spec(
            "actions.results",
            ActionResult,
            (ActionSucceeded, ActionFailed, ActionUnknown),
            "Results of executed tool calls.",
            producers=("executor",),
            consumers=("planner", "approval"),
        ),
        _spec(
            "tasks.outcomes",
            TaskOutcome,
            (TaskCompleted, TaskFailed),
            "How each task ended, with its cost.",
            producers=("planner",),
            consumers=("clients",),
            retention_ms=30 * DAY_MS,
        ),
        _spec(
            "control",
            ControlEvent,
            (ControlKillswitch, ControlPolicy, ControlBudget, ControlTenant, ControlRedrive, ControlConnectorGrant, ControlTokenRevoked),
            "Kill switches, policy versions, budgets, tenants, the current connector grant of each (tenant, connector), the approver "
            "tokens operators revoked and the record of each dead letter redriven; every record kept forever "
            "(never compacted, so a replayed "
            "old record can never outlive the newer one it replays), read from the beginning at start-up.",
            partitions=1,
            retention_ms=-1,
            producers=("cli",),
            consumers=("policy", "approval", "executor"),
        ),
        _spec(
            "directory",
            DirectoryRecord,
            (DirectoryUpdated, DirectoryEndpoint, DirectoryTokenRevoked),
            "Each tenant's directory as its admins keep it, the current row of each webhook endpoint and every approver "
            "token the approval service revoked (approval-signed, or an operator's); every record kept forever, read from the "
            "beginning at start-up.",
            partitions=1,
            retention_ms=-1,
            producers=("approval",),
            consumers=("policy", "approval"),
        ),
        _spec(
            "deadletter",
            EventRejected,
            (EventRejected,),
            "Messages a service could not accept, with the reason.",
            retention_ms=30 * DAY_MS,
            producers=("every service",),
            consumers=("ops",),
        ),
        _spec(
            "audit.checkpoints",
            AuditCheckpoint,
            (AuditCheckpoint,),
            "Signed heads of the audit hash chains.",
            partitions=1,
            retention_ms=-1,
            producers=("audit",),
            consumers=("ops",),
        ),
    )
}

_TOOL_SUFFIXES = {
    "requests": (ToolInvocation, "tool invocations for an outside tool service"),
    "replies": (ToolReply, "replies of an outside tool service"),
}


def topic_spec(name: str) -> TopicSpec:
    """The spec of a catalogued topic, or of `tools.<tool>.requests|replies`."""
    if name in TOPICS:
        return TOPICS[name]
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "tools" and parts[2] in _TOOL_SUFFIXES:
        event, description = _TOOL_SUFFIXES[parts[2]]
        return _spec(
            name,
            event,
            (event,),
            f"{description.capitalize()} `{parts[1]}`.",
            producers=("executor",) if parts[2] == "requests" else ("outside tool service",),
            consumers=("outside tool service",) if parts[2] == "requests" else ("executor",),
        )
    raise KeyError(f"unknown topic {name!r}")


def adapter_for(name: str) -> TypeAdapter[Any]:
    """The TypeAdapter that parses events of topic `name` (without prefix)."""
    return topic_spec(name).adapter


any_event_adapter: TypeAdapter[Any] = TypeAdapter(AnyEvent)
