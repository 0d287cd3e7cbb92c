"""The control plane's events: what operators publish on `control`, and the approval service on `directory`.

Kill switches, policy packs, budgets, tenants, redrives, connector grants and revoked tokens on `control`; tenant
directories, webhook endpoints and the tokens the approval service revoked on `directory`. Every record is kept
forever and read from the beginning at start-up (`schemas.topics`). The events of one governed action, from a task to
its outcome, are `schemas.events`'s.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from schemas.common import Contract, JsonObject
from schemas.envelope import Envelope
from schemas.events import TENANT_ID

__all__ = [
    "ControlBudget",
    "ControlBudgetData",
    "ControlConnectorGrant",
    "ControlConnectorGrantData",
    "ControlKillswitch",
    "ControlKillswitchData",
    "ControlPolicy",
    "ControlPolicyData",
    "ControlRedrive",
    "ControlRedriveData",
    "ControlTenant",
    "ControlTenantData",
    "ControlTokenRevoked",
    "DirectoryEndpoint",
    "DirectoryEndpointData",
    "DirectoryTokenRevoked",
    "DirectoryUpdated",
    "DirectoryUpdatedData",
    "TenantDirectory",
    "TokenRevokedData",
]


# --- control (kept forever) ---------------------------------------------------------------------


class ControlKillswitchData(Contract):
    """Stops a tool, a tenant, or a tool for one tenant, at once, everywhere."""

    tenant_id: str = Field(default="*", description="Tenant, or `*` for all.")
    tool: str = Field(default="*", description="Tool, or `*` for all.")
    active: bool = Field(description="True sets the switch, false clears it.")
    reason: str = Field(default="", description="Why.")
    set_by: str = Field(description="Who.", examples=["oncall@acme.example"])


class ControlKillswitch(Envelope):
    """`tidegate.control.killswitch` on `control`; key `killswitch:<tenant>:<tool>`."""

    type: Literal["tidegate.control.killswitch"] = "tidegate.control.killswitch"
    data: ControlKillswitchData

    @property
    def key(self) -> bytes:
        """Compaction key: one live record per scope."""
        return f"killswitch:{self.data.tenant_id}:{self.data.tool}".encode()


class ControlPolicyData(Contract):
    """A policy set, published as a whole; the policy service switches to it without restart."""

    tenant_id: str = Field(default="*", description="Always `*` today: one policy set for all tenants.")
    version: str = Field(description="Hash of the policy set (sha256 over its files).")
    files: dict[str, str] = Field(description="File name → Cedar text.")
    settings: JsonObject = Field(default_factory=dict, description="Tenant thresholds and other pack settings (YAML of the pack).")
    published_by: str = Field(description="Who published.")


class ControlPolicy(Envelope):
    """`tidegate.control.policy` on `control`; key `policy`."""

    type: Literal["tidegate.control.policy"] = "tidegate.control.policy"
    data: ControlPolicyData

    @property
    def key(self) -> bytes:
        """Compaction key: only the newest policy set is kept."""
        return b"policy"


class ControlBudgetData(Contract):
    """A spend limit for a tenant (per task limits come with the task)."""

    tenant_id: str = TENANT_ID
    limit_usd: float = Field(ge=0, description="Tenant spend cap, USD.")
    set_by: str = Field(description="Who.")


class ControlBudget(Envelope):
    """`tidegate.control.budget` on `control`; key `budget:<tenant>`."""

    type: Literal["tidegate.control.budget"] = "tidegate.control.budget"
    data: ControlBudgetData

    @property
    def key(self) -> bytes:
        """Compaction key: one limit per tenant."""
        return f"budget:{self.data.tenant_id}".encode()


class ControlRedriveData(Contract):
    """An operator sent a dead letter's original record again (`tidegate dead-letters redrive`): who, what, where, why.

    Published (operator-signed) before the record is sent, so no redrive the CLI makes goes unrecorded; the services
    keep no state from it. The record sent is the original's bytes and headers, unchanged: it grants no authority.
    """

    tenant_id: str = Field(default="unknown", description="The dead letter's tenant (`unknown` when it could not be read).")
    task_id: str | None = Field(default=None, description="The dead letter's task, if it named one.")
    dead_letter_id: str = Field(description="Event id of the `event.rejected` redriven.")
    topic: str = Field(description="Topic of the original record, where it is sent again.")
    partition: int = Field(ge=0, description="Partition of the original record.")
    offset: int = Field(ge=0, description="Offset of the original record.")
    sha256: str = Field(description="SHA-256 (hex) of the original value sent again.")
    code: str = Field(description="The dead letter's reason code.", examples=["handler_error"])
    service: str = Field(description="The service that dead-lettered it.", examples=["policy"])
    reason: str = Field(description="Why the operator redrove it (the cause fixed).")
    set_by: str = Field(description="The operator whose key signed it.", examples=["oncall"])


class ControlRedrive(Envelope):
    """`tidegate.control.redrive` on `control`; key `redrive:<dead letter id>`."""

    type: Literal["tidegate.control.redrive"] = "tidegate.control.redrive"
    data: ControlRedriveData

    @property
    def key(self) -> bytes:
        """One sequence per dead letter redriven."""
        return f"redrive:{self.data.dead_letter_id}".encode()


class ControlConnectorGrantData(Contract):
    """The connector grant an operator signed last for (tenant, connector): the executor obeys that row and no other.

    `tidegate connectors` publishes it (operator-signed) with every grant it writes to `executor.connector_grants`.
    The row's signature proves an operator wrote it; this record, kept forever on `control` under a sequence that must
    grow per key, proves it is the newest: an older signed row put back in the table (before a disable, a tool taken
    off, a credential replaced) no longer matches and is refused `grant_rolled_back`.
    """

    tenant_id: str = Field(description="The tenant.")
    connector: str = Field(description="The connector.", examples=["zendesk"])
    grant_sha256: str = Field(
        description="SHA-256 (hex) of the grant's signed bytes (`connectors._proof.grant_digest`): what the row must hash to.",
        pattern="^[0-9a-f]{64}$",
    )
    set_by: str = Field(description="The operator whose key signed it.", examples=["oncall"])


class ControlConnectorGrant(Envelope):
    """`tidegate.control.connector_grant` on `control`; key `connector-grant:<tenant>:<connector>`."""

    type: Literal["tidegate.control.connector_grant"] = "tidegate.control.connector_grant"
    data: ControlConnectorGrantData

    @property
    def key(self) -> bytes:
        """One sequence per (tenant, connector): a pin can only be followed by a newer one."""
        return f"connector-grant:{self.data.tenant_id}:{self.data.connector}".encode()


# --- tenants and their directories (on `control` and `directory`) ---------------------------------------


class ControlTenantData(Contract):
    """A tenant onboarded (or changed): its mode, thresholds, directory, triggers and budget, without a new policy version.

    `settings` has the fields of the policy pack's tenant settings (`services/policy/tenant_settings.py`,
    `TenantSettings`), merged over the pack's `default` entry; `tidegate tenant add|set` checks them.
    """

    tenant_id: str = TENANT_ID
    settings: JsonObject = Field(
        description="Tenant settings: allow_autonomous, refund_threshold_usd, budget_usd, directory fields, triggers.",
        examples=[{"allow_autonomous": True, "refund_threshold_usd": 500, "internal_domains": ["acme.example"]}],
    )
    set_by: str = Field(description="Who.", examples=["admin@acme.example"])


class ControlTenant(Envelope):
    """`tidegate.control.tenant` on `control`; key `tenant:<tenant>`."""

    type: Literal["tidegate.control.tenant"] = "tidegate.control.tenant"
    data: ControlTenantData

    @property
    def key(self) -> bytes:
        """Compaction key: one live record per tenant."""
        return f"tenant:{self.data.tenant_id}".encode()


class TenantDirectory(Contract):
    """What a tenant's admins say is the tenant's own or already trusted: merged into its settings by the policy service.

    Unknown fields are refused, not ignored (unlike the rest of the contract): a record that tries to
    carry anything else (a mode, a threshold) is invalid as a whole.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)

    internal_domains: list[str] = Field(
        default_factory=list, max_length=10_000, description="Email domains of the tenant.", examples=[["acme.example"]]
    )
    known_contacts: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Outside email addresses the tenant writes to routinely.",
        examples=[["ap@supplier.example"]],
    )
    chat_members: list[str] = Field(default_factory=list, max_length=10_000, description="Chat users of the tenant's workspace.")
    chat_channels: list[str] = Field(default_factory=list, max_length=10_000, description="Chat channels of the tenant's workspace.")
    known_payees: list[str] = Field(default_factory=list, max_length=10_000, description="Payees the tenant already pays.")
    allowed_sites: list[str] = Field(default_factory=list, max_length=10_000, description="Web domains the tenant trusts.")
    organisations: list[str] = Field(default_factory=list, max_length=10_000, description="Organisations that are the tenant itself.")


