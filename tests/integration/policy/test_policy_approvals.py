"""Approvals on the real broker: a signed grant lifts an escalation (with edited args re-evaluated); forged ones are dead-lettered."""

from __future__ import annotations

from servicekit import Keyring, SigningKey, action_digest, authorization_message

BIG = {"payee_id": "cus_1001", "amount_usd": 900.0, "order_id": "O-5"}


async def test_signed_grant_lifts_escalation(policy, collector, producer, kit, wait_for, one, make_proposal, make_grant) -> None:
    approval_key = SigningKey.load_or_create(kit.keys_dir, "approval")
    escalated = make_proposal("issue_refund", BIG)
    edited = make_proposal("issue_refund", BIG | {"order_id": "O-6"})
    edited_to_new_payee = make_proposal("issue_refund", BIG | {"order_id": "O-8"})
    for p in (escalated, edited, edited_to_new_payee):
        await producer.send("actions.proposed", p)
    decisions = [await wait_for(lambda p=p: one(collector.decided(p.data.action_id))) for p in (escalated, edited, edited_to_new_payee)]
    assert [d.data.outcome for d in decisions] == ["escalate"] * 3

    g1 = make_grant(decisions[0], approval_key)
    g2 = make_grant(decisions[1], approval_key, edited_args=BIG | {"order_id": "O-6", "amount_usd": 850.0})
    g3 = make_grant(decisions[2], approval_key, edited_args=BIG | {"order_id": "O-8", "payee_id": "cus_new"})
    for g in (g1, g2, g3):
        await producer.send("approvals", g)

    after = await wait_for(lambda: one(collector.decided(escalated.data.action_id, via="approval")), what="re-decision")
    assert after.data.outcome == "allow"
    assert after.data.approval_id == g1.data.approval_id
    assert "approved_by_human" in [r.code.value for r in after.data.reasons]
    assert after.data.facts["approval_granted"] is True
    auth = await wait_for(lambda: one(collector.authorized(escalated.data.action_id)), what="authorization after grant")
    a = auth.data.authorization
    assert (a.via, a.approval_id) == ("approval", g1.data.approval_id)
    assert a.action_digest == action_digest("acme", "issue_refund", BIG)
    assert Keyring.load(kit.keys_dir, "policy").verify(a.key_id, authorization_message(auth.data), a.signature)

    # Edited args are what is re-evaluated and authorized.
    auth2 = await wait_for(lambda: one(collector.authorized(edited.data.action_id)), what="authorization of edited args")
    assert auth2.data.args["amount_usd"] == 850.0
    assert auth2.data.authorization.action_digest == action_digest("acme", "issue_refund", g2.data.edited_args)
    # An approver who edits the payee to a new one meets the deny a grant cannot lift.
    d3 = await wait_for(lambda: one(collector.decided(edited_to_new_payee.data.action_id, via="approval")))
    assert d3.data.outcome == "deny"
    assert [r.code.value for r in d3.data.reasons] == ["new_payee_blocked"]
    assert collector.authorized(edited_to_new_payee.data.action_id) == []

    # A redelivered grant republishes the same decision; nothing new is authorized.
    await producer.send("approvals", g1)
    await wait_for(lambda: len(collector.decided(escalated.data.action_id, via="approval")) == 2, what="republished re-decision")
    assert {e.id for e in collector.authorized(escalated.data.action_id)} == {auth.id}


