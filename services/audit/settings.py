"""Settings of the audit service (`TIDEGATE_AUDIT_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AuditSettings"]


class AuditSettings(BaseSettings):
    """What only the audit service reads."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_AUDIT_", extra="ignore", frozen=True)

    batch_max_records: int = Field(default=5000, ge=1, description="Most records written in one transaction (one COPY).")
    batch_timeout_ms: int = Field(
        default=100, ge=0, description="How long a batch that is not full waits, once, for more records before it is written."
    )
    max_partition_fetch_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Kafka fetch size per partition.")
    fetch_min_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="The broker holds a fetch until this much is there (or `fetch_max_wait_ms` passed): fewer, larger fetches"
        " and transactions instead of one per event or two at a light load.",
    )
    fetch_max_wait_ms: int = Field(
        default=500, ge=0, le=10_000, description="Longest the broker holds a fetch for `fetch_min_bytes` (Kafka's default)."
    )
    checkpoint_interval_s: float = Field(
        default=10.0, gt=0, description="How often the chain heads are checked (and signed if they moved)."
    )
    topic_discovery_ms: int = Field(default=10_000, ge=100, description="Metadata refresh: how soon a new topic is consumed.")
    key_name: str = Field(default="audit", description="Name of the Ed25519 key that signs checkpoints (in the kit's keys dir).")
