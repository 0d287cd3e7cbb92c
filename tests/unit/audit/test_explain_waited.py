"""`tidegate audit explain` says how long a decision waited, not only how long it took (on-call probe F10).

A proposal held two minutes while the policy's database was away read "proposed 07:02:15 … decided 07:04:07 (7.4 ms)":
the on-call engineer replaying the night saw the decision's own time and nothing about the two minutes before it.
"""

from __future__ import annotations

import schemas as s
from services.audit.explanation import explain
from services.audit.records import observe
from services.audit.repository import InMemoryAuditLog
from tidegate.audit_render import render_html, render_markdown

PREFIX = "tidegate."
T0_MS = 1_796_000_000_000
LOG_APPEND_TIME = 1


def _proposed(action_id: str) -> s.ActionProposed:
    data = s.ActionProposedData(
        action_id=action_id, task_id="t-w", tenant_id="acme", step=1, tool="add_internal_note",
        args={"ticket_id": "T-1", "note": "hi"}, proposer="tidegate/planner", mode="autonomous",
    )  # fmt: skip
    return s.ActionProposed.build(data, source="tidegate/planner")


def _decided(action_id: str) -> s.ActionDecided:
    data = s.ActionDecidedData(
        action_id=action_id, task_id="t-w", tenant_id="acme", tool="add_internal_note", args={"ticket_id": "T-1", "note": "hi"},
        action_digest="d" * 64, outcome="allow", reasons=[], policy_version="sha256:abc", latency_ms=7.4, via="policy",
    )  # fmt: skip
    return s.ActionDecided.build(data, source="tidegate/policy")


async def _explained(*appended: tuple[str, s.Envelope, int]) -> str:
    """The task's Markdown explanation, each event appended by the broker at its own time (ms after T0)."""
    log = InMemoryAuditLog()
    rows = [
        observe(
            topic=PREFIX + topic,
            partition=0,
            offset=n,
            timestamp_ms=T0_MS + at_ms,
            timestamp_type=LOG_APPEND_TIME,
            key=event.key,
            value=s.encode(event),
            headers=[],
            prefix=PREFIX,
        )
        for n, (topic, event, at_ms) in enumerate(appended)
    ]
    await log.append(rows)
    x = explain("t-w", await log.task_rows("t-w", PREFIX))
    md, html = render_markdown(x), render_html(x)
    assert ("Waited" in md) == ("Waited" in html), (md, html)
    return md


async def test_a_decision_that_waited_minutes_says_so_beside_its_own_time() -> None:
    md = await _explained(("actions.proposed", _proposed("a-1"), 0), ("actions.decided", _decided("a-1"), 112_000))
    assert "decided 1 min 52 s after it was proposed (the decision itself took 7.4 ms)" in md, md


async def test_a_decision_on_time_says_nothing_more() -> None:
    md = await _explained(("actions.proposed", _proposed("a-1"), 0), ("actions.decided", _decided("a-1"), 40))
    assert "Waited" not in md, md
