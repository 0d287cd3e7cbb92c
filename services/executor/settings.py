"""Settings of the executor service (`TIDEGATE_EXECUTOR_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_MAX_RESULT_BYTES", "ExecutorSettings"]

DEFAULT_MAX_RESULT_BYTES = 256 * 1024


class ExecutorSettings(BaseSettings):
    """What only the executor service reads."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_EXECUTOR_", extra="ignore", frozen=True)

    credentials_file: Path | None = Field(
        default=None,
        description="YAML `{tenant: {credential_scope: secret}}` for http tools; "
        "`TIDEGATE_CREDENTIAL_<TENANT>__<SCOPE>` variables override it.",
    )
    connector_keys_dir: Path | None = Field(
        default=None,
        description="Keys directory of the connector-credential key pair (X25519, made on first start): "
        "the private key in its `executor/` folder, the public key at the top; the kit keys_dir by default.",
    )
    require_pinned_grants: bool = Field(
        default=False,
        description="Refuse (`grant_unpinned`) a connector grant that no operator's `tidegate.control.connector_grant` record "
        "names as current. Off by default so that grants written before records were published keep working after an upgrade "
        "(each obeyed with a warning); turn it on once `tidegate connectors pin --all` has named them all.",
    )
    policy_key_name: str = Field(default="policy", description="Name of the policy service's public keys trusted to sign authorizations.")
    concurrency: int = Field(default=8, ge=1, le=256, description="Authorized calls of different tasks in flight at once in one process.")
    http_max_connections: int = Field(default=50, ge=1, description="Connection pool size of the HTTP tool client.")
    tools_database_role: str | None = Field(
        default="systems",
        description="PostgreSQL role the in-process tools (the demo's systems of record) log in as, on a pool of their own; "
        "empty: no database for them. Their schemas are installed by `tidegate db migrate`, not by the executor.",
    )
    max_result_bytes: int = Field(
        default=DEFAULT_MAX_RESULT_BYTES,
        ge=64 * 1024,
        le=768 * 1024,
        description="Largest result event (signed, in bytes) that carries a tool's whole result; a larger result is kept whole in "
        "`executor.actions` and the event carries a stand-in (size, SHA-256, preview). At most 768 KiB: headroom below the "
        "1 MiB that the broker and consumers take (`TIDEGATE_MAX_VALUE_BYTES`).",
    )
