"""Typed settings shared by every service, read from `TIDEGATE_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["REPO_ROOT", "KitSettings"]

REPO_ROOT = Path(__file__).resolve().parent.parent


class KitSettings(BaseSettings):
    """Where the bus, the database, the keys and the catalogs are; one prefix, `TIDEGATE_`."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field(default="127.0.0.1:19092", description="Kafka bootstrap servers.")
    database_url: str = Field(
        default="postgresql://tidegate:tidegate@127.0.0.1:55432/tidegate", description="PostgreSQL DSN of the services' role."
    )
    topic_prefix: str = Field(default="tidegate.", description="Prefix of every topic (a replay or sandbox runs under another).")
    keys_dir: Path = Field(
        default=None,  # type: ignore[assignment]  # filled from run_dir below
        description="Ed25519 keys, generated on first run, never committed: `<keys_dir>/<service>/` holds a service's private key "
        "alone, `<keys_dir>/*.pub` the public keys. Default `<run_dir>/keys`.",
    )
    operator_keys_dir: Path = Field(
        default=None,  # type: ignore[assignment]
        description="Allow-list of operator public keys (`<name>.pub`) whose `control` records are obeyed. Default `<keys_dir>/operators`.",
    )
    client_keys_dir: Path = Field(
        default=None,  # type: ignore[assignment]
        description="Registered client keys, `<tenant>/<principal>.pub`: who may submit tasks and proposals. Default `<keys_dir>/clients`.",
    )
    operator: str = Field(
        default="operator", pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Name of the operator key the CLI signs `control` records with."
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
    run_dir: Path = Field(default=REPO_ROOT / ".tidegate", description="Logs and pid files of `tidegate up --detach`, and the keys.")

    @model_validator(mode="before")
    @classmethod
    def _key_dirs_default_to_the_run_dir(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        run_dir = Path(data.get("run_dir") or REPO_ROOT / ".tidegate")
        keys_dir = Path(data.get("keys_dir") or run_dir / "keys")
        data["keys_dir"] = keys_dir
        data["operator_keys_dir"] = data.get("operator_keys_dir") or keys_dir / "operators"
        data["client_keys_dir"] = data.get("client_keys_dir") or keys_dir / "clients"
        return data
