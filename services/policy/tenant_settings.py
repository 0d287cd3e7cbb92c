"""A tenant's settings in a policy pack: what its decisions depend on besides the policies (`settings.yaml`).

`PackSettings` is a pack's `settings.yaml`; `TenantSettings` is one tenant's effective settings, its entry (or its
operator's `control.tenant` record and its admins' directory) over the `default` entry. Pure models: no Cedar here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from schemas import RiskClass, TenantDirectory
from servicekit import ControlState

__all__ = [
    "DEFAULT_SENSITIVE_PATHS",
    "MAX_PAYEE_DAILY_USD",
    "TENANT_DAILY_PAYOUT_THRESHOLDS",
    "PackSettings",
    "TenantSettings",
    "TriggerChoice",
    "Triggers",
]

MAX_PAYEE_DAILY_USD = 1e12  # a daily bound's figure in cents stays a Cedar Long (64 bits); `off` turns the bound off
_DailyUsd = Annotated[float, Field(ge=0, le=MAX_PAYEE_DAILY_USD, allow_inf_nan=False)]
# The tenant-wide daily payout bound when a tenant sets none, in refund thresholds (docs/policy.md, "Split refunds"): an
# agent pays out alone at most two thresholds a day, what two payees' full days are under the per-payee bound.
TENANT_DAILY_PAYOUT_THRESHOLDS = 2.0

DEFAULT_SENSITIVE_PATHS = [".github/*", "infra/*", "deploy/*", "*secret*", "*auth*", "*.env", "config/prod*", "*production*"]


class TriggerChoice(BaseModel):
    """What a tenant wants when a trigger fires: refuse the call, or send it to N distinct approvers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["deny", "escalate", "allow"] = Field(
        description="`deny`: the agent may not; `escalate`: a human may approve it; `allow` (external recipients only): "
        "the trigger alone stops nothing, the flow rules still do (a send to an outsider after untrusted content was read)."
    )
    approvers: int = Field(default=1, ge=1, le=10, description="Distinct approvals needed when the call escalates.")


