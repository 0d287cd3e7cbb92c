"""Value objects shared by several events: an action's identity, money, reasons, risk classes, errors."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol, TypedDict

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from schemas.names import SERVICE_PROPOSERS
from schemas.reasons import ReasonCode

__all__ = [
    "SERVICE_PROPOSERS",
    "ActionCounts",
    "ActionIdentity",
    "Contract",
    "Decision",
    "ErrorInfo",
    "JsonObject",
    "Mode",
    "ProposalCost",
    "Reason",
    "ResultCost",
    "RiskClass",
    "TaskCost",
    "action_identity",
    "is_finite_json",
    "storable",
]


class ActionIdentity(TypedDict):
    """Which action an event is about: the ids every action event carries (unpack it into the event's data)."""

    action_id: str
    task_id: str
    tenant_id: str
    step: int


class _IdentifiesAnAction(Protocol):
    @property
    def action_id(self) -> str: ...
    @property
    def task_id(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def step(self) -> int: ...


def action_identity(of: _IdentifiesAnAction) -> ActionIdentity:
    """The identity of the action `of` is about (an event's data or a service's record of the action)."""
    return ActionIdentity(action_id=of.action_id, task_id=of.task_id, tenant_id=of.tenant_id, step=of.step)


class Contract(BaseModel):
    """Base of every wire model: immutable; unknown fields are ignored so that additive changes stay compatible.

    NaN and Infinity are refused in every number field (JSON has neither; a NaN cost would poison every sum).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, allow_inf_nan=False)


class RiskClass(StrEnum):
    """How much harm a tool can do; the policy pack keys its rubric on this."""

    READ = "read"
    DRAFT = "draft"
    WRITE_LOW = "write_low"
    FINANCIAL = "financial"
    DESTRUCTIVE = "destructive"
    PERMISSION_CHANGE = "permission_change"
    CODE_CHANGE = "code_change"


Mode = Literal["draft", "autonomous"]
Decision = Literal["allow", "deny", "escalate"]


LaterReasonCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
"""A reason code this release does not know: a later release's new one, kept as its text.

A decision's outcome (allow, deny, escalate) is what a consumer acts on; its codes say why. Read as a closed list, the
first code a new policy gave made every older consumer refuse the whole decision (the client timed out, the planner and
the approval service dead-lettered an escalation and the task waited for nothing; the approval queue answered 500 after
a rollback): a rolling upgrade or an outside agent not yet upgraded lost what the policy decided (upgrade probe F2)."""


class Reason(Contract):
    """One reason behind a decision, named by a stable code and the policy that gave it."""

    code: ReasonCode | LaterReasonCode = Field(
        union_mode="left_to_right",
        description="Stable reason code: one of `ReasonCode`; a consumer reads a code it does not know (a later release's) "
        "as text, and acts on the decision's outcome as it would with a known one.",
        examples=["needs_human_approval"],
    )
    policy_id: str = Field(description="`@id` of the policy (or built-in check) that fired.", examples=["refund-threshold"])
    message: str = Field(
        default="", description="Human-readable explanation.", examples=["refund of 900.00 USD is at or over the 500.00 USD threshold"]
    )


class ProposalCost(Contract):
    """What it cost to produce a proposal (the model call that planned it)."""

    model: str | None = Field(default=None, description="Model that produced the proposal, if any.", examples=["gpt-4o-mini"])
    tokens_in: int = Field(default=0, ge=0, description="Prompt tokens.", examples=[812])
    tokens_out: int = Field(default=0, ge=0, description="Completion tokens.", examples=[64])
    usd: float = Field(default=0.0, ge=0, description="Cost in US dollars.", examples=[0.00042])


class ResultCost(Contract):
    """What a tool call cost."""

    usd: float = Field(default=0.0, ge=0, description="Cost of the call(s) in US dollars, all attempts included.", examples=[0.002])


class TaskCost(Contract):
    """Cost breakdown of one task (DESIGN.md principle 6)."""

    model: float = Field(default=0.0, ge=0, description="Model usage, USD.")
    retrieval: float = Field(default=0.0, ge=0, description="Retrieval (read tools), USD.")
    tools: float = Field(default=0.0, ge=0, description="Tool calls that wrote, USD (first attempts).")
    orchestration: float = Field(default=0.0, ge=0, description="Bus and service overhead per event, USD.")
    retries: float = Field(default=0.0, ge=0, description="Extra attempts of tool calls, USD.")
    human_review: float = Field(default=0.0, ge=0, description="Human review time priced at the configured rate, USD.")
    total: float = Field(default=0.0, ge=0, description="Sum of the above, USD.")


class ActionCounts(Contract):
    """How many of a task's actions ended in each outcome."""

    proposed: int = 0
    allowed: int = 0
    denied: int = 0
    escalated: int = 0
    approved: int = 0
    rejected: int = 0
    expired: int = 0
    succeeded: int = 0
    failed: int = 0
    unknown: int = 0
    refused: int = Field(
        default=0,
        ge=0,
        description="Authorizations the executor refused before making any call (expired, kill switch, invalid args, unknown "
        "tool): not calls, so counted apart from `failed`.",
    )


class ErrorInfo(Contract):
    """Why a tool call failed."""

    type: str = Field(description="Error class, stable per tool.", examples=["timeout"])
    message: str = Field(description="What went wrong.", examples=["payments API did not answer in 5.0 s"])
    retryable: bool = Field(default=False, description="Whether a retry could succeed.")
    maybe_applied: bool = Field(
        default=False,
        description="Whether the call may have taken effect anyway (a timeout after the request was sent): the executor then "
        "ends a writing tool's action `unknown`, for a human to follow up, unless repeating it is safe.",
    )


_DOUBLE_MAX = 1.7976931348623157e308


def is_finite_json(value: Any) -> bool:
    """Whether every number in `value` (a decoded JSON value, or one number) is finite and fits a double.

    Loops, no recursion, no generators: it runs per event, on values nested as deep as the bounds allow.
    """
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif (kind is float and item - item != 0.0) or (kind is int and abs(item) > _DOUBLE_MAX):
            return False  # NaN - NaN and inf - inf are NaN; a finite float gives 0.0
    return True


_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable_text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if _has_lone_surrogate(text):  # JSON's "\ud800" decodes to one
        text = _SURROGATE.sub("\ufffd", text)
    return text


def _storable(item: Any) -> Any:
    kind = type(item)
    if kind is str:
        return _storable_text(item)
    if kind is dict:
        return {_storable_text(k) if type(k) is str else k: _storable(v) for k, v in item.items()}
    if kind is list or kind is tuple:
        return [_storable(v) for v in item]
    if (kind is float and item - item != 0.0) or (kind is int and abs(item) > _DOUBLE_MAX):
        return None
    return item


def storable(value: Any) -> Any:
    """`value` (a decoded JSON value from outside: a tool's answer, its error) as the contract and PostgreSQL can hold it.

    In every string and key, U+0000 (which PostgreSQL's text and jsonb refuse) and lone surrogates (which UTF-8
    cannot hold; JSON's escape of half a surrogate pair decodes to one) become U+FFFD; a NaN, an infinity or a
    number beyond a double (which the contract refuses, `JsonObject`) becomes null. Anything else is returned as it is, the same object
    when there is nothing to change. Without it, a system of record that answered with one such character
    left a call that had happened with no result anyone could store.
    """
    return value if _is_storable(value) else _storable(value)


def _is_storable(value: Any) -> bool:
    """Whether `_storable` would change nothing in `value`: one walk over its strings, keys and numbers."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if "\x00" in item or (not item.isascii() and _has_lone_surrogate(item)):
                return False
        elif kind is dict:
            stack.extend(item.values())
            stack.extend(item.keys())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif (kind is float and item - item != 0.0) or (kind is int and abs(item) > _DOUBLE_MAX):
            return False
    return True


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _finite_json(value: dict[str, Any]) -> dict[str, Any]:
    """`value` unchanged, or `finite_number` when it holds NaN, an infinity, or an integer no double can hold.

    `allow_inf_nan=False` covers typed number fields only; a free-form object (a call's args, a result)
    decodes `1e999` to `inf` and `NaN` to `nan`, and money computed from either is meaningless.
    """
    if not is_finite_json(value):
        raise PydanticCustomError(
            "finite_number", "Input should be a finite number (NaN, Infinity and numbers beyond a double are refused)"
        )
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_finite_json)]
"""A free-form JSON object (args, results, inputs, settings): any shape, every number finite."""
