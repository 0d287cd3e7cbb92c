"""Settings of the planner service (`TIDEGATE_PLANNER_*`)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PlannerSettings"]


class PlannerSettings(BaseSettings):
    """What only the planner service reads."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_PLANNER_", extra="ignore", frozen=True)
