"""`tidegate audit explain` says whether what ran is exactly what was approved (auditor3 F4).

The auditor's "who approved refund X, and what exactly ran?": the grant binds to a digest of the call, the
authorization the executor ran carries a digest of the call it allows. `explain` showed neither, so the match was a
comparison by hand in `--format json`. It now recomputes both from the signed values and says `Bound: … exactly the call
bob@acme.example granted`, or `WARNING, not bound` when the authorization is for another call (another payee), the grant
is for another call than the one proposed, or it names a grant the log does not hold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import schemas as s
from services.audit.explanation import Explanation, explain
from services.audit.records import observe
from services.audit.repository import InMemoryAuditLog
from tidegate.audit_render import render_html, render_markdown

PREFIX = "tidegate."
T0 = datetime(2026, 12, 6, 23, 12, tzinfo=UTC)
ARGS = {"amount_usd": 899.0, "order_id": "O-5002", "payee_id": "cus_1002"}
EDITED = {**ARGS, "amount_usd": 450.0}
ELSEWHERE = {**ARGS, "payee_id": "acct_attacker"}


def _digest(args: dict[str, Any]) -> str:
    return s.action_digest("acme", "issue_refund", args)


def _proposed() -> s.ActionProposed:
    data = s.ActionProposedData(
        action_id="a-1", task_id="t-b", tenant_id="acme", step=1, tool="issue_refund", args=ARGS, proposer="tidegate/planner",
        mode="autonomous",
    )  # fmt: skip
    return s.ActionProposed.build(data, source="tidegate/planner")


def _granted(digest: str, edited: dict[str, Any] | None = None) -> s.ApprovalGranted:
    data = s.ApprovalData(
        approval_id="ap-1", action_id="a-1", task_id="t-b", tenant_id="acme", tool="issue_refund", args=ARGS, action_digest=digest,
        approver="bob@acme.example", approvers=["bob@acme.example"], edited_args=edited, expires_at=T0 + timedelta(hours=1),
        decided_at=T0,
    )  # fmt: skip
    return s.ApprovalGranted.build(data, source="tidegate/approval")


def _authorized(args: dict[str, Any], *, via: str = "approval", approval_id: str | None = "ap-1") -> s.ActionAuthorized:
    auth = s.Authorization(
        via=via, policy_version="sha256:abc", action_digest=_digest(args), issued_at=T0, expires_at=T0 + timedelta(minutes=5),
        key_id="policy-000000000000", signature="x", approval_id=approval_id,
    )  # fmt: skip
    data = s.ActionAuthorizedData(action_id="a-1", task_id="t-b", tenant_id="acme", tool="issue_refund", args=args, authorization=auth)
    return s.ActionAuthorized.build(data, source="tidegate/policy")


async def _explanation(*events: tuple[str, s.Envelope]) -> Explanation:
    """`explain` of task t-b over `events` (topic without prefix, event), recorded in that order."""
    log = InMemoryAuditLog()
    await log.append([
        observe(
            topic=PREFIX + topic, partition=0, offset=n, timestamp_ms=1_796_000_000_000 + n, timestamp_type=1, key=event.key,
            value=s.encode(event), headers=[], prefix=PREFIX,
        )
        for n, (topic, event) in enumerate(events)
    ])  # fmt: skip
    return explain("t-b", await log.task_rows("t-b", PREFIX))


async def _explained(*events: tuple[str, s.Envelope]) -> str:
    x = await _explanation(*events)
    md, html = render_markdown(x), render_html(x)
    assert ("WARNING, not bound" in md) == ("WARNING, not bound" in html)
    return md


async def test_a_grant_and_the_authorization_of_that_call_read_bound() -> None:
    md = await _explained(
        ("actions.proposed", _proposed()), ("approvals", _granted(_digest(ARGS))), ("actions.authorized", _authorized(ARGS))
    )
    assert "**Bound:** the authorization is for exactly the call bob@acme.example granted (approval ap-1, digest " in md, md


async def test_an_approvers_edit_is_the_call_bound() -> None:
    md = await _explained(
        ("actions.proposed", _proposed()), ("approvals", _granted(_digest(ARGS), EDITED)), ("actions.authorized", _authorized(EDITED))
    )
    assert "exactly the call as bob@acme.example edited it" in md, md


async def test_an_authorization_for_another_payee_is_named_not_bound() -> None:
    md = await _explained(
        ("actions.proposed", _proposed()), ("approvals", _granted(_digest(ARGS))), ("actions.authorized", _authorized(ELSEWHERE))
    )
    assert "**WARNING, not bound:**" in md, md
    assert "what ran is not what was approved" in md


async def test_a_grant_of_another_call_or_none_at_all_is_named_not_bound() -> None:
    other = await _explained(
        ("actions.proposed", _proposed()), ("approvals", _granted(_digest(ELSEWHERE))), ("actions.authorized", _authorized(ARGS))
    )
    assert "**WARNING, not bound:** the grant by bob@acme.example binds to digest" in other, other
    none = await _explained(("actions.proposed", _proposed()), ("actions.authorized", _authorized(ARGS)))
    assert "the log holds no grant of it" in none, none
    by_policy = await _explained(("actions.proposed", _proposed()), ("actions.authorized", _authorized(ELSEWHERE, via="policy")))
    assert "is not the proposed call's" in by_policy, by_policy


async def test_a_rejection_says_the_approvers_reason_code() -> None:
    """Why bob refused a refund is his `review_reason` (`wrong_recipient`), which explain left out: only his comment showed."""
    data = s.ApprovalData(
        approval_id="ap-1", action_id="a-1", task_id="t-b", tenant_id="acme", tool="issue_refund", args=ARGS, action_digest=_digest(ARGS),
        approver="bob@acme.example", approvers=["bob@acme.example"], expires_at=T0 + timedelta(hours=1), decided_at=T0,
        comment="prompt injection", review_reason="wrong_recipient",
    )  # fmt: skip
    md = await _explained(("actions.proposed", _proposed()), ("approvals", s.ApprovalRejected.build(data, source="tidegate/approval")))
    assert "rejected by bob@acme.example at" in md
    assert "“prompt injection” (reason: `wrong_recipient`)" in md, md


async def test_explain_says_which_credential_proved_each_approver() -> None:
    """The auditor's "how do we know it was bob?" (auditor F3): the token by id and who issued it, from the signed vote."""
    credential = s.ApprovalCredential(
        kind="api_token", id="tok_c7acc6ca9114", issued_by="operator-3f2a9c1d7e4b", issued_at=T0 - timedelta(days=3)
    )
    vote = s.ApprovalVote(approver="bob@acme.example", decision="approve", at=T0, credential=credential)
    granted = _granted(_digest(ARGS))
    granted = granted.model_copy(update={"data": granted.data.model_copy(update={"votes": [vote]})})
    md = await _explained(("actions.proposed", _proposed()), ("approvals", granted), ("actions.authorized", _authorized(ARGS)))
    assert "**Authenticated** bob@acme.example: API token `tok_c7acc6ca9114`, issued by key `operator-3f2a9c1d7e4b` at " in md, md
    link = s.ApprovalCredential(kind="link", id="Zk3x", issued_by="approval-0123456789ab")
    older = vote.model_copy(update={"credential": None})
    for v, said in ((vote.model_copy(update={"credential": link}), "one-time link `Zk3x`, issued by key `approval-0123456789ab`"),
                    (older, "credential not recorded")):  # fmt: skip
        g = _granted(_digest(ARGS))
        g = g.model_copy(update={"data": g.data.model_copy(update={"votes": [v]})})
        assert f"**Authenticated** bob@acme.example: {said}" in await _explained(("approvals", g)), said


