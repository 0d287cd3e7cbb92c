"""`audit search`'s one line says what a control record did and where a dead letter came from: who flipped what, from the audit alone."""

from __future__ import annotations

from typing import Any

import schemas as s
from services.audit.reading import search
from services.audit.repository import InMemoryAuditLog, SearchFilters

SRC = "tidegate/cli"


async def _line(make: Any, topic: str, event: Any) -> str:
    """The summary of `event` as `audit search` shows it: recorded, read back, summarised from its row."""
    log = InMemoryAuditLog()
    await log.append([make(topic, s.encode(event), offset=7, key=event.key)])
    [line] = await search(log, SearchFilters())
    return line.summary


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
    said = "tenant globex: onboarded with allow_autonomous false, budget_usd 20 by ops"  # its first record: the whole of it
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


async def test_a_widening_and_its_rollback_read_as_changes_with_who_from_what_to_what(make: Any) -> None:
    """Governance probe F8: the security reviewer asks who raised acme's threshold, from what to what; the record was cut at 200."""
    payees = [f"cus_{n}" for n in range(1001, 1030)]  # a long record: the changed field sorts after the cut
    acme = {"accept_irreversible": ["write_low"], "allow_autonomous": True, "known_payees": payees, "refund_threshold_usd": 500}
    records = [
        ("acme", acme, "operator"),
        ("globex", {"allow_autonomous": True, "refund_threshold_usd": 200}, "operator"),
        ("acme", acme | {"refund_threshold_usd": 700}, "alice"),
        ("acme", acme | {"known_payees": [*payees, "cus_2000"], "budget_usd": 50}, "bob"),
    ]
    log = InMemoryAuditLog()
    events = [s.ControlTenant.build(s.ControlTenantData(tenant_id=t, settings=v, set_by=by), source=SRC) for t, v, by in records]
    await log.append([make("control", s.encode(e), offset=n, key=e.key) for n, e in enumerate(events)])
    widened_at = (await log.search(SearchFilters()))[2].kafka_ts  # `--since` after the onboarding: its record is out of the window
    window = await search(log, SearchFilters(event_type="tidegate.control.tenant", tenant="acme", since=widened_at))
    assert [line.summary for line in window] == [
        "tenant acme: refund_threshold_usd 500 → 700 by alice",
        'tenant acme: budget_usd (unset) → 50, known_payees +"cus_2000", refund_threshold_usd 700 → 500 by bob',
    ]
    every = [line.summary for line in await search(log, SearchFilters(event_type="tidegate.control.tenant"))]
    assert every[0].startswith('tenant acme: onboarded with accept_irreversible ["write_low"], allow_autonomous true, known_payees [')
    assert every[0].endswith('"cus_1029"], refund_threshold_usd 500 by operator')  # the whole record, not cut
    assert every[1] == "tenant globex: onboarded with allow_autonomous true, refund_threshold_usd 200 by operator"
