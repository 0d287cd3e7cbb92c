"""A task's story and explanation: sources, policies, approvals, tool calls, costs, dead letters."""

from __future__ import annotations

import json
from typing import Any

import schemas as s
from schemas.examples import sample_events
from services.audit.explanation import explain
from services.audit.reading import story
from services.audit.repository import InMemoryAuditLog, SearchFilters
from tidegate.audit_render import render_html, render_markdown


async def _log(make: Any) -> InMemoryAuditLog:
    log = InMemoryAuditLog()
    records = []
    for offset, (topic, event) in enumerate(sample_events()):
        if event.data.__class__.__name__ == "EventRejectedData":
            event = event.model_copy(update={"subject": "t-1", "data": event.data.model_copy(update={"task_id": "t-1"})})
        records.append(make(topic, s.encode(event), offset=offset, key=event.key))
    records.append(make("tasks", b"<html>not an event</html>", offset=999, key=b"t-1"))
    await log.append(records)
    return log


async def test_the_story_of_a_task_is_every_record_about_it_in_order(make: Any) -> None:
    log = await _log(make)
    rows = await log.task_rows("t-1", "tidegate.")
    lines = story(rows)
    assert [line.event_type for line in lines][:3] == ["task.submitted", "action.proposed", "action.decided"]
    assert lines[-1].valid is False
    assert "not a valid event" in lines[-1].summary
    assert "DENY tag_ticket (no_permit)" in lines[2].summary
    assert await log.task_rows("t-1", "sandbox.") == []


async def test_the_explanation_names_sources_policies_approvals_calls_costs_and_dead_letters(make: Any) -> None:
    log = await _log(make)
    x = explain("t-1", await log.task_rows("t-1", "tidegate."))
    assert x.sources == {"body": "refund please"}
    assert x.untrusted_fields == ["body"]
    assert x.requested_by == "alice@acme.example"
    [action] = [a for a in x.actions if a.action_id == "a-1"]
    assert action.tool == "tag_ticket"
    assert action.proposer == "tidegate/planner/playbook"
    [decision] = action.decisions
    assert (decision.outcome, decision.policy_version, [r.code for r in decision.reasons]) == ("deny", "sha256:abc", ["no_permit"])
    assert [(a.status, a.approver) for a in action.approvals] == [
        ("requested", None),
        ("granted", "bob"),
        ("rejected", None),
        ("expired", None),
        ("resolved", "bob"),
    ]
    assert action.approvals[-1].resolution == "confirmed_done"  # what a human found after an unknown outcome
    assert action.authorization is not None
    assert [c.status for c in action.calls] == ["succeeded", "failed", "unknown"]
    assert x.status in ("completed", "failed")
    assert x.costs.reported is not None
    assert {d.code for d in x.dead_letters} == {"invalid_event", "invalid_json"}  # a service's dead letter; the HTML the audit kept
    assert x.skipped == {"invalid_json": 1}
    assert any(d.service == "planner" for d in x.dead_letters)
    assert x.policy_versions == ["sha256:abc"]

    md = render_markdown(x)
    for needle in (
        "## Sources referenced",
        "**untrusted**",
        "`no_permit` (default)",
        "granted by bob",
        "resolved (confirmed_done) by bob",
        "## Costs",
        "planner",
    ):
        assert needle in md
    html = render_html(x)
    assert "UNTRUSTED" in html
    assert "resolved (confirmed_done)" in html
    assert json.loads(x.model_dump_json())["task_id"] == "t-1"


async def test_search_filters_combine(make: Any) -> None:
    log = await _log(make)
    denied = await log.search(SearchFilters(tenant="acme", outcome="deny", topic_prefix="tidegate."))
    assert [r.event_type for r in denied] == ["tidegate.action.decided"]
    assert [r.event_type for r in await log.search(SearchFilters(reason="no_permit"))] == ["tidegate.action.decided"]
    assert await log.search(SearchFilters(tenant="other")) == []
    assert len(await log.search(SearchFilters(tool="tag_ticket"))) >= 5
