"""The envelope signature and the authority map: who may produce which event, checked before any handler."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import schemas as s
from servicekit import (
    Authority,
    ControlState,
    KitSettings,
    Reject,
    SigningKey,
    client_key,
    deployment_authority,
    encode_signed,
    operator_key,
    service_key,
    sign_as_client,
    sign_as_operator,
    sign_event,
)
from servicekit.signing import retire, rotate


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()  # a deployment's keys folder: `service_key` refuses one that is not there
    return KitSettings(keys_dir=tmp_path / "keys")


@pytest.fixture
def authority(kit: KitSettings) -> Authority:
    return deployment_authority(kit)


def decided(tenant: str = "acme") -> s.ActionDecided:
    data = s.ActionDecidedData(
        action_id="a-1",
        task_id="t-1",
        tenant_id=tenant,
        tool="issue_refund",
        args={"payee_id": "cus_1", "amount_usd": 40.0},
        action_digest="d",
        outcome="allow",
        reasons=[s.Reason(code="within_threshold", policy_id="p")],
        policy_version="v1",
        latency_ms=0.2,
    )
    return s.ActionDecided.build(data, source="tidegate/policy", traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")


def task(requested_by: str = "alice@acme.example", tenant: str = "acme") -> s.TaskSubmitted:
    data = s.TaskSubmittedData(task_id="t-1", tenant_id=tenant, workflow="w", input={"x": 1}, requested_by=requested_by)
    return s.TaskSubmitted.build(data, source="client")


def killswitch(active: bool = True, tool: str = "issue_refund", set_by: str = "operator") -> s.ControlKillswitch:
    data = s.ControlKillswitchData(tenant_id="*", tool=tool, active=active, set_by=set_by)
    return s.ControlKillswitch.build(data, source="tidegate/cli")


def wire(event: s.Envelope) -> bytes:
    return s.encode(event)


def check(authority: Authority, event: s.Envelope) -> str | None:
    raw = wire(event)
    refusal = authority.check(raw, s.decode_any(raw))
    return None if refusal is None else refusal.code


def test_the_rightful_signer_passes_and_any_changed_byte_fails(kit: KitSettings, authority: Authority) -> None:
    event = sign_event(decided(), service_key(kit, "policy"))
    assert check(authority, event) is None
    doc = json.loads(wire(event))
    for path, value in (
        (("data", "outcome"), "deny"),
        (("data", "latency_ms"), 9.0),
        (("traceparent",), "00-" + "c" * 32 + "-" + "b" * 16 + "-01"),
    ):
        forged = json.loads(json.dumps(doc))
        target = forged
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        raw = json.dumps(forged).encode()
        refusal = authority.check(raw, s.decode_any(raw))
        assert refusal is not None, path
        assert refusal.code == "signature_invalid", path


@pytest.mark.parametrize("make", [decided, task, killswitch])
def test_the_bytes_a_bus_publishes_are_the_signed_event_and_verify(kit: KitSettings, authority: Authority, make: Any) -> None:
    """`encode_signed` (what `Bus.publish` sends) carries the document `encode(sign_event(...))` does, and the check accepts it."""
    key, event = service_key(kit, "policy"), make()
    raw = encode_signed(event, key, sequence=7)
    signed = sign_event(event, key, sequence=7)
    assert json.loads(raw) == json.loads(wire(signed))
    assert authority.check(raw, s.decode_any(raw)) == authority.check(wire(signed), signed)  # None for a decision, else the same refusal
    assert authority.check(*(lambda r: (r, s.decode_any(r)))(encode_signed(decided(), key))) is None
    tampered = raw.replace(b'"source":"', b'"source":"x')
    refusal = authority.check(tampered, s.decode_any(tampered))
    assert refusal is not None
    assert refusal.code == "signature_invalid"


def test_unsigned_unknown_and_wrong_service_are_refused(kit: KitSettings, authority: Authority, tmp_path: Path) -> None:
    assert check(authority, decided()) == "signature_missing"
    assert check(authority, sign_event(decided(), SigningKey.load_or_create(tmp_path / "mallory", "policy"))) == "unknown_key"
    assert check(authority, sign_event(decided(), service_key(kit, "planner"))) == "signer_not_allowed"
    assert check(authority, sign_event(decided(), service_key(kit, "executor"))) == "signer_not_allowed"


def test_made_up_key_ids_cost_no_key_file_reads_and_a_key_added_later_is_found(kit: KitSettings, tmp_path: Path) -> None:
    now = [0.0]
    authority = Authority(kit.keys_dir, kit.operator_keys_dir, kit.client_keys_dir, recheck_s=5.0, monotonic=lambda: now[0])
    reads: list[str] = []
    authority.reload = lambda: reads.append("reload")  # type: ignore[method-assign]
    stamps = 0
    stamp = authority._stamp

    def counted() -> tuple[object, ...]:
        nonlocal stamps
        stamps += 1
        return stamp()

    authority._stamp = counted  # type: ignore[method-assign]
    mallory = sign_event(decided(), SigningKey.load_or_create(tmp_path / "mallory", "policy"))
    for _ in range(100):  # the same made-up key id, record after record: the folders are looked at once
        assert check(authority, mallory) == "unknown_key"
    assert (reads, stamps) == ([], 1)
    made_up = [mallory.model_copy(update={"keyid": f"k-{i}"}) for i in range(50)]
    assert {check(authority, e) for e in made_up} == {"unknown_key"}
    assert reads == []  # nothing changed on disk: no key file is read again
    del authority.reload  # the real one again
    now[0] += 5.0  # the id is looked up again after `recheck_s`; a key added since is found
    policy = service_key(kit, "policy")
    assert check(authority, sign_event(decided(), policy)) is None


def test_the_approval_service_may_sign_an_undo_proposal_and_no_other(kit: KitSettings, authority: Authority) -> None:
    data = s.ActionProposedData(
        action_id="undo-a-1", task_id="t-1", tenant_id="acme", step=1, tool="untag_ticket", args={}, proposer="undo:bob", undoes="a-1"
    )
    undo = s.ActionProposed.build(data, source="tidegate/approval")
    own_idea = s.ActionProposed.build(data.model_copy(update={"undoes": None, "tool": "issue_refund"}), source="tidegate/approval")
    assert check(authority, sign_event(undo, service_key(kit, "approval"))) is None
    assert check(authority, sign_event(own_idea, service_key(kit, "approval"))) == "signer_not_allowed"
    assert check(authority, sign_event(undo, service_key(kit, "executor"))) == "signer_not_allowed"


def test_a_client_signs_only_for_its_tenant_and_as_itself(kit: KitSettings, authority: Authority) -> None:
    assert check(authority, sign_as_client(kit, task())) is None
    alice = client_key(kit, "acme", "alice@acme.example")
    assert check(authority, sign_event(task(requested_by="bob@acme.example"), alice)) == "signer_not_allowed"  # four-eyes spoof
    assert check(authority, sign_event(task(tenant="globex"), alice)) == "signer_not_allowed"
    proposal = s.ActionProposed.build(
        s.ActionProposedData(
            action_id="a",
            task_id="t",
            tenant_id="acme",
            step=1,
            tool="tag_ticket",
            args={},
            proposer="x",
            requested_by="alice@acme.example",
        ),
        source="x",
    )
    assert check(authority, sign_event(proposal, alice)) is None
    assert check(authority, sign_event(proposal, service_key(kit, "planner"))) is None
    assert check(authority, sign_event(task(), service_key(kit, "planner"))) == "signer_not_allowed"  # only clients submit tasks


def test_an_agent_may_not_name_itself_as_one_of_the_deployments_services(kit: KitSettings, authority: Authority) -> None:
    """`tidegate/planner/playbook` is the planner's name: approvers, the audit and Cedar's principal would show the agent as it."""
    alice = client_key(kit, "acme", "alice@acme.example")

    def proposal(proposer: str) -> s.ActionProposed:
        data = s.ActionProposedData(
            action_id="a",
            task_id="t",
            tenant_id="acme",
            step=1,
            tool="issue_refund",
            args={},
            proposer=proposer,
            requested_by="alice@acme.example",
        )
        return s.ActionProposed.build(data, source="x")

    spoof = sign_event(proposal("tidegate/planner/playbook"), alice)
    raw = wire(spoof)
    refusal = authority.check(raw, s.decode_any(raw))
    assert refusal is not None
    assert refusal.code == "signer_not_allowed"
    assert "may not propose as 'tidegate/planner/playbook'" in refusal.message
    assert check(authority, sign_event(proposal("tidegate/planner/playbook"), service_key(kit, "planner"))) is None
    assert check(authority, sign_event(proposal("external:tidegate/helper"), alice)) is None  # the namespace is a prefix only
    assert check(authority, sign_event(proposal("undo:alice@acme.example"), alice)) is None  # `tidegate undo` proposes as a client


@pytest.mark.parametrize(
    ("proposer", "said"),
    [
        ("t\u0456degate/planner/playbook", "its letters mix scripts (CYRILLIC, LATIN)"),  # a Cyrillic і
        ("tidegate\u2215planner\u2215playbook", "names the deployment's own services"),  # DIVISION SLASH
        ("tidegate\uff0fplaybook", "names the deployment's own services"),  # FULLWIDTH SOLIDUS
        (" tidegate/playbook", "names the deployment's own services"),
        ("Tidegate/playbook", "names the deployment's own services"),
        ("tide\u200bgate/planner", "names the deployment's own services"),  # a zero-width space
    ],
)
def test_an_agent_may_not_name_itself_as_a_service_with_a_look_alike(
    kit: KitSettings, authority: Authority, proposer: str, said: str
) -> None:
    """Red team F4: `tіdegate/planner/playbook` was decided and run, and `audit explain` read "Proposed by: tіdegate/planner…"."""
    alice = client_key(kit, "acme", "alice@acme.example")
    data = s.ActionProposedData(
        action_id="a",
        task_id="t",
        tenant_id="acme",
        step=1,
        tool="issue_refund",
        args={},
        proposer=proposer,
        requested_by="alice@acme.example",
    )
    raw = wire(sign_event(s.ActionProposed.build(data, source="urn:tidegate:client:x"), alice))
    refusal = authority.check(raw, s.decode_any(raw))
    assert refusal is not None
    assert refusal.code == "signer_not_allowed"
    assert said in refusal.message


@pytest.mark.parametrize("source", ["tidegate/planner", "Tidegate/policy", "tidegate/executor/x", "t\u0456degate/planner"])
def test_an_agent_may_not_name_a_service_as_its_events_source(kit: KitSettings, authority: Authority, source: str) -> None:
    """Red team F4: a task and a proposal an agent signed read `tidegate/planner` in `audit search`'s source column."""
    submitted = task().model_copy(update={"source": source})
    assert check(authority, sign_as_client(kit, submitted)) == "signer_not_allowed"


