"""Settings of the executor service (`TIDEGATE_EXECUTOR_*`)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ExecutorSettings"]


class ExecutorSettings(BaseSettings):
    """What only the executor service reads."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_EXECUTOR_", extra="ignore", frozen=True)