async def test_forged_grants_are_ignored_and_dead_lettered(
    policy, collector, producer, kit, tmp_path, wait_for, one, make_proposal, make_grant
) -> None:
    SigningKey.load_or_create(kit.keys_dir, "approval")  # the real approval key exists...
    mallory = SigningKey.load_or_create(tmp_path / "elsewhere", "approval")  # ...and so does an impostor's
    trusted = SigningKey.load_or_create(kit.keys_dir, "approval")
    escalated = make_proposal("issue_refund", BIG)
    human_only = make_proposal("delete_customer_data", {"customer_id": "cus_1001"})
    for p in (escalated, human_only):
        await producer.send("actions.proposed", p)
    d = await wait_for(lambda: one(collector.decided(escalated.data.action_id)))
    d_deny = await wait_for(lambda: one(collector.decided(human_only.data.action_id)))
    assert (d.data.outcome, d_deny.data.outcome) == ("escalate", "deny")

    forged = make_grant(d, mallory)
    unsigned = make_grant(d, None)
    swapped_args = make_grant(d, trusted, args=BIG | {"payee_id": "cus_1002"})
    lift_human_only = make_grant(d_deny, trusted)
    for g in (forged, unsigned, swapped_args, lift_human_only):
        await producer.send("approvals", g)

    codes = {}
    for g in (forged, unsigned, swapped_args, lift_human_only):
        dead = await wait_for(lambda g=g: one(collector.rejected(g.data.approval_id)), what=f"dead letter of {g.data.approval_id}")
        codes[g.data.approval_id] = dead.data.code
    assert codes == {
        forged.data.approval_id: "approval_unauthenticated",
        unsigned.data.approval_id: "approval_unauthenticated",
        swapped_args.data.approval_id: "digest_mismatch",
        lift_human_only.data.approval_id: "approval_unauthenticated",
    }
    # Then a genuine grant still works, proving the forged ones were read and ignored, not stuck.
    await producer.send("approvals", make_grant(d, trusted))
    await wait_for(lambda: one(collector.authorized(escalated.data.action_id)), what="authorization after the genuine grant")
    assert [e.data.approval_id for e in collector.events["actions.decided"] if e.data.via == "approval"] == [
        collector.authorized(escalated.data.action_id)[0].data.authorization.approval_id
    ]
    assert collector.authorized(human_only.data.action_id) == []


async def test_a_grant_short_of_the_packs_quorum_is_denied(
    collector, producer, kit, wait_for, one, make_proposal, make_grant, tmp_path
) -> None:
    import shutil

    import yaml

    from services.policy.app import build

    pack = tmp_path / "pack"
    shutil.copytree(kit.policy_dir, pack)
    settings = yaml.safe_load((pack / "settings.yaml").read_text())
    settings["tenants"]["acme"]["required_approvals"] = {"financial": 2}
    (pack / "settings.yaml").write_text(yaml.safe_dump(settings))
    policy = build(kit=kit.model_copy(update={"policy_dir": pack}))
    await policy.start()
    try:
        approval_key = SigningKey.load_or_create(kit.keys_dir, "approval")
        proposals = [make_proposal("issue_refund", BIG) for _ in range(3)]  # requested by alice@acme.example
        for p in proposals:
            await producer.send("actions.proposed", p)
        decisions = [await wait_for(lambda p=p: one(collector.decided(p.data.action_id))) for p in proposals]
        assert [d.data.outcome for d in decisions] == ["escalate"] * 3

        # Signed by the approval service, yet short of what the policy's own settings require.
        await producer.send("approvals", make_grant(decisions[0], approval_key, approvers=("bob@acme.example",)))
        await producer.send("approvals", make_grant(decisions[1], approval_key, approvers=("alice@acme.example", "bob@acme.example")))
        await producer.send("approvals", make_grant(decisions[2], approval_key, approvers=("bob@acme.example", "carol@acme.example")))

        for short in proposals[:2]:
            d = await wait_for(lambda a=short.data.action_id: one(collector.decided(a, via="approval")), what="the re-decision")
            assert d.data.outcome == "deny"
            assert [r.code.value for r in d.data.reasons] == ["approval_quorum_not_met"]
        met = await wait_for(lambda: one(collector.decided(proposals[2].data.action_id, via="approval")), what="the re-decision")
        assert met.data.outcome == "allow"
        await wait_for(lambda: one(collector.authorized(proposals[2].data.action_id)), what="its authorization")
        assert collector.authorized(proposals[0].data.action_id) == collector.authorized(proposals[1].data.action_id) == []
    finally:
        await policy.stop()