@pytest.mark.parametrize(
    ("proposer", "source"),
    [
        ("agent-\u65e5\u672c", "urn:tidegate:client:agent-\u65e5\u672c"),
        ("\u0438\u0432\u0430\u043d", "urn:tidegate:client:\u0438\u0432\u0430\u043d"),
    ],
)
def test_a_name_in_one_script_or_latin_with_han_is_an_agents_own(
    kit: KitSettings, authority: Authority, proposer: str, source: str
) -> None:
    alice = client_key(kit, "acme", "alice@acme.example")
    data = s.ActionProposedData(
        action_id="a",
        task_id="t",
        tenant_id="acme",
        step=1,
        tool="issue_refund",
        args={},
        proposer=proposer,
        requested_by="alice@acme.example",
    )
    assert check(authority, sign_event(s.ActionProposed.build(data, source=source), alice)) is None
    assert check(authority, sign_as_client(kit, task().model_copy(update={"source": "tidegate/cli"}))) is None  # the CLI's own


def test_a_revoked_client_key_is_refused(kit: KitSettings, authority: Authority) -> None:
    event = sign_as_client(kit, task())
    assert check(authority, event) is None
    pub = kit.client_keys_dir / "acme" / "alice@acme.example.pub"
    (kit.client_keys_dir / "acme" / "revoked").mkdir()
    pub.rename(kit.client_keys_dir / "acme" / "revoked" / pub.name)
    assert check(authority, event) == "unknown_key"