async def test_a_decision_without_votes_shows_no_credential_line() -> None:
    md = await _explained(("actions.proposed", _proposed()), ("approvals", _granted(_digest(ARGS))))
    assert "Authenticated" not in md


def _authorized_for(tool: str, args: dict[str, Any]) -> s.ActionAuthorized:
    """An authorization of another tool than the one proposed, over the proposal's very args, allowed by policy."""
    auth = s.Authorization(
        via="policy", policy_version="sha256:abc", action_digest=s.action_digest("acme", tool, args), issued_at=T0,
        expires_at=T0 + timedelta(minutes=5), key_id="policy-000000000000", signature="x",
    )  # fmt: skip
    data = s.ActionAuthorizedData(action_id="a-1", task_id="t-b", tenant_id="acme", tool=tool, args=args, authorization=auth)
    return s.ActionAuthorized.build(data, source="tidegate/policy")


async def test_an_authorization_of_another_tool_with_the_proposals_args_is_not_bound() -> None:
    """The digest is recomputed from the proposal's own tool: the authorization's tool is what is being checked."""
    md = await _explained(("actions.proposed", _proposed()), ("actions.authorized", _authorized_for("close_account", ARGS)))
    assert "**Bound:**" not in md, md
    assert "WARNING, not bound" in md
    assert "close_account" in md


async def test_an_authorization_with_no_proposal_in_the_log_is_not_bound() -> None:
    md = await _explained(("actions.authorized", _authorized_for("close_account", {})))
    assert "**Bound:**" not in md, md
    assert "WARNING, not bound" in md
    assert "holds no proposal" in md
