"""Where an outside agent's client connects, as whom, and with which key: read from `TIDEGATE_CLIENT_*`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import proposer_problem

__all__ = ["ClientSettings"]

_CHECKOUT = Path(__file__).resolve().parents[2]
# Where `tidegate up` keeps its keys and state (`<checkout>/.tidegate`, as the services' TIDEGATE_RUN_DIR): the client run
# from a Tidegate checkout finds them from any working directory; installed elsewhere (the package alone), the working
# directory's `.tidegate`. The client imports no servicekit (it installs without it), hence its own look at the checkout.
# A checkout has its `pyproject.toml` beside `servicekit`: `pip install` puts `servicekit` beside the client in
# site-packages too, which is no checkout (its keys, ledgers and token were looked for and kept in site-packages).
RUN_DIR = (_CHECKOUT if (_CHECKOUT / "servicekit").is_dir() and (_CHECKOUT / "pyproject.toml").is_file() else Path()) / ".tidegate"


def _deployment_folders() -> dict[str, Path]:
    """The deployment's own folders where its shell sets them.

    `TIDEGATE_KEYS_DIR`, else `TIDEGATE_RUN_DIR`/keys, and `TIDEGATE_RUN_DIR`/client. A checkout of a new release
    pointed at a running deployment's state (docs/operations.md, "Upgrading", step 2) is run with those exported: the
    client, the governed tools and the MCP gateway then keep that deployment's public keys, ledgers and token, not the
    new checkout's empty `.tidegate`.
    """
    folders: dict[str, Path] = {}
    run_dir = os.environ.get("TIDEGATE_RUN_DIR", "").strip()
    keys_dir = os.environ.get("TIDEGATE_KEYS_DIR", "").strip()
    if keys_dir or run_dir:
        folders["service_keys_dir"] = Path(keys_dir) if keys_dir else Path(run_dir) / "keys"
    if run_dir:
        folders["state_dir"] = Path(run_dir) / "client"
    return folders


class ClientSettings(BaseSettings):
    """The client's connection, credentials and identity; the one seam the bus's authentication plugs into."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_CLIENT_", extra="ignore", frozen=True, validate_by_name=True)

    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092",
        # The deployment's own setting next: a client run beside `tidegate up` (same shell, same env file) goes to that broker,
        # never silently to another deployment's on the default port.
        validation_alias=AliasChoices("TIDEGATE_CLIENT_KAFKA_BOOTSTRAP", "TIDEGATE_KAFKA_BOOTSTRAP"),
        description="Kafka bootstrap servers. Unset: the deployment's `TIDEGATE_KAFKA_BOOTSTRAP` when that is set, else the default.",
    )
    topic_prefix: str = Field(default="tidegate.", description="Prefix of every topic of the deployment.")
    tenant: str = Field(default="acme", min_length=1, description="Tenant the client proposes for.")
    principal: str = Field(
        default="agent@localhost", min_length=1, description="Who the client acts for: `requested_by` of what it proposes."
    )
    proposer: str = Field(default="external:client", min_length=1, description="The agent's name, recorded as `proposer`.")
    mode: Literal["draft", "autonomous"] = Field(default="autonomous", description="Task mode asked for (a tenant may force draft).")
    sasl_username: str | None = Field(default=None, description="SASL/SCRAM user of the `agent` principal; plaintext when unset.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL/SCRAM password.")
    sasl_mechanism: str = Field(
        default="SCRAM-SHA-512",
        description="SASL mechanism: the `sasl.mechanism` of the login's properties file (`tidegate infra rotate-login` moves a "
        "login between SCRAM-SHA-512 and SCRAM-SHA-256).",
    )
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        default=None, description="Kafka security protocol; defaults to SASL_PLAINTEXT when a SASL user is set."
    )
    signing_key_path: Path | None = Field(
        default=None,
        description="The client's Ed25519 private key (PEM), registered for the tenant and `principal` (`tidegate clients add`); "
        "events are sent unsigned when unset, and a deployment that verifies signatures refuses them.",
    )
    tool_keys_dir: Path | None = Field(
        default=None,
        description="Where governed tools' private keys are (`<tool>/<tool>.key` or `<tool>.key`): their replies are signed with them "
        "(the catalog's `reply_key_file` names the public half).",
    )
    service_keys_dir: Path = Field(
        default=RUN_DIR / "keys",
        description="The deployment's public keys (`policy.pub`, `approval.pub`, `executor.pub`: its `TIDEGATE_KEYS_DIR`): the client "
        "believes only answers its services signed, and a governed function runs only on an authorization the policy key signed. "
        "Default: the deployment's `TIDEGATE_KEYS_DIR` when set, else `<TIDEGATE_RUN_DIR>/keys` when that is set, else the "
        "checkout's `.tidegate/keys` (the services' default) when the client runs from one, else `.tidegate/keys`.",
    )
    retired_key_grace_s: float = Field(
        default=600.0,
        ge=0,
        description="Seconds a service key retired by `tidegate keys rotate` is still believed (as the services' "
        "`TIDEGATE_RETIRED_KEY_GRACE_S`); after that nothing it signs is.",
    )
    state_dir: Path = Field(
        default=RUN_DIR / "client",
        description="Where governed tools record the calls they ran (SQLite, one file per tool), and where the MCP gateway "
        "keeps the proposals it made (`mcp-gateway.<topic prefix>sqlite3`, one file per deployment; beside it, a lock file per running "
        "gateway in `mcp-gateway.<topic prefix>holders`), and the gateway's HTTP token made on first run (`mcp-gateway.token`). "
        "Default: `<TIDEGATE_RUN_DIR>/client` when the deployment's `TIDEGATE_RUN_DIR` is set, else the checkout's "
        "`.tidegate/client` when the client runs from one, else `.tidegate/client`.",
    )
    decision_timeout_s: float = Field(default=30.0, gt=0, description="How long to wait for the policy's decision.")
    result_timeout_s: float = Field(
        default=180.0,
        gt=0,
        description="Once a call is seen allowed, how long to wait for its result. The executor answers a tool call only after "
        "the tool's `timeout_s` × `retry.max_attempts` plus the backoff between attempts (the example catalog's 10 s × 3: ~31 s) "
        "and, on a busy executor, after the calls ahead of it: set it above the longest of the tools the agent calls.",
    )
    max_proposal_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="The deployment's `TIDEGATE_MAX_VALUE_BYTES`: a proposal larger than this (its record as sent, signature "
        "included) is refused before it is sent, as the policy would dead-letter it `too_large`. Set it when the deployment's differs.",
    )
    max_json_depth: int = Field(
        default=64,
        ge=4,
        description="The deployment's `TIDEGATE_MAX_JSON_DEPTH`: args nested deeper than this less 2 (the proposal's envelope and "
        "`data` hold them) are refused before they are sent, as the policy would dead-letter them `too_deep`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _the_deployments_folders(cls, data: Any) -> Any:
        # As `kafka_bootstrap` takes TIDEGATE_KAFKA_BOOTSTRAP: a folder the client's own setting (or the caller) leaves
        # unset follows the deployment's. Not a default_factory: the settings reference shows the default, not this shell's.
        if isinstance(data, dict):
            return {**_deployment_folders(), **data}
        return data

    @field_validator("service_keys_dir", "state_dir", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():  # Path("") is the working directory: never what an empty setting meant
            raise ValueError("is empty: give a directory, or unset it for the default")
        return value

    @field_validator("proposer")
    @classmethod
    def _not_a_service(cls, value: str) -> str:
        if (problem := proposer_problem(value)) is not None:  # the deployment refuses it (`signer_not_allowed`): said before any proposal
            raise ValueError(f"{problem}; name your agent otherwise")
        return value

    def kafka_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients: bootstrap and, when configured, SASL."""
        options: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap}
        protocol = self.security_protocol or ("SASL_PLAINTEXT" if self.sasl_username else "PLAINTEXT")
        options["security_protocol"] = protocol
        if self.sasl_username:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else ""
        return options
