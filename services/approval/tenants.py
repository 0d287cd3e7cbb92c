"""Tenant admins keep their tenant's directory here; an operator-wide admin onboards tenants.

Who may do what (checked in this order, before anything about a tenant is revealed): an API token
(not a one-time link) in group `admin` acts on its own tenant only, and another tenant answers
exactly as a missing one (404); an operator token acts on every tenant and alone onboards one.
What they change is a `directory.updated` record that this service signs with its own key: it can
say who is internal (domains, contacts, chat members and channels, payees, sites, organisations) and
nothing else. Mode, thresholds, triggers and budgets stay in operator-signed `control.tenant` records
(`tidegate tenant set`); `servicekit.authority` lets the approval key sign directory records only.

Learning: when the operator's record sets `learn_after_approvals: N`, a counterparty that humans
approved unchanged in N requests (not edited, granted) and that the directory does not hold yet is
*proposed*, never added: `proposals` lists it, and an admin adds it with one call.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from schemas import DirectoryUpdated, DirectoryUpdatedData, TenantDirectory
from servicekit import ControlState, SigningKey, ToolCatalog, next_sequence, sign_event
from servicekit.identities import identities_of
from services.approval.domain import Approver, Refusal
from services.approval.repository import ApprovalRepository

__all__ = ["ADMIN_GROUP", "DIRECTORY_LISTS", "Proposal", "TenantDirectories", "normalised", "proposals"]

ADMIN_GROUP = "admin"
# Counterparty kind → the directory list that makes it the tenant's own (paths are judged by the pack's sensitive paths).
DIRECTORY_LISTS = {
    "email": "known_contacts",
    "chat_user": "chat_members",
    "chat_channel": "chat_channels",
    "url": "allowed_sites",
    "payee": "known_payees",
    "organisation": "organisations",
    "repository": "organisations",  # a repository's owner
}
LEARNING_WINDOW = 500  # granted requests looked at, newest first
APPLIED_WITHIN_S = 10.0  # how long a change waits to see itself come back from the `directory` topic


@dataclass(frozen=True)
class Proposal:
    """A counterparty humans approved unchanged often enough to be offered for the directory."""

    list: str
    value: str
    approvals: int
    approval_ids: tuple[str, ...]


def _refuse(code: str, status: int, message: str) -> Refusal:
    return Refusal(code=code, status=status, message=message)


def _listed(kind: str, value: str, directory: dict[str, list[str]]) -> bool:
    """Whether the directory already holds `value` (an email also by its domain, a site also by a parent domain)."""
    entries = {e.strip().lower() for e in directory.get(DIRECTORY_LISTS[kind], [])}
    if value.lower() in entries:
        return True
    hosts = [d.strip(".").lower() for d in directory.get("internal_domains", [])]
    if kind == "email" and "@" in value:
        domain = value.rsplit("@", 1)[1]
        return any(domain == d or domain.endswith("." + d) for d in hosts)
    if kind == "url":
        return any(value == d or value.endswith("." + d) for d in hosts + sorted(entries))
    return False


def proposals(records: Iterable[Any], catalog: ToolCatalog, directory: dict[str, list[str]], after: int) -> list[Proposal]:
    """Counterparties named by at least `after` granted, unedited approval requests and not in `directory` yet (none when `after` < 1)."""
    if after < 1:
        return []
    seen: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], list[str]] = {}
    for record in records:
        spec = catalog.get(record.tool)
        if record.kind != "approval" or record.status != "granted" or record.edited_args is not None or spec is None:
            continue
        for identity in identities_of(record.args, spec.facts.declared_counterparties()):
            if identity.kind not in DIRECTORY_LISTS or _listed(identity.kind, identity.value, directory):
                continue
            key = (DIRECTORY_LISTS[identity.kind], identity.value)
            if record.approval_id not in where.setdefault(key, []):
                seen[key] += 1
                where[key].append(record.approval_id)
    return [Proposal(lst, value, n, tuple(where[(lst, value)])) for (lst, value), n in sorted(seen.items()) if n >= after]


@dataclass
class TenantDirectories:
    """The tenant API's use cases over the service's control state, its signing key and its bus."""

    control: ControlState
    key: SigningKey
    publish: Any  # `Publisher.publish`: (topic, event) -> awaitable
    repo: ApprovalRepository
    catalog: ToolCatalog | None

    def onboarded(self, tenant_id: str) -> bool:
        """Whether an operator's record or an onboarding directory record names the tenant."""
        return tenant_id in self.control.tenants or tenant_id in self.control.directories

    def role(self, who: Approver, *, link: bool) -> Refusal | None:
        """An API token in group `admin`, or an operator token; never a one-time link."""
        if link or not (who.operator or ADMIN_GROUP in who.groups):
            return _refuse("not_admin", 403, f"a tenant's directory needs a token in group {ADMIN_GROUP!r} (or an operator token)")
        return None

    def access(self, who: Approver, tenant_id: str | None, *, link: bool, onboarding: bool = False) -> Refusal | None:
        """Role first (an admin token; an operator to onboard), then the tenant: another's, or an unknown one, is `not_found` alike."""
        if (refusal := self.role(who, link=link)) is not None:
            return refusal
        if onboarding:
            return None if who.operator else _refuse("not_operator", 403, "only an operator-wide admin onboards tenants")
        if tenant_id is None or not (who.operator or who.tenant_id == tenant_id) or not self.onboarded(tenant_id):
            return _refuse("not_found", 404, f"no tenant {tenant_id}")
        return None

    def directory(self, tenant_id: str) -> dict[str, list[str]]:
        """The entries the tenant's admins keep (not the operator's)."""
        record = self.control.directories.get(tenant_id)
        return (record.directory if record is not None else TenantDirectory()).model_dump()

    def effective(self, tenant_id: str) -> dict[str, list[str]]:
        """Every directory entry the policy service uses for the tenant: the operator's record's and the admins'."""
        record = self.control.tenants.get(tenant_id)
        merged = self.directory(tenant_id)
        for name in merged:
            extra = (record.settings.get(name) if record is not None else None) or []
            merged[name] = list(dict.fromkeys([*extra, *merged[name]]))
        return merged

    async def view(self, tenant_id: str) -> dict[str, Any]:
        """What a tenant's admin may read: the operator's settings, the admins' directory, and the proposals."""
        record, admins = self.control.tenants.get(tenant_id), self.control.directories.get(tenant_id)
        return {
            "tenant_id": tenant_id,
            "settings": dict(record.settings) if record is not None else None,
            "settings_set_by": record.set_by if record is not None else None,
            "directory": self.directory(tenant_id),
            "directory_set_by": admins.set_by if admins is not None else None,
            "effective_directory": self.effective(tenant_id),
            "proposals": [p.__dict__ for p in await self.proposals(tenant_id)],
        }

    async def proposals(self, tenant_id: str) -> list[Proposal]:
        """Counterparties to offer the tenant's admins, when its operator's record turned learning on."""
        record = self.control.tenants.get(tenant_id)
        after = int((record.settings.get("learn_after_approvals") if record is not None else 0) or 0)
        if after < 1 or self.catalog is None:
            return []
        granted = await self.repo.search(tenant_id=tenant_id, status="granted", limit=LEARNING_WINDOW)
        return proposals(granted, self.catalog, self.effective(tenant_id), after)

    async def publish_directory(
        self, tenant_id: str, directory: TenantDirectory, who: Approver, *, onboards: bool = False
    ) -> DirectoryUpdated:
        """Sign (this service's key, a fresh sequence) and publish the tenant's whole directory."""
        data = DirectoryUpdatedData(tenant_id=tenant_id, directory=directory, set_by=who.approver, onboards=onboards)
        event = sign_event(DirectoryUpdated.build(data, source="tidegate/approval"), self.key, sequence=next_sequence())
        await self.publish("directory", event)
        # Read your own write: the next change builds on this one only once it came back from the topic.
        deadline = asyncio.get_running_loop().time() + APPLIED_WITHIN_S
        while (self.control.sequences.get(event.key) or 0) < (event.sequence or 0):
            if asyncio.get_running_loop().time() > deadline:
                break  # published all the same; the policy service applies it when it reads the topic
            await asyncio.sleep(0.02)
        return event

    def changed(self, tenant_id: str, add: TenantDirectory, remove: TenantDirectory) -> TenantDirectory:
        """The admins' directory with `add` added and `remove` taken out (order kept, no duplicates)."""
        current, plus, minus = self.directory(tenant_id), normalised(add).model_dump(), normalised(remove).model_dump()
        return TenantDirectory.model_validate(
            {name: [e for e in dict.fromkeys([*entries, *plus[name]]) if e not in set(minus[name])] for name, entries in current.items()}
        )


def normalised(directory: TenantDirectory) -> TenantDirectory:
    """Entries as the policy service compares them: trimmed, lower-case (payees, whose ids are case-sensitive, only trimmed)."""
    return TenantDirectory.model_validate(
        {
            name: list(dict.fromkeys(e.strip() if name == "known_payees" else e.strip().lower() for e in entries if e.strip()))
            for name, entries in directory.model_dump().items()
        }
    )