def test_a_reader_of_history_verifies_what_a_revoked_client_signed_before_its_revocation_and_nothing_after(kit: KitSettings) -> None:
    """docs/security/signatures.md keeps a revoked key for old records: the audit's history reader must use it (auditor2 N4).

    Without it, `verify --signatures` named an agent's genuine rows as forged once its key was revoked, and `explain` headed
    its tasks with "not evidence".
    """
    event = sign_as_client(kit, task())
    raw = wire(event)
    pub = kit.client_keys_dir / "acme" / "alice@acme.example.pub"
    (kit.client_keys_dir / "acme" / "revoked").mkdir()
    pub.rename(kit.client_keys_dir / "acme" / "revoked" / pub.name)
    revoked_at = (kit.client_keys_dir / "acme" / "revoked" / pub.name).stat().st_ctime
    history = deployment_authority(kit, history=True)

    def appended(at: float) -> str | None:
        refusal = history.check(raw, s.decode_any(raw), appended_ms=int(at * 1000))
        return None if refusal is None else refusal.code

    assert appended(revoked_at - 60) is None  # signed and appended while the key was registered
    assert appended(revoked_at + 1) == "signer_retired"  # appended after its revocation: refused, whatever its grace
    assert check(deployment_authority(kit), event) == "unknown_key"  # a live service: refused at once, as before


