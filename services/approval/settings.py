"""Settings of the approval service (`TIDEGATE_APPROVAL_*`)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ApprovalSettings"]


class ApprovalSettings(BaseSettings):
    """What only the approval service reads."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_APPROVAL_", extra="ignore", frozen=True)