class Triggers(BaseModel):
    """Per trigger, deny or escalate-with-N-approvers; the default pack reads these as `context.settings.*`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="after")
    def _allow_only_for_recipients(self) -> Triggers:
        for name in ("new_payee", "permission_change"):
            if getattr(self, name).action == "allow":
                raise ValueError(f"triggers.{name}: choose deny or escalate (allow is only for external_recipient)")
        return self

    new_payee: TriggerChoice = Field(default=TriggerChoice(action="deny"), description="A financial call to a payee never paid.")
    external_recipient: TriggerChoice = Field(
        default=TriggerChoice(action="escalate"), description="A write that sends to a counterparty outside the tenant's directory."
    )
    permission_change: TriggerChoice = Field(
        default=TriggerChoice(action="deny"), description="A `permission_change` call (human only by default)."
    )


class TenantSettings(BaseModel):
    """What a tenant's decisions depend on besides the policies; unset fields come from the `default` entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    refund_threshold_usd: float = Field(default=500.0, ge=0, description="Refunds at or over this escalate.")
    payee_daily_threshold_usd: _DailyUsd | Literal["off"] | None = Field(
        default=None,
        description="What the tenant's allowed calls may pay one payee over 24 hours, across tasks, before a human approves the "
        "call that reaches it (cumulative_threshold): null = `refund_threshold_usd` (one threshold per payee per day); "
        "`off`: no such bound (the per-call and per-task thresholds still hold).",
        examples=[None, 2000, "off"],
    )
    tenant_daily_payout_usd: _DailyUsd | Literal["off"] | None = Field(
        default=None,
        description="What the tenant's financial calls may pay out over 24 hours without a human, all tasks and payees together: "
        "a call that would take that figure over it escalates (daily_payout_bound); calls a human approved do not count. "
        f"null = {TENANT_DAILY_PAYOUT_THRESHOLDS:g} × `refund_threshold_usd`; `off`: no such bound.",
        examples=[None, 5000, "off"],
    )

    @field_validator("payee_daily_threshold_usd", "tenant_daily_payout_usd", mode="before")
    @classmethod
    def _off(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML reads `off`/`no`/`false` as False, which a float field would take as 0 (every payout escalating): say it.
        if isinstance(value, bool):
            if value:
                raise ValueError(f"{info.field_name}: a number of USD, null (the default) or off")
            return "off"
        return value.strip().lower() if isinstance(value, str) and value.strip().lower() == "off" else value

    def payee_daily_threshold(self) -> float | None:
        """The per-payee daily bound, USD (None: the tenant turned it off): its own figure, else the refund threshold."""
        if self.payee_daily_threshold_usd == "off":
            return None
        return self.refund_threshold_usd if self.payee_daily_threshold_usd is None else self.payee_daily_threshold_usd

    def tenant_daily_payout(self) -> float | None:
        """The tenant-wide daily payout bound, USD (None: turned off): its own figure, else `TENANT_DAILY_PAYOUT_THRESHOLDS` thresholds."""
        if self.tenant_daily_payout_usd == "off":
            return None
        if self.tenant_daily_payout_usd is None:
            return min(TENANT_DAILY_PAYOUT_THRESHOLDS * self.refund_threshold_usd, MAX_PAYEE_DAILY_USD)
        return self.tenant_daily_payout_usd

    internal_domains: list[str] = Field(default_factory=list, description="Recipient domains that are internal; any other is external.")
    allow_autonomous: bool = Field(default=False, description="Whether the tenant's tasks may run in autonomous mode.")
    budget_usd: float | None = Field(default=None, ge=0, description="Tenant spend cap, USD; a `control.budget` record overrides it.")
    known_payees: list[str] = Field(
        default_factory=list, description="Payees known from the start (others become known when a refund to them succeeds)."
    )
    required_approvals: dict[str, int] = Field(
        default_factory=dict,
        description="Risk class → distinct approvers a grant must name (default 1); the policy service re-checks every grant.",
    )

    approver_groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Risk class → approver groups: only approvers the grant shows in one of them count toward the quorum "
        "(a class not named: any approver the approval service accepted).",
        examples=[{"financial": ["finance", "finance-leads"]}],
    )

    classes: dict[str, TriggerChoice] = Field(
        default_factory=dict,
        description="Risk class → what an escalation of that class becomes for this tenant: `deny` (no human may lift it, "
        "`class_escalation_denied`) or `escalate` with N distinct approvers (the quorum is the most of this, "
        "`required_approvals` and the call's triggers).",
        examples=[{"financial": {"action": "escalate", "approvers": 2}, "code_change": {"action": "deny"}}],
    )

    @field_validator("classes")
    @classmethod
    def _class_choices(cls, value: dict[str, TriggerChoice]) -> dict[str, TriggerChoice]:
        unknown = sorted(set(value) - {r.value for r in RiskClass})
        if unknown:
            raise ValueError(f"classes: not risk classes: {', '.join(unknown)}")
        allowed = sorted(name for name, choice in value.items() if choice.action == "allow")
        if allowed:
            raise ValueError(f"classes: choose deny or escalate for {', '.join(allowed)} (allow is only for external_recipient)")
        return value

    def approvers_for(self, risk: RiskClass) -> int:
        """Distinct approvers a grant of this class needs: the more of `required_approvals` and `classes` (at least 1)."""
        choice = self.classes.get(risk.value)
        return max(self.required_approvals.get(risk.value, 1), choice.approvers if choice is not None else 1)

    @field_validator("required_approvals", "approver_groups")
    @classmethod
    def _risk_classes(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        unknown = sorted(set(value) - {r.value for r in RiskClass})
        if unknown:
            raise ValueError(f"{info.field_name}: not risk classes: {', '.join(unknown)}")
        if info.field_name == "required_approvals" and any(n < 1 for n in value.values()):
            raise ValueError("required_approvals: each count is at least 1")
        if info.field_name == "approver_groups" and not all(value.values()):
            raise ValueError("approver_groups: name at least one group per class (leave a class out to accept any approver)")
        return value

    known_contacts: list[str] = Field(
        default_factory=list, description="Outside email addresses the tenant writes to routinely (not external recipients)."
    )
    learn_after_approvals: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Propose for the directory a counterparty humans approved unchanged this many times (0: never). The approval "
        "service lists the proposals; a tenant admin adds them.",
    )
    chat_members: list[str] = Field(default_factory=list, description="Chat users of the tenant's own workspace (internal).")
    chat_channels: list[str] = Field(default_factory=list, description="Chat channels of the tenant's own workspace (internal).")
    allowed_sites: list[str] = Field(default_factory=list, description="Web domains the tenant trusts (a subdomain counts).")
    organisations: list[str] = Field(default_factory=list, description="Organisations that are the tenant itself or its own.")
    automation_tags: list[str] = Field(
        default_factory=list,
        description="Tags or labels the tenant's automations act on (a helpdesk trigger that refunds, escalates or closes): a call "
        "that adds one escalates (automation_tag), whoever chose it. Compared case-folded.",
    )
    triggers: Triggers = Field(default_factory=Triggers, description="Deny or escalate, per trigger.")
    min_confidence: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="A low-risk write proposed with a confidence under this escalates (low_confidence); 0: never.",
    )
    tool_error_limit: int = Field(
        default=2, ge=1, le=100, description="Tool errors (failed or unknown results) in a task after which its writes escalate."
    )
    retry_limit: int = Field(default=3, ge=1, le=100, description="Retried attempts in a task after which its writes escalate.")
    accept_irreversible: list[str] = Field(
        default_factory=list,
        description="Risk classes whose writes no tool is known to undo the tenant lets an agent make alone (by default a "
        "`write_low` call escalates when its tool is declared irreversible, irreversible_write, or declares no undo, no_rollback_path).",
    )
    review_reasons: dict[str, str] = Field(
        default_factory=dict,
        description="The tenant's own reasons an approver may give when rejecting or editing (code → meaning), beside the defaults.",
    )

    @field_validator("accept_irreversible")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - {r.value for r in RiskClass})
        if unknown:
            raise ValueError(f"accept_irreversible: not risk classes: {', '.join(unknown)}")
        return value

    @field_validator("review_reasons")
    @classmethod
    def _codes(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(code for code in value if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", code))
        if bad:
            raise ValueError(f"review_reasons: codes are lower-case words with underscores: {', '.join(bad)}")
        return value


class PackSettings(BaseModel):
    """`settings.yaml` of a pack."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Tenant → settings; the `default` entry applies to every tenant."
    )
    sensitive_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SENSITIVE_PATHS), description="Glob patterns of security-sensitive code paths."
    )

    def tenant(self, tenant_id: str) -> TenantSettings:
        """The effective settings of `tenant_id`: its entry over the `default` entry."""
        merged = dict(self.tenants.get("default") or {}) | dict(self.tenants.get(tenant_id) or {})
        return TenantSettings.model_validate(merged)

    def onboarded(self, tenant_id: str) -> bool:
        """Whether the pack itself names the tenant (the older way to onboard; `control.tenant` records are the new one)."""
        return tenant_id != "default" and tenant_id in self.tenants

    def from_records(self, tenant_id: str, settings: dict[str, Any] | None, directory: TenantDirectory | None) -> TenantSettings | None:
        """A tenant's settings from its operator's record and its admins' directory (None when it has neither).

        Without an operator's record, the admins' directory adds to the pack's own entry for the tenant, if
        any (else the `default` entry: an onboarding over the API). Raises ValidationError for a bad record.
        """
        if settings is None and directory is None:
            return None
        base = settings if settings is not None else dict(self.tenants.get(tenant_id) or {})
        return self.with_record(base, directory)

    def of_control(self, control: ControlState, tenant_id: str) -> TenantSettings | None:
        """`from_records` of the tenant's `control.tenant` record and its admins' directory as `control` holds them."""
        record, directory = control.tenants.get(tenant_id), control.directories.get(tenant_id)
        return self.from_records(tenant_id, record.settings if record is not None else None, directory.directory if directory else None)

    def with_record(self, settings: dict[str, Any], directory: TenantDirectory | None = None) -> TenantSettings:
        """A tenant's settings from its `control.tenant` record, over the pack's `default` entry; raises ValidationError.

        With `directory` (the record its admins keep on `directory`), each directory list is the union of both.
        """
        merged = dict(self.tenants.get("default") or {}) | settings
        if directory is not None:
            for name, entries in directory.model_dump().items():
                merged[name] = list(dict.fromkeys([*(merged.get(name) or []), *entries]))
        return TenantSettings.model_validate(merged)
