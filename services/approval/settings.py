"""Settings of the approval service (`TIDEGATE_APPROVAL_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ApprovalSettings"]


class ApprovalSettings(BaseSettings):
    """What only the approval service reads."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_APPROVAL_", extra="ignore", frozen=True)

    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API and approver page listen on.")
    http_port: int = Field(default=8081, ge=0, le=65535, description="Port of the HTTP API and approver page (0: any free port).")
    public_url: str | None = Field(
        default=None, description="Base URL approvers reach the page at, used in one-time links; defaults to http://<host>:<port>."
    )
    expiry_s: float = Field(default=3600.0, gt=0, description="How long a request waits for a human before it expires (fail closed).")
    escalate_after_s: float | None = Field(
        default=None,
        gt=0,
        description="When set, a request still pending after this many seconds is opened to the risk class's escalation groups too.",
    )
    groups_file: Path | None = Field(
        default=None, description="YAML of approver groups per tenant and risk class; the built-in default when unset."
    )
    webhooks_file: Path | None = Field(
        default=None, description="YAML list of outgoing webhook endpoints (url, secret, tenant, approvers)."
    )
    sweep_interval_s: float = Field(default=2.0, gt=0, description="How often expiry, escalation and the outbox are checked.")
    webhook_max_attempts: int = Field(default=6, ge=1, description="Delivery attempts per webhook message before it is marked failed.")
    webhook_backoff_initial_s: float = Field(default=1.0, gt=0, description="Delay before the 2nd attempt; doubles on each retry.")
    webhook_backoff_max_s: float = Field(default=300.0, gt=0, description="Cap of the retry delay.")
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="HTTP timeout of one delivery attempt.")
    callback_tolerance_s: float = Field(
        default=300.0, gt=0, description="Inbound callbacks with a timestamp further than this from now are refused."
    )
    link_ttl_s: float = Field(default=3600.0, gt=0, description="Lifetime of a one-time approval link (never beyond the request's expiry).")