class DirectoryUpdatedData(Contract):
    """A tenant's directory as its admins maintain it (over the approval service's HTTP API), whole.

    Signed by the approval service (or an operator): it can say who is internal and nothing else.
    Mode, thresholds, triggers and budgets live in operator-signed `control.tenant` records; the
    policy service uses the union of both records' directory entries.
    """

    tenant_id: str = TENANT_ID
    directory: TenantDirectory = Field(description="Every entry the tenant's admins maintain; replaces the previous record.")
    set_by: str = Field(description="The admin (approver id) or operator who changed it.", examples=["root@acme.example"])
    onboards: bool = Field(
        default=False,
        description="An operator-wide admin onboarded the tenant with this record: it then runs on the policy pack's default "
        "settings until an operator's `control.tenant` record says more.",
    )


class DirectoryUpdated(Envelope):
    """`tidegate.directory.updated` on `directory`; key `directory:<tenant>`."""

    type: Literal["tidegate.directory.updated"] = "tidegate.directory.updated"
    data: DirectoryUpdatedData

    @property
    def key(self) -> bytes:
        """Compaction key: one live record per tenant."""
        return f"directory:{self.data.tenant_id}".encode()


class DirectoryEndpointData(Contract):
    """The webhook endpoint row signed last for (tenant, endpoint): the approval service trusts that row and no other.

    The approval service (its API, its endpoints file) publishes it, signed with its own key, before every change it
    writes to `approval.webhook_endpoints`. The row's signature proves who wrote it; this record, kept forever on
    `directory` under a sequence that must grow per key, proves it is the newest: an older signed row put back in the
    table (its earlier URL, approvers, a secret replaced after a leak, enabled after an admin removed it) no longer
    matches and is refused `rolled_back`.
    """

    tenant_id: str = TENANT_ID
    endpoint_id: str = Field(description="The endpoint, in its tenant's space.", examples=["chat"])
    row_sha256: str = Field(
        description="SHA-256 (hex) of the row's signed bytes (`services.approval._endpoint_rows.EndpointRows.digest`): what "
        "the row must hash to.",
        pattern="^[0-9a-f]{64}$",
    )
    set_by: str = Field(
        description="Whose change it is: `approval` (the service, for its API and endpoints file), or an operator.", examples=["approval"]
    )


