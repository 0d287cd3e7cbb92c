"""The on-call reads the dead letters of an executor outage: the planner already proposed each expired call again (oncall F3).

Live: the executor was stopped for 6 minutes; at its start it refused six authorizations `authorization_expired`, and
the planner proposed each again (`repeats`) within a second. `dead-letters list` told the on-call, for each, "what it
carried has expired for good; ask for a new decision (propose again)": work that was already done.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import schemas as s
from services.audit.rows import LogRow
from tidegate.ops.redrive import DeadLetter, as_json, proposed_again_of, why_not

PREFIX = "tidegate."
T0 = datetime(2026, 12, 7, 10, 16, tzinfo=UTC)
EXPIRED = "demo-T-1001-00559b19:1.9b2e"
AGAIN = "demo-T-1001-00559b19:2.f671"


def _row(topic: str, offset: int, action_id: str, value: bytes | None = None, *, valid: bool = True) -> LogRow:
    return LogRow(
        PREFIX + topic, 2, offset, offset + 1, T0 + timedelta(seconds=offset), 1, b"demo-T-1001-00559b19", [], value, valid, None,
        None, None, "acme", "demo-T-1001-00559b19", action_id, "issue_refund", None, [], None, None, None, False, T0, b"", b"",
    )  # fmt: skip


def _proposal(action_id: str, repeats: str | None, *, valid: bool = True) -> LogRow:
    data = {"action_id": action_id, "task_id": "demo-T-1001-00559b19", "tool": "issue_refund", "repeats": repeats}
    return _row("actions.proposed", 30, action_id, json.dumps({"type": "tidegate.action.proposed", "data": data}).encode(), valid=valid)


def _dead(again: str | None) -> DeadLetter:
    data = s.EventRejectedData(
        tenant_id="acme", task_id="demo-T-1001-00559b19", topic=PREFIX + "actions.authorized", partition=2, offset=12,
        raw_value="{}", code="authorization_expired", error="authorization expired at 2026-12-07T10:14:35Z", service="executor",
    )  # fmt: skip
    return DeadLetter("dl-1", T0, "deadletter[0]@7", s.EventRejected.build(data, source="tidegate/executor"), proposed_again=again)


def test_an_expired_authorization_the_planner_proposed_again_says_so_and_that_nothing_is_to_do() -> None:
    refused = _row("actions.authorized", 12, EXPIRED)
    again = proposed_again_of(refused, [_proposal(EXPIRED, None), _proposal(AGAIN, EXPIRED)])
    assert again is not None
    why = why_not(_dead(again), PREFIX)
    assert why == (
        f"authorization_expired: nothing ran, and the planner proposed it again as action {AGAIN} at 2026-12-07 10:16:30Z "
        f"(`tidegate audit explain {AGAIN}`): nothing to do"
    )
    assert json.loads(as_json(_dead(again), PREFIX, why))["proposed_again"] == again


def test_one_not_proposed_again_still_says_to_propose_again() -> None:
    refused = _row("actions.authorized", 12, EXPIRED)
    assert proposed_again_of(refused, [_proposal("other:3.aa", "other:2.bb")]) is None
    assert proposed_again_of(refused, [_proposal(AGAIN, EXPIRED, valid=False)]) is None  # a row stored as not valid vouches for nothing
    why = why_not(_dead(None), PREFIX)
    assert why is not None
    assert "expired for good; ask for a new decision (propose again)" in why
