"""Settings of the policy service (`TIDEGATE_POLICY_*`)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PolicySettings"]


class PolicySettings(BaseSettings):
    """What only the policy service reads."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_POLICY_", extra="ignore", frozen=True)
