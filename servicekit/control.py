"""What every service knows from `control` (kill switches, policy, budgets, tenants, current connector grants) and `directory`.

Both name approver tokens revoked (an operator's on `control`, the approval service's on `directory`); `directory` also
names the current row of each approval webhook endpoint.

Records are operator-signed (the bus checked the signature against the operator allow-list before
this sees them); each carries a `sequence` (the signing time in nanoseconds) that must grow per
scope, the record's Kafka key, whoever signed it. A replayed or older copy is refused. Both topics
keep every record forever (delete policy, infinite retention, never compacted): compaction would keep
the last record per key by offset, so a replayed old record would delete the newer genuine one and
win after a restart. Kept whole, re-reading from the start applies the genuine records in order and
refuses the replay again. Operators' clocks must therefore agree (NTP); a record signed on a clock
behind the last one of its scope is refused as `control_replayed` and can be signed again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from schemas import (
    ControlBudget,
    ControlConnectorGrant,
    ControlKillswitch,
    ControlPolicy,
    ControlPolicyData,
    ControlTenant,
    ControlTenantData,
    ControlTokenRevoked,
    DirectoryEndpoint,
    DirectoryTokenRevoked,
    DirectoryUpdated,
    DirectoryUpdatedData,
    ReasonCode,
)
from servicekit.bus import Reject

__all__ = ["ControlState"]


@dataclass
class ControlState:
    """Latest control records by key; applied in topic order, so the newest record wins."""

    killswitches: dict[tuple[str, str], ControlKillswitch] = field(default_factory=dict)
    policy: ControlPolicyData | None = None
    budgets: dict[str, float] = field(default_factory=dict)
    tenants: dict[str, ControlTenantData] = field(default_factory=dict)
    directories: dict[str, DirectoryUpdatedData] = field(default_factory=dict)  # from `directory`, approval- or operator-signed
    grants: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, connector) -> SHA-256 of the grant signed last
    # (tenant, endpoint) -> (sequence, SHA-256 of the webhook endpoint row signed last), from `directory`
    endpoints: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    revoked_tokens: dict[str, str] = field(default_factory=dict)  # approver token id -> its tenant (`directory`, `control`)
    applied: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    sequences: dict[bytes | None, int] = field(default_factory=dict)

    async def apply(self, event: Any) -> None:
        """Handler for `control` and `directory` events; raises `Reject` for an unsigned, replayed or older record."""
        if not event.keyid or not event.signature:
            raise Reject(ReasonCode.SIGNATURE_MISSING, f"{event.type} is not signed")
        scope = event.key
        last = self.sequences.get(scope)
        if event.sequence is None or (last is not None and event.sequence <= last):
            raise Reject(ReasonCode.CONTROL_REPLAYED, f"{event.type} sequence {event.sequence} is not after {last} for {scope!r}")
        self.sequences[scope] = event.sequence
        if isinstance(event, ControlKillswitch):
            scope = (event.data.tenant_id, event.data.tool)
            if event.data.active:
                self.killswitches[scope] = event
            else:
                self.killswitches.pop(scope, None)
        elif isinstance(event, ControlPolicy):
            self.policy = event.data
        elif isinstance(event, ControlBudget):
            self.budgets[event.data.tenant_id] = event.data.limit_usd
        elif isinstance(event, ControlTenant):
            self.tenants[event.data.tenant_id] = event.data
        elif isinstance(event, ControlConnectorGrant):
            self.grants[(event.data.tenant_id, event.data.connector)] = event.data.grant_sha256
        elif isinstance(event, DirectoryUpdated):
            self.directories[event.data.tenant_id] = event.data
        elif isinstance(event, DirectoryEndpoint):
            self.pin_endpoint(event.data.tenant_id, event.data.endpoint_id, event.sequence, event.data.row_sha256)
        elif isinstance(event, (DirectoryTokenRevoked, ControlTokenRevoked)):
            self.revoked_tokens[event.data.token_id] = event.data.tenant_id
        self.applied += 1
        self.changed.set()

    def pin_endpoint(self, tenant_id: str, endpoint_id: str, sequence: int, row_sha256: str) -> None:
        """Name `row_sha256` the endpoint's current row, unless a newer pin (a greater `sequence`) is known already.

        `apply` calls it for each record read; the approval service for each record it publishes, at once (read your own
        write): its next read of the row must not wait for the record to come back from the topic.
        """
        key = (tenant_id, endpoint_id)
        if key not in self.endpoints or self.endpoints[key][0] < sequence:
            self.endpoints[key] = (sequence, row_sha256)

    def killed(self, tenant_id: str, tool: str) -> ControlKillswitch | None:
        """The switch that stops `tool` for `tenant_id`, if any (exact, tool-wide, tenant-wide or global)."""
        for scope in ((tenant_id, tool), ("*", tool), (tenant_id, "*"), ("*", "*")):
            if scope in self.killswitches:
                return self.killswitches[scope]
        return None