def test_tool_replies_need_the_key_the_catalog_names(kit: KitSettings, tmp_path: Path) -> None:
    spec = s.ToolSpec(name="inv", description="d", args_schema={}, risk="write_low", kind="topic", reply_key_file="tools/inv.pub")  # type: ignore[arg-type]
    authority = deployment_authority(kit, {"inv": spec})
    inv, other = SigningKey.load_or_create(kit.keys_dir / "tools", "inv"), SigningKey.load_or_create(kit.keys_dir / "tools", "other")

    def reply(tool: str) -> s.ToolReply:
        return s.ToolReply.build(s.ToolReplyData(action_id="a", task_id="t", tenant_id="acme", tool=tool, ok=True), source="w")

    assert check(authority, sign_event(reply("inv"), inv)) is None
    assert check(authority, sign_event(reply("inv"), other)) == "unknown_key"  # not in the catalog
    assert check(authority, sign_event(reply("inv"), service_key(kit, "executor"))) == "signer_not_allowed"


def test_two_holders_of_one_key_id_do_not_lend_each_other_their_rights(
    kit: KitSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key id is a name and 48 bits of the key's hash: a client registered under a tool's name, given a collision,
    shares the tool's key id. Its signature must not be judged with the tool's rights (simulated: ids without the hash)."""
    import servicekit.authority as authority_module

    monkeypatch.setattr(authority_module, "key_id_of", lambda name, public: f"{name}-000000000000")
    spec = s.ToolSpec(name="inv", description="d", args_schema={}, risk="write_low", kind="topic", reply_key_file="tools/inv.pub")  # type: ignore[arg-type]
    tool = SigningKey.load_or_create(kit.keys_dir / "tools", "inv")
    mallory = client_key(kit, "acme", "inv")  # loads before the tool's key: the first holder of the shared id
    authority = deployment_authority(kit, {"inv": spec})
    assert [p.kind for p in authority.principals("inv-000000000000")] == ["client", "tool"]
    reply = s.ToolReply.build(s.ToolReplyData(action_id="a", task_id="t", tenant_id="acme", tool="inv", ok=True), source="w")
    forged = reply.model_copy(update={"keyid": "inv-000000000000"})
    forged = forged.model_copy(
        update={"signature": mallory.sign(authority_module.signed_bytes(forged.model_dump(mode="json", exclude_none=True)))}
    )
    assert check(authority, forged) == "signer_not_allowed"  # the client's key verifies, and a client may not reply for a tool
    genuine = reply.model_copy(update={"keyid": "inv-000000000000"})
    genuine = genuine.model_copy(
        update={"signature": tool.sign(authority_module.signed_bytes(genuine.model_dump(mode="json", exclude_none=True)))}
    )
    assert check(authority, genuine) is None  # the tool's own key still does, though it is not the first holder


def test_control_needs_an_operator_on_the_allow_list_and_a_sequence(kit: KitSettings, authority: Authority, tmp_path: Path) -> None:
    assert check(authority, sign_as_operator(kit, killswitch())) is None
    assert check(authority, sign_event(killswitch(), service_key(kit, "policy"))) == "signer_not_allowed"
    outsider = SigningKey.load_or_create(tmp_path / "not-on-the-list", "operator")
    assert check(authority, sign_event(killswitch(), outsider, sequence=time.time_ns())) == "unknown_key"
    operator = operator_key(kit)
    assert check(authority, sign_event(killswitch(), operator)) == "control_replayed"  # no sequence


def test_a_control_record_names_the_operator_whose_key_signed_it(kit: KitSettings, authority: Authority) -> None:
    operator = operator_key(kit)
    framed = sign_event(killswitch(set_by="alice"), operator, sequence=time.time_ns())  # blaming a colleague
    assert check(authority, framed) == "signer_not_allowed"
    policy = s.ControlPolicy.build(s.ControlPolicyData(version="v", files={}, published_by="security"), source="tidegate/cli")
    assert check(authority, sign_event(policy, operator, sequence=time.time_ns())) == "signer_not_allowed"
    stamped = sign_as_operator(kit, killswitch(set_by="alice"))  # the CLI names the key's holder, whatever was typed
    assert stamped.data.set_by == kit.operator
    assert check(authority, stamped) is None
    assert sign_as_operator(kit, policy).data.published_by == kit.operator


def test_the_approval_service_may_sign_a_tenants_directory_and_nothing_else_of_its_settings(kit: KitSettings, authority: Authority) -> None:
    approval = service_key(kit, "approval")
    directory = s.DirectoryUpdated.build(
        s.DirectoryUpdatedData(tenant_id="acme", directory=s.TenantDirectory(known_contacts=["ap@x.example"]), set_by="root"),
        source="tidegate/approval",
    )
    assert check(authority, sign_event(directory, approval, sequence=time.time_ns())) is None
    assert check(authority, sign_event(directory, approval)) == "control_replayed"  # no sequence
    assert check(authority, sign_as_operator(kit, directory)) is None  # an operator may too
    assert check(authority, sign_event(directory, service_key(kit, "policy"), sequence=time.time_ns())) == "signer_not_allowed"
    # mode, thresholds, triggers and budgets travel in `control.tenant`: the approval key may not sign one
    mode = s.ControlTenant.build(s.ControlTenantData(tenant_id="acme", settings={"allow_autonomous": True}, set_by="root"), source="x")
    assert check(authority, sign_event(mode, approval, sequence=time.time_ns())) == "signer_not_allowed"
    # and a directory record cannot carry them: the contract has no such field
    doc = json.loads(wire(directory))
    doc["data"]["directory"]["allow_autonomous"] = True
    with pytest.raises(ValidationError):
        s.decode("directory", json.dumps(doc))


async def test_control_state_refuses_replayed_and_older_records(kit: KitSettings) -> None:
    set_a, set_b, clear_a = (sign_as_operator(kit, e) for e in (killswitch(True), killswitch(True, "send_email"), killswitch(False)))
    full = ControlState()
    for event in (set_a, set_b, clear_a):
        await full.apply(event)
    with pytest.raises(Reject) as replayed:
        await full.apply(set_a)  # an attacker re-publishes the old "set" after the "clear"
    assert replayed.value.code == "control_replayed"
    with pytest.raises(Reject):
        await full.apply(clear_a)  # the very same record again
    assert full.killswitches.keys() == {("*", "send_email")}
    with pytest.raises(Reject) as unsigned:
        await ControlState().apply(killswitch())
    assert unsigned.value.code == "signature_missing"


async def replay_from_start(log: Sequence[s.Envelope]) -> ControlState:
    """What a service that (re)starts knows: every record the topic holds, applied in offset order, refusals skipped."""
    state = ControlState()
    for event in log:
        with contextlib.suppress(Reject):
            await state.apply(event)
    return state


async def test_a_replayed_clear_never_wins_after_a_restart_because_control_keeps_every_record(kit: KitSettings) -> None:
    old_clear, switch = (sign_as_operator(kit, e) for e in (killswitch(False), killswitch(True)))
    log = [old_clear, switch, old_clear]  # an insider with the ops login re-sends the old, genuinely signed clear
    assert s.TOPICS["control"].kafka_config()["cleanup.policy"] == "delete"  # so after a restart the log is still whole
    assert (await replay_from_start(log)).killed("acme", "issue_refund") is switch
    # What compaction would have left (the last record per key by offset): the replay alone, and the switch off.
    compacted = list({event.key: event for event in log}.values())
    assert (await replay_from_start(compacted)).killed("acme", "issue_refund") is None


def test_rotation_keeps_old_signatures_verifiable_and_retires_the_old_private_key(kit: KitSettings) -> None:
    old = service_key(kit, "policy")
    authority = deployment_authority(kit)
    before = sign_event(decided(), old)
    old_id, new_id = rotate(kit.keys_dir, "policy")
    assert (old_id, new_id != old_id) == (old.key_id, True)
    assert [p.name for p in (kit.keys_dir / "policy").iterdir()] == ["policy.key"]  # one private key: the new one
    assert service_key(kit, "policy").key_id == new_id
    assert check(authority, before) is None  # what the retired key signed still verifies, by its id
    assert check(authority, sign_event(decided(), service_key(kit, "policy"))) is None


def test_the_signature_covers_the_bytes_sent_even_from_a_hand_written_producer(kit: KitSettings, authority: Authority) -> None:
    # An outside producer signs its own JSON (fields in any order, no defaults filled, `+00:00` times).
    key = client_key(kit, "acme", "byoa@acme.example")
    doc = {
        "type": "tidegate.task.submitted",
        "specversion": "1.0",
        "id": "e-1",
        "source": "urn:x",
        "time": datetime.now(UTC).isoformat(),
        "tenantid": "acme",
        "data": {"task_id": "t", "tenant_id": "acme", "workflow": "w", "input": {}, "requested_by": "byoa@acme.example"},
        "keyid": key.key_id,
    }
    from servicekit.authority import signed_bytes

    raw = json.dumps({**doc, "signature": key.sign(signed_bytes(doc))}).encode()
    assert authority.check(raw, s.decode_any(raw)) is None


@pytest.mark.parametrize("attribute", ["id", "source", "specversion", "type", "time", "tenantid"])
def test_a_missing_required_attribute_is_invalid_and_never_invented(attribute: str) -> None:
    doc = json.loads(wire(task()))
    del doc[attribute]
    with pytest.raises(ValidationError):
        s.decode("tasks", json.dumps(doc))


def test_the_envelope_tenant_must_be_the_data_tenant() -> None:
    doc = json.loads(wire(task()))
    doc["tenantid"] = "globex"
    with pytest.raises(ValidationError, match=r"differs from data\.tenant_id"):
        s.decode("tasks", json.dumps(doc))
    assert s.decode("tasks", wire(task())).tenantid == "acme"
    assert s.decode("control", wire(killswitch())).tenantid == "*"


def test_signing_and_verifying_one_event_costs(kit: KitSettings, authority: Authority) -> None:
    key, event = service_key(kit, "policy"), decided()
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        signed = sign_event(event, key)
    sign_us = (time.perf_counter() - started) / n * 1e6
    raw = wire(signed)
    decoded = s.decode_any(raw)
    started = time.perf_counter()
    for _ in range(n):
        assert authority.check(raw, decoded) is None
    verify_us = (time.perf_counter() - started) / n * 1e6
    print(f"\nsign one action.decided: {sign_us:.1f} µs; verify: {verify_us:.1f} µs ({len(raw)} bytes)")


def test_sign_as_producer_picks_the_rightful_key_for_every_type(kit: KitSettings, authority: Authority) -> None:
    from schemas.examples import sample_events
    from servicekit import sign_as_producer

    for _, event in sample_events():
        if event.type == "tidegate.tool.reply":
            continue  # needs a catalog naming the tool's key (tested above)
        assert check(authority, sign_as_producer(kit, event)) is None, event.type


def test_a_retired_key_signs_nothing_new_once_its_grace_has_passed(kit: KitSettings) -> None:
    stolen = service_key(kit, "policy")  # an attacker kept a copy of the private key that is about to be retired
    rotated_at = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
    rotate(kit.keys_dir, "policy", now=rotated_at)
    at = rotated_at.timestamp()
    live = Authority(kit.keys_dir, kit.operator_keys_dir, kit.client_keys_dir, retired_grace_s=600, clock=lambda: at + 599)
    event = sign_event(decided(), stolen)
    assert live.check(wire(event), event) is None  # in-flight events of the old key still count, for the grace window
    live.clock = lambda: at + 601
    refusal = live.check(wire(event), event)
    assert refusal is not None
    assert (refusal.code, refusal.message) == ("signer_retired", f"key {stolen.key_id} was retired, and signs nothing new")
    fresh = sign_event(decided(), service_key(kit, "policy"))
    assert live.check(wire(fresh), fresh) is None  # the new key
    history = deployment_authority(kit, history=True)  # the audit log and replay read what the old key signed, forever
    history.clock = lambda: at + 10**9
    assert history.check(wire(event), event) is None


def test_a_retired_operator_key_keeps_its_control_records_by_the_brokers_append_time(kit: KitSettings) -> None:
    """`control` is read again from the start at every restart: what the broker appended in time stays obeyed, nothing later."""
    stolen = sign_as_operator(kit, killswitch(False))  # signed before the rotation
    rotated_at = datetime(2026, 12, 1, 4, 0, tzinfo=UTC).timestamp()
    rotate(kit.operator_keys_dir, "operator", now=datetime.fromtimestamp(rotated_at, UTC), private_dir=kit.operator_private_keys_dir)
    restarted = deployment_authority(kit)
    restarted.clock = lambda: rotated_at + 86_400  # a day later
    appended_ms = int((rotated_at - 60) * 1000)
    assert restarted.check(wire(stolen), stolen, appended_ms=appended_ms) is None
    late = restarted.check(wire(stolen), stolen, appended_ms=int((rotated_at + 601) * 1000))  # re-sent by whoever kept the key
    assert late is not None
    assert late.code == "signer_retired"
    assert kit.retired_key_grace_s == 600


def test_a_denied_operator_key_has_no_grace_but_keeps_what_was_appended_before(kit: KitSettings) -> None:
    record = sign_as_operator(kit, killswitch(False))
    denied_at = datetime(2026, 12, 1, 4, 0, tzinfo=UTC).timestamp()
    retire(kit.operator_keys_dir, "operator", now=datetime.fromtimestamp(denied_at, UTC), grace=False)
    restarted = deployment_authority(kit)
    assert restarted.check(wire(record), record, appended_ms=int((denied_at - 1) * 1000)) is None
    late = restarted.check(wire(record), record, appended_ms=int((denied_at + 1) * 1000))  # within a rotation's 600 s grace
    assert late is not None
    assert late.code == "signer_retired"
