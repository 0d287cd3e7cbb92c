"""Settings of the approval service (`TIDEGATE_APPROVAL_*`)."""

from __future__ import annotations

from pathlib import Path

import limits
from pydantic import Field, field_validator
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
    follow_up_expiry_s: float = Field(
        default=3 * 86_400.0,
        gt=0,
        description="How long a follow-up of an unknown outcome waits for a person to record what happened (a weekend): the "
        "question stays true (money may have moved) long after a request to run would be stale. One that expires is logged "
        "as a warning and its budget stays held. Keep it under `task_events_kept_s` and the policy's `TASK_STATE_KEPT_S`.",
    )
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
    decision_slo_s: float = Field(
        default=900.0, gt=0, description="A request pending longer than this is past the decision SLO (metric, alert, queue view)."
    )
    fetch_min_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        description="The broker holds a fetch of decisions and results until this much is there (or `fetch_max_wait_ms` "
        "passed): the service is off the path from proposal to result, so it takes larger batches, fewer writes and commits.",
    )
    fetch_max_wait_ms: int = Field(
        default=500,
        ge=0,
        le=10_000,
        description="Longest the broker holds a fetch for `fetch_min_bytes` (Kafka's default: an idle service fetches as "
        "often as before): the most a decision or result waits.",
    )
    sweep_interval_s: float = Field(default=2.0, gt=0, description="How often expiry, escalation and the outbox are checked.")
    task_events_kept_s: float = Field(
        default=30 * 86_400.0,
        ge=3_600,
        description="How long the decisions and results of a task are kept as the context an approver reads beside a request "
        "(the audit log keeps them all). Keep it above `expiry_s`, so a pending request never loses its context.",
    )
    task_events_check_s: float = Field(default=600.0, gt=0, description="How often the task events kept longer than that are forgotten.")
    webhook_max_attempts: int = Field(
        default=24,
        ge=1,
        description="Delivery attempts per webhook message before it is marked failed. With the default backoff the attempts "
        "span about 6.5 hours (1 s doubling to 30 min, then every 30 min), so a receiver that is down for a while still gets "
        "the message; a message asking for a decision (`approval.requested`, `approval.escalated`) is retried only until its "
        "request expires, whichever comes first, then marked failed.",
    )
    webhook_backoff_initial_s: float = Field(default=1.0, gt=0, description="Delay before the 2nd attempt; doubles on each retry.")
    webhook_backoff_max_s: float = Field(default=1800.0, gt=0, description="Cap of the retry delay.")
    webhook_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Deadline of one whole delivery attempt: resolving the name, connecting, sending and the answer's headers "
        "(the answer's body is never read).",
    )
    webhook_concurrency: int = Field(
        default=16,
        ge=1,
        description="Delivery attempts in flight at once, over all endpoints (one at a time per endpoint), so a slow or "
        "hanging receiver delays only its own messages.",
    )
    callback_tolerance_s: float = Field(
        default=300.0,
        gt=0,
        le=300.0,
        description="Inbound callbacks with a timestamp further than this from now are refused (the standardwebhooks library's "
        "5 minutes is the most).",
    )
    require_pinned_endpoints: bool = Field(
        default=False,
        description="Refuse (`unpinned`) a webhook endpoint row that no `tidegate.directory.endpoint` record names as current, "
        "and pin none at start. Off by default: at each start the service names current every signed row that no record names "
        "yet (rows written before endpoints were pinned; each trusted with a warning until then); turn it on after the first "
        "start of this release.",
    )
    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts webhooks may reach over http or at private, loopback or link-local addresses (otherwise https to a "
        "public address only), e.g. an in-house chat bridge. JSON list in the environment.",
        examples=[["chat-bridge.internal", "127.0.0.1"]],
    )
    token_ttl_days: float = Field(
        default=30.0, gt=0, description="Lifetime of a new approver token unless its creator sets another (`--expires-in-days`)."
    )
    rate_limit_per_token: str = Field(
        default="120/minute",
        description="Requests one credential (token or one-time link) may make to the API, in the `limits` notation.",
        examples=["120/minute", "10/second;600/hour"],
    )
    rate_limit_per_ip: str = Field(
        default="600/minute",
        description="Requests one client address may make to the API (before authentication, so token guessing is slowed too).",
        examples=["600/minute"],
    )

    @field_validator("rate_limit_per_token", "rate_limit_per_ip")
    @classmethod
    def _rates_parse(cls, value: str) -> str:
        limits.parse_many(value)  # raises ValueError on a malformed rate, at start-up
        return value

    link_ttl_s: float = Field(default=3600.0, gt=0, description="Lifetime of a one-time approval link (never beyond the request's expiry).")
    human_review_minutes: float | None = Field(
        default=None,
        ge=0,
        description="Deprecated: set `TIDEGATE_HUMAN_REVIEW_MINUTES`. Still obeyed when set alone (the service warns at start); "
        "set beside it with another value, the service does not start (exit 78, both values named).",
    )
    human_hourly_rate_usd: float | None = Field(
        default=None,
        ge=0,
        description="Deprecated: set `TIDEGATE_HUMAN_HOURLY_RATE_USD`. Still obeyed when set alone (the service warns at start); "
        "set beside it with another value, the service does not start (exit 78, both values named).",
    )
