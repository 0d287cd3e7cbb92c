"""A dead letter names the service that refused the record, and only that service's key may say so.

The reviewer's F5: `event.rejected` could be signed by any service's key whatever service its data named. An insider
with one service's key (the planner's, say) and its bus login wrote dead letters saying the policy had refused a
proposal, or the executor an authorization, that they had in fact allowed and run; the audit log recorded them as
valid, and `tidegate audit search --dead-letters` showed them as the policy's or the executor's refusals.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import schemas as s
from servicekit import SERVICES, KitSettings, deployment_authority, service_key, sign_event


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()
    return KitSettings(keys_dir=tmp_path / "keys")


# A topic each service reads (a service dead-letters only records it consumed: the deadprov tests below).
READS = {
    "planner": "tasks", "policy": "actions.proposed", "approval": "actions.decided", "executor": "actions.authorized",
    "audit": "actions.authorized",
}  # fmt: skip


def dead_letter(service: str) -> s.EventRejected:
    raw = '{"type": "tidegate.action.authorized", "tenantid": "acme", "subject": "t-1"}'  # the record of the tenant and task it names
    data = s.EventRejectedData(
        tenant_id="acme", task_id="t-1", topic=f"tidegate.{READS[service]}", partition=0, offset=7, key="t-1", raw_value=raw,
        size=len(raw), sha256=hashlib.sha256(raw.encode()).hexdigest(), code="authorization_replayed",
        error="differs and is not executed", service=service,
    )  # fmt: skip
    return s.EventRejected.build(data, source=f"tidegate/{service}")


def verdict(kit: KitSettings, event: s.EventRejected, *, history: bool = False) -> str | None:
    raw = s.encode(event)
    refusal = deployment_authority(kit, history=history).check(raw, s.decode_any(raw))
    return None if refusal is None else refusal.code


def test_a_service_key_signs_dead_letters_in_its_own_name_only(kit: KitSettings) -> None:
    for signer in SERVICES:
        key = service_key(kit, signer)
        for named in SERVICES:
            expected = None if named == signer else "signer_not_allowed"
            assert verdict(kit, sign_event(dead_letter(named), key)) == expected, (signer, named)


def test_the_audit_log_reads_a_dead_letter_forged_in_the_executors_name_as_not_valid(kit: KitSettings) -> None:
    forged = sign_event(dead_letter("executor"), service_key(kit, "planner"))
    assert verdict(kit, forged, history=True) == "signer_not_allowed"


# --- deadprov: a service's stolen key and Kafka login (bindattack B6) -------------------------------------------------
# The attacker holds the executor's key and login (it may write `deadletter`). It signs dead letters in the executor's own
# name, as the check above requires, and makes them lie about the record instead: one the executor never read (the
# policy's `actions.proposed`: "lost" alarms the on-call chases in the wrong service), or a record of globex filed under
# acme (acme's on-call sees globex's record as acme's loss). The readers (`dead-letters list`, `audit search`) take the
# audit log's verdict: these must be refused there, and every dead letter a service really writes must still pass.


def _record(tenant: str, task: str, topic: str = "tidegate.actions.authorized") -> tuple[str, bytes]:
    data = s.ActionProposedData(
        action_id="a-9", task_id=task, tenant_id=tenant, step=1, tool="tag_ticket", args={"ticket_id": "T-1"}, proposer="agent"
    )
    return topic, s.encode(s.ActionProposed.build(data, source="agent"))


def _forged(topic: str, raw: bytes, *, tenant: str, task: str | None, service: str = "executor") -> s.EventRejected:
    data = s.EventRejectedData(
        tenant_id=tenant, task_id=task, topic=topic, partition=0, offset=3, key=task, raw_value=raw.decode(), size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(), code="handler_error", error="lost", service=service,
    )  # fmt: skip
    return s.EventRejected.build(data, source=f"tidegate/{service}")


def test_a_stolen_executor_key_cannot_dead_letter_a_record_of_a_topic_the_executor_never_reads(kit: KitSettings) -> None:
    topic, raw = _record("acme", "t-1", "tidegate.actions.proposed")
    forged = sign_event(_forged(topic, raw, tenant="acme", task="t-1"), service_key(kit, "executor"))
    refusal = deployment_authority(kit, history=True).check(s.encode(forged), forged)
    assert refusal is not None
    assert refusal.code == "signer_not_allowed"
    assert "executor reads no topic" in refusal.message


def test_a_stolen_executor_key_cannot_file_another_tenants_record_under_a_tenant_of_its_choice(kit: KitSettings) -> None:
    topic, raw = _record("globex", "g-7")
    key = service_key(kit, "executor")
    for tenant, task in (("acme", "g-7"), ("acme", None), ("globex", "t-1")):
        forged = sign_event(_forged(topic, raw, tenant=tenant, task=task), key)
        refusal = deployment_authority(kit, history=True).check(s.encode(forged), forged)
        assert refusal is not None, (tenant, task)
        assert refusal.code == "signer_not_allowed", (tenant, task)
        assert "the record it carries is of" in refusal.message
    honest = sign_event(_forged(topic, raw, tenant="globex", task="g-7"), key)
    assert deployment_authority(kit, history=True).check(s.encode(honest), honest) is None


@pytest.mark.parametrize(
    ("service", "topic"),
    [
        ("planner", "tidegate.tasks"), ("policy", "tidegate.actions.proposed"), ("approval", "tidegate.actions.decided"),
        ("executor", "tidegate.actions.authorized"), ("executor", "tidegate.tools.crm.replies"), ("audit", "tidegate.anything"),
        ("policy", "sandbox.replay-1.directory"),
    ],
)  # fmt: skip
@pytest.mark.parametrize(
    "value",
    [
        b'{"tenantid": "acme", "subject": "t-1", "data": {}}', b'{"data": {"tenant_id": "acme", "task_id": "t-1"}}',
        b'{"tenantid": "ac\\ud800me", "subject": "t\\u0000-1"}', b"not json \xff\x00", b"[" * 5000, b'{"tenantid": 7}',
        b'{"tenantid": "' + b"x" * 70000 + b'"}', b"",
    ],
)  # fmt: skip
async def test_every_dead_letter_a_service_writes_of_a_record_it_read_still_verifies(
    kit: KitSettings, service: str, topic: str, value: bytes
) -> None:
    from fake_producer import KeepingProducer

    from servicekit import Bus

    broker = KeepingProducer()
    bus = Bus(broker, service, "unused:1", "tidegate.")
    record = type("R", (), {"topic": topic, "value": value, "partition": 1, "offset": 5, "key": b"k", "headers": ()})()
    await bus.dead_letter(record, topic, "handler_error", "boom")  # type: ignore[arg-type]
    [(_, raw)] = [(t, r) for t, r in broker.published if t == "tidegate.deadletter"]
    genuine = sign_event(s.decode("deadletter", raw), service_key(kit, service))
    assert deployment_authority(kit, history=True).check(s.encode(genuine), genuine) is None