class DirectoryEndpoint(Envelope):
    """`tidegate.directory.endpoint` on `directory`; key `endpoint:<tenant>:<endpoint>`."""

    type: Literal["tidegate.directory.endpoint"] = "tidegate.directory.endpoint"
    data: DirectoryEndpointData

    @property
    def key(self) -> bytes:
        """One sequence per endpoint: a pin can only be followed by a newer one."""
        return f"endpoint:{self.data.tenant_id}:{self.data.endpoint_id}".encode()


class TokenRevokedData(Contract):
    """An approver token revoked: for good, whatever its row in `approval.approver_tokens` says.

    Published before the row's `revoked_at` is set (which no signature covers): by the approval service on `directory`
    (an admin's revocation, a holder's rotation over its API), by an operator's CLI on `control` (`tidegate approvals
    token revoke|rotate`). A row whose `revoked_at` was cleared again, or put back as it was before, is refused
    `rolled_back`.
    """

    tenant_id: str = Field(description="The token's tenant (`*`: an operator token).", examples=["acme"])
    token_id: str = Field(description="The token revoked (its id, never the token).", examples=["tok_3f9a0c1d2e4b"])
    set_by: str = Field(description="Who revoked it: the operator, or `approval` (the service, for its API).", examples=["oncall"])


class DirectoryTokenRevoked(Envelope):
    """`tidegate.directory.token_revoked` on `directory` (the approval service's); key `token:<token id>`."""

    type: Literal["tidegate.directory.token_revoked"] = "tidegate.directory.token_revoked"
    data: TokenRevokedData

    @property
    def key(self) -> bytes:
        """One sequence per token."""
        return f"token:{self.data.token_id}".encode()


class ControlTokenRevoked(Envelope):
    """`tidegate.control.token_revoked` on `control` (an operator's); key `token-revoked:<token id>`."""

    type: Literal["tidegate.control.token_revoked"] = "tidegate.control.token_revoked"
    data: TokenRevokedData

    @property
    def key(self) -> bytes:
        """One sequence per token (another than the service's record of it on `directory`)."""
        return f"token-revoked:{self.data.token_id}".encode()
