"""The policy service on the real broker and database: allow, escalate, deny, bad input, redelivery."""

from __future__ import annotations

import asyncpg

from schemas import ActionAuthorized, ActionDecided
from servicekit import Keyring, KitSettings, action_digest, authorization_message


def _verifies(kit: KitSettings, event: ActionAuthorized) -> bool:
    keys = Keyring.load(kit.keys_dir, "policy")
    auth = event.data.authorization
    return keys.verify(auth.key_id, authorization_message(event.data), auth.signature)


async def test_allow_escalate_deny_and_bad_input(policy, collector, producer, kit, wait_for, one, make_proposal) -> None:
    proposal = make_proposal
    read = proposal("get_ticket", {"ticket_id": "T-1001"})
    refund_ok = proposal("issue_refund", {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"})
    refund_big = proposal("issue_refund", {"payee_id": "cus_1001", "amount_usd": 900.0, "order_id": "O-2"})
    delete = proposal("delete_customer_data", {"customer_id": "cus_1001"})
    unknown = proposal("wire_money", {"amount_usd": 5})
    invalid = proposal("issue_refund", {"payee_id": "cus_1001", "amount_usd": 40.0})
    for p in (read, refund_ok, refund_big, delete, unknown, invalid):
        await producer.send("actions.proposed", p)
    await producer.send_raw("actions.proposed", b'{"not": "an event", "marker": "policy-garbage"}')

    allowed: ActionDecided = await wait_for(lambda: one(collector.decided(refund_ok.data.action_id)), what="refund decision")
    assert allowed.data.outcome == "allow"
    assert [r.code for r in allowed.data.reasons] == ["within_threshold"]
    assert allowed.data.facts["payee_is_new"] is False
    assert allowed.data.facts["amount_usd"] == 40.0
    assert allowed.data.policy_version == policy.policy.pack.version
    assert allowed.data.action_digest == action_digest("acme", "issue_refund", refund_ok.data.args)
    auth: ActionAuthorized = await wait_for(lambda: one(collector.authorized(refund_ok.data.action_id)), what="authorization")
    assert auth.data.authorization.via == "policy"
    assert auth.data.authorization.action_digest == allowed.data.action_digest
    assert _verifies(kit, auth)
    assert (auth.data.authorization.expires_at - auth.data.authorization.issued_at).total_seconds() == 300

    outcomes = {}
    for p in (read, refund_big, delete, unknown, invalid):
        d = await wait_for(lambda p=p: one(collector.decided(p.data.action_id)), what=f"decision on {p.data.tool}")
        outcomes[p.data.tool if p is not invalid else "invalid"] = (d.data.outcome, [r.code.value for r in d.data.reasons])
    assert outcomes == {
        "get_ticket": ("allow", ["read_allowed"]),
        "issue_refund": ("escalate", ["needs_human_approval"]),
        "delete_customer_data": ("deny", ["human_only"]),
        "wire_money": ("deny", ["no_permit"]),
        "invalid": ("deny", ["invalid_args"]),
    }
    # Only allows are authorized.
    for p in (refund_big, delete, unknown, invalid):
        assert collector.authorized(p.data.action_id) == []
    dead = await wait_for(lambda: one(collector.rejected("policy-garbage")), what="dead letter")
    assert dead.data.code == "invalid_event"
    assert dead.data.service == "policy"

    # The same action id for other args is dead-lettered, nothing published; a redelivered proposal gets the
    # recorded decision again, and no second reservation.
    tampered = proposal(
        "issue_refund",
        {"payee_id": "cus_1001", "amount_usd": 45.0, "order_id": "O-1"},
        action_id=refund_ok.data.action_id,
        task_id=refund_ok.data.task_id,
    )
    await producer.send("actions.proposed", tampered)
    reused = await wait_for(lambda: one(collector.rejected(tampered.id)), what="the reused action id's dead letter")
    assert reused.data.code == "action_id_reused"
    await producer.send("actions.proposed", refund_ok)
    again = await wait_for(
        lambda: (lambda ds: ds if len(ds) == 2 else None)(collector.decided(refund_ok.data.action_id)), what="republished decisions"
    )
    assert {d.id for d in again} == {allowed.id}
    auths = await wait_for(
        lambda: (lambda a: a if len(a) == 2 else None)(collector.authorized(refund_ok.data.action_id)), what="republished auth"
    )
    assert {a.id for a in auths} == {auth.id}
    assert all(a.data.args["amount_usd"] == 40.0 for a in auths)
    conn = await asyncpg.connect(kit.database_url)
    try:
        held = await conn.fetch("SELECT amount_usd FROM policy.reservations WHERE action_id = $1", refund_ok.data.action_id)
        task_spend = await conn.fetchval(
            "SELECT amount_usd FROM policy.spend WHERE tenant_id = 'acme' AND task_id = $1", refund_ok.data.task_id
        )
    finally:
        await conn.close()
    assert [float(r["amount_usd"]) for r in held] == [0.01]
    assert float(task_spend) == 0.01


async def test_a_proposal_whose_text_holds_a_nul_is_refused_by_the_contract_not_by_the_database(
    policy, collector, producer, wait_for, one, make_proposal
) -> None:
    """`\\u0000` is valid JSON, but no service's database can store it: the contract refuses it before any handler.

    Before, the policy accepted the proposal, failed to store its decision and dead-lettered it as a handler error
    carrying PostgreSQL's message (and an executor that met one in a tool's answer lost the call's result).
    """
    nul = make_proposal("get_ticket", {"ticket_id": "T-10\u000001"})
    text = make_proposal("get_ticket", {"ticket_id": "T-10\\u000001"})  # a backslash, then text: not a NUL
    await producer.send("actions.proposed", nul)
    await producer.send("actions.proposed", text)
    dead = await wait_for(lambda: one(collector.rejected(nul.id)), what="the NUL's dead letter")
    assert (dead.data.code, dead.data.service) == ("invalid_event", "policy")
    assert "U+0000" in dead.data.error
    decided = await wait_for(lambda: one(collector.decided(text.data.action_id)), what="the backslash's decision")
    assert decided.data.args == {"ticket_id": "T-10\\u000001"}
    assert collector.decided(nul.data.action_id) == []
