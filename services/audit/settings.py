"""Settings of the audit service (`TIDEGATE_AUDIT_*`)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AuditSettings"]


class AuditSettings(BaseSettings):
    """What only the audit service reads."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_AUDIT_", extra="ignore", frozen=True)
