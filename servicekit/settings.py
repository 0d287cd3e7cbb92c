"""Typed settings shared by every service, read from `TIDEGATE_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from servicekit.intake import Bounds

__all__ = ["REPO_ROOT", "KitSettings"]

REPO_ROOT = Path(__file__).resolve().parent.parent


class KitSettings(BaseSettings):
    """Where the bus, the database, the keys and the catalogs are; one prefix, `TIDEGATE_`."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field(default="127.0.0.1:19092", description="Kafka bootstrap servers.")
    database_url: str = Field(
        default="postgresql://tidegate:tidegate@127.0.0.1:55432/tidegate",
        description="PostgreSQL DSN of the operator (migrator); services keep its host and database, with their own role.",
    )
    db_credentials_dir: Path = Field(
        default=REPO_ROOT / ".tidegate" / "db",
        description="Each service's PostgreSQL login (`<service>.json`, 0600), written by `tidegate db migrate`; never committed.",
    )
    topic_prefix: str = Field(default="tidegate.", description="Prefix of every topic (a replay or sandbox runs under another).")
    keys_dir: Path = Field(
        default=REPO_ROOT / ".tidegate" / "keys", description="Ed25519 key files, generated on first run; never committed."
    )
    tools_dir: Path = Field(default=REPO_ROOT / "catalog" / "tools", description="Tool catalog: one YAML file per tool.")
    policy_dir: Path = Field(
        default=REPO_ROOT / "policies" / "default", description="Policy pack loaded at start-up until one is published on `control`."
    )
    otlp_endpoint: str | None = Field(default=None, description="OTLP/HTTP traces endpoint; spans are exported when set.")
    metrics_port: int | None = Field(default=None, description="Port of the Prometheus endpoint; none when unset.")
    log_level: str = Field(default="INFO")
    db_pool_max: int = Field(default=10, ge=1)
    ready_dir: Path | None = Field(
        default=None, description="When set, a started service touches `<ready_dir>/<service>.ready` (used by `tidegate up`)."
    )
    max_value_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest record value a consumer parses; a larger one is dead-lettered `too_large`."
    )
    max_json_depth: int = Field(
        default=64, ge=4, description="Deepest JSON nesting a consumer parses (checked on the bytes first); deeper is `too_deep`."
    )
    stall_after_s: float = Field(
        default=120.0, gt=0, description="Liveness: records waiting and none handled for this long means the service is stalled."
    )
    handler_limit_s: float = Field(
        default=300.0, gt=0, description="Liveness: one record (or batch) in handling, retries included, for longer than this is stalled."
    )
    run_dir: Path = Field(default=REPO_ROOT / ".tidegate", description="Logs and pid files of `tidegate up --detach`.")

    @property
    def bounds(self) -> Bounds:
        """The bounds every consumer checks a record's value against before parsing it."""
        return Bounds(max_bytes=self.max_value_bytes, max_depth=self.max_json_depth)

    def service_database_url(self, service: str) -> str:
        """The DSN `service` logs in with: its own role (`<db_credentials_dir>/<service>.json`) on `database_url`'s database."""
        from servicekit.dbroles import service_database_url  # the roles module builds on these settings

        return service_database_url(self, service)
