"""Tidegate's wire contract: envelope, events, topics, reason codes and the tool catalog format.

Imports pydantic only.
"""

from schemas.common import (
    SERVICE_PROPOSERS,
    ActionCounts,
    ActionIdentity,
    Decision,
    ErrorInfo,
    Mode,
    ProposalCost,
    Reason,
    ResultCost,
    RiskClass,
    TaskCost,
    action_identity,
    is_finite_json,
    storable,
)
from schemas.control_events import *  # noqa: F403  (the module declares __all__)
from schemas.control_events import __all__ as _control_events_all
from schemas.envelope import Envelope, new_id, utcnow
from schemas.events import *  # noqa: F403  (the events module declares __all__)
from schemas.events import __all__ as _events_all
from schemas.names import OUR_PLANNER, mixed_scripts, proposer_problem, skeleton
from schemas.reasons import APPROVE_REASONS, REVIEW_REASONS, ReasonCode
from schemas.serialization import (
    CONTENT_TYPE,
    canonical_json,
    decode,
    decode_any,
    decode_document,
    digest,
    encode,
    headers_for,
    refuse_nul,
    validate_parsed,
)
from schemas.signed import action_digest, approval_document, approval_message, authorization_message
from schemas.tools import ArgSource, BeforeRead, McpUpstream, PolicyFacts, RecordFigures, RetryPolicy, ToolSpec, UndoSpec
from schemas.topics import DEFAULT_PREFIX, TOPICS, ActionResult, Approval, ControlEvent, TaskOutcome, TopicSpec, adapter_for, topic_spec

__all__ = [
    "APPROVE_REASONS",
    "CONTENT_TYPE",
    "OUR_PLANNER",
    "DEFAULT_PREFIX",
    "REVIEW_REASONS",
    "TOPICS",
    "ActionCounts",
    "ActionIdentity",
    "ActionResult",
    "Approval",
    "ArgSource",
    "BeforeRead",
    "ControlEvent",
    "Decision",
    "Envelope",
    "ErrorInfo",
    "McpUpstream",
    "Mode",
    "PolicyFacts",
    "RecordFigures",
    "ProposalCost",
    "Reason",
    "ReasonCode",
    "ResultCost",
    "RetryPolicy",
    "RiskClass",
    "SERVICE_PROPOSERS",
    "TaskCost",
    "TaskOutcome",
    "ToolSpec",
    "TopicSpec",
    "action_digest",
    "action_identity",
    "UndoSpec",
    "adapter_for",
    "approval_document",
    "approval_message",
    "authorization_message",
    "canonical_json",
    "decode",
    "decode_any",
    "decode_document",
    "digest",
    "encode",
    "is_finite_json",
    "mixed_scripts",
    "proposer_problem",
    "skeleton",
    "storable",
    "headers_for",
    "new_id",
    "topic_spec",
    "utcnow",
    "refuse_nul",
    "validate_parsed",
    *_control_events_all,
    *_events_all,
]
