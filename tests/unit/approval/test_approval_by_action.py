"""The approvals API lists the requests of one action id (the id a system of record shows), in memory; `report` keeps rates apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from services.approval import review_report
from services.approval.reviews import Review


async def test_list_filters_by_action_id(world: World) -> None:  # noqa: F811
    records = [await world.service.on_decided(decided(f"a-{n}"), event_id=f"e{n}", at=world.clock()) for n in range(3)]
    listed = (await world.client.get("/api/v1/approvals", params={"action": "a-1"}, headers=bearer(world.tokens["bob"]))).json()
    assert [r["approval_id"] for r in listed] == [records[1].approval_id]  # type: ignore[union-attr]
    assert [r["action_id"] for r in listed] == ["a-1"]
    nothing = await world.client.get("/api/v1/approvals", params={"action": "a-9", "status": "all"}, headers=bearer(world.tokens["bob"]))
    assert nothing.json() == []


def _review(outcome: str) -> Review:
    at = datetime(2026, 12, 5, tzinfo=UTC)
    return Review(
        tenant_id="acme", task_id="t", action_id=f"a-{outcome}", tool="issue_refund", risk="financial", outcome=outcome,  # type: ignore[arg-type]
        requested_at=at, decided_at=None if outcome == "expired" else at + timedelta(seconds=30),
        approver=None if outcome == "expired" else "bob",
    )  # fmt: skip


def test_the_report_keeps_counts_apart_from_rates() -> None:
    doc = review_report([_review("approved"), _review("rejected"), _review("expired"), _review("expired")])
    assert doc["outcomes"] == {"approved": 1, "rejected": 1, "expired": 2}
    assert doc["rates"] == {"reject": 0.5, "edit": 0.0, "expire": 0.5}  # every rate a fraction, none a count
