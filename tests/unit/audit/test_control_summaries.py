"""`audit search`'s one line says what a control record did and where a dead letter came from: who flipped what, from the audit alone."""

from __future__ import annotations

from typing import Any

import schemas as s
from services.audit.reading import summarize
from services.audit.repository import InMemoryAuditLog, SearchFilters

SRC = "tidegate/cli"


async def _line(make: Any, topic: str, event: Any) -> str:
    """The summary of `event` as `audit search` shows it: recorded, read back, summarised from its row."""
    log = InMemoryAuditLog()
    await log.append([make(topic, s.encode(event), offset=7, key=event.key)])
    [row] = await log.search(SearchFilters())
    return summarize(row)


async def test_a_kill_switch_says_tool_tenant_on_or_off_reason_and_who(make: Any) -> None:
    on = s.ControlKillswitch.build(
        s.ControlKillswitchData(tenant_id="acme", tool="draft_reply", active=True, reason="incident 42", set_by="oncall"), source=SRC
    )
    off = s.ControlKillswitch.build(s.ControlKillswitchData(tenant_id="*", tool="issue_refund", active=False, set_by="sue"), source=SRC)
    assert await _line(make, "control", on) == "kill switch SET on tool=draft_reply tenant=acme by oncall: incident 42"
    assert await _line(make, "control", off) == "kill switch cleared on tool=issue_refund tenant=* by sue"


async def test_a_budget_says_tenant_limit_as_set_and_who(make: Any) -> None:
    budget = s.ControlBudget.build(s.ControlBudgetData(tenant_id="acme", limit_usd=0.019, set_by="finance"), source=SRC)
    assert await _line(make, "control", budget) == "budget of tenant acme set to 0.019 USD by finance"


async def test_tenant_policy_and_directory_records_say_their_essentials(make: Any) -> None:
    tenant = s.ControlTenant.build(
        s.ControlTenantData(tenant_id="globex", settings={"allow_autonomous": False, "budget_usd": 20}, set_by="ops"), source=SRC
    )
    policy = s.ControlPolicy.build(
        s.ControlPolicyData(version="sha256:" + "ab" * 32, files={"a.cedar": "", "b.cedar": ""}, published_by="security"), source=SRC
    )
    directory = s.DirectoryUpdated.build(
        s.DirectoryUpdatedData(
            tenant_id="acme", directory=s.TenantDirectory(internal_domains=["acme.example"], known_payees=["p1", "p2"]), set_by="root"
        ),
        source=SRC,
    )
    said = 'tenant globex onboarded or changed by ops: {"allow_autonomous": false, "budget_usd": 20}'
    assert await _line(make, "control", tenant) == said
    assert await _line(make, "control", policy) == f"policy sha256:{'ab' * 6} published by security (2 file(s))"
    assert await _line(make, "directory", directory) == "directory of tenant acme replaced by root (internal_domains 1, known_payees 2)"


async def test_a_dead_letter_names_the_original_topic_partition_and_offset(make: Any) -> None:
    dead = s.EventRejected.build(
        s.EventRejectedData(
            service="policy", code="invalid_event", error="not JSON", topic="tidegate.agent", partition=3, offset=1234, raw_value="junk"
        ),
        source="tidegate/policy",
    )
    assert await _line(make, "deadletter", dead) == "dead-lettered by policy from tidegate.agent[3]@1234: invalid_event: not JSON"
