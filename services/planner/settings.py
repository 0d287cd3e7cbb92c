"""Settings of the planner service (`TIDEGATE_PLANNER_*`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PlannerSettings"]


class PlannerSettings(BaseSettings):
    """What only the planner service reads."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_PLANNER_", extra="ignore", frozen=True)

    strategy: Literal["playbook", "llm"] = Field(default="playbook", description="`playbook` (deterministic, offline) or `llm` (litellm).")
    orchestration_usd_per_event: float = Field(default=0.00001, ge=0, description="Price of one event handled or published for a task.")
    human_review_minutes: float | None = Field(
        default=None,
        ge=0,
        description="Deprecated: set `TIDEGATE_HUMAN_REVIEW_MINUTES`. Still obeyed when set alone (the planner warns at start); set "
        "beside it with another value, the planner does not start (exit 78, both values named).",
    )
    human_hourly_rate_usd: float | None = Field(
        default=None,
        ge=0,
        description="Deprecated: set `TIDEGATE_HUMAN_HOURLY_RATE_USD`. Still obeyed when set alone (the planner warns at start); "
        "set beside it with another value, the planner does not start (exit 78, both values named).",
    )
    cheap_model: str = Field(default="openai/gpt-4o-mini", description="litellm model for classification and extraction.")
    strong_model: str = Field(default="openai/gpt-4o", description="litellm model for planning.")
    llm_api_base: str | None = Field(default=None, description="Base URL of an OpenAI-compatible endpoint (litellm `api_base`).")
    llm_api_key: SecretStr | None = Field(default=None, description="API key for the endpoint; else litellm reads the provider's variable.")
    llm_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one model call.")
    max_records: int = Field(default=500, ge=1, description="Largest batch consumed at once.")
    concurrency: int = Field(default=8, ge=1, description="Tasks handled at once within a batch (keep it under the database pool size).")
    cached_tasks: int = Field(
        default=1024,
        ge=0,
        description="States of the tasks this process wrote last, kept in memory with their row's version: the next event of "
        "a kept task is written at once, without reading and parsing its state (one round trip less). Each costs about five "
        "times its JSON (~35 KiB for a demo task of 7 KB), so 1,024 hold ~35–45 MiB; 0 keeps none.",
    )
    step_timeouts_s: dict[str, float] = Field(
        default_factory=lambda: {
            "read": 300.0, "draft": 600.0, "write_low": 600.0, "financial": 1800.0,
            "destructive": 1800.0, "permission_change": 1800.0, "code_change": 1800.0,
        },
        description="Seconds a step may wait for its decision or result, per tool risk class, before its task fails `step_timeout`.",
    )  # fmt: skip
    proposals_again_after_expiry: int = Field(
        default=2,
        ge=0,
        le=10,
        description="How many times a step is proposed again when the executor refused its authorization as expired before "
        "making any call (an executor down or behind longer than `TIDEGATE_POLICY_AUTHORIZATION_TTL_S`): policy decides "
        "afresh each time (a call a human approved is asked again); past it the task fails `authorization_expired`.",
    )
    step_timeout_default_s: float = Field(default=900.0, gt=0, description="Step timeout of a risk class not listed in `step_timeouts_s`.")
    step_timeout_check_s: float = Field(default=30.0, gt=0, description="How often the planner looks for steps past their timeout.")
    applied_events_kept_s: float = Field(
        default=15 * 86400.0,
        ge=3600,
        description="How long the id of an applied event is kept, so that a redelivery of it is refused: past the longest "
        "retention of the topics the planner reads (7 days) plus the time Kafka may keep a closed segment beyond it (its "
        "`segment.ms`, 7 days by default). An older event delivered again anyway finds its task ended and changes nothing.",
    )
    applied_events_check_s: float = Field(default=600.0, gt=0, description="How often the ids kept longer than that are forgotten.")
