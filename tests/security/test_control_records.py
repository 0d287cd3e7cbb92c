"""An insider with the `ops` bus login (a plain Kafka client) writes forged or replayed `control` records; none of them wins.

A forged `control.tenant` is neither shown by the CLI nor laundered by `tidegate tenant set`; an old, genuinely
signed kill-switch clear sent again never outlives the newer switch, even when read again from the start.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

import schemas as s
from servicekit import (
    ADMIN,
    OPS,
    REPO_ROOT,
    KitSettings,
    catalog_topic_names,
    ensure_topics,
    kafka_options,
    next_sequence,
    operator_key,
    sign_as_operator,
    sign_event,
)
from servicekit.signing import rotate
from tidegate.commands.killswitch import publish_killswitch, read_control
from tidegate.ops.control import read_trusted_control


def tidegate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tidegate.cli", *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


async def send_as_ops(kit: KitSettings, raw: bytes, key: bytes) -> None:
    """What the insider can do with the `ops` login: write any bytes to `control`."""
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, OPS))
    await producer.start()
    try:
        await producer.send_and_wait(f"{kit.topic_prefix}control", raw, key=key)
    finally:
        await producer.stop()


async def forge(kit: KitSettings, keyid: str) -> None:
    """A `control.tenant` that makes initech autonomous, with the operator's key id and a made-up signature."""
    data = s.ControlTenantData(tenant_id="initech", settings={"allow_autonomous": True}, set_by="operator")
    document = json.loads(s.encode(s.ControlTenant.build(data, source="tidegate/cli")))
    document |= {"keyid": keyid, "signature": "junk", "sequence": 2**62}
    await send_as_ops(kit, json.dumps(document).encode(), b"tenant:initech")


def test_a_forged_tenant_record_is_neither_current_nor_laundered_by_tenant_set(infra: Any, prefix: str, tmp_path: Path) -> None:
    asyncio.run(ensure_topics(infra.kafka_bootstrap, prefix, catalog_topic_names()))
    kit = KitSettings(kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=prefix, keys_dir=tmp_path / "keys")
    env = os.environ | {
        "TIDEGATE_TOPIC_PREFIX": prefix,
        "TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "COLUMNS": "200",
    }
    added = tidegate(env, "tenant", "add", "initech", "--draft")
    assert added.returncode == 0, added.stderr
    genuine = asyncio.run(read_control(kit)).tenants["initech"]
    assert genuine.settings == {"allow_autonomous": False}
    asyncio.run(forge(kit, operator_key(kit).key_id))

    assert asyncio.run(read_control(kit)).tenants["initech"].settings == {"allow_autonomous": False}
    changed = tidegate(env, "tenant", "set", "initech", "--refund-threshold", "100")
    assert changed.returncode == 0, changed.stderr
    assert "skipped control record" in changed.stderr
    assert "signature_invalid" in changed.stderr
    assert asyncio.run(read_control(kit)).tenants["initech"].settings == {"allow_autonomous": False, "refund_threshold_usd": 100.0}


async def topic_config(kit: KitSettings, name: str, key: str = "cleanup.policy") -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        topic = kit.topic_prefix + name
        described: Any = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {key: None})])
        return str(described[0].resources[0][4][0][1])
    finally:
        await admin.close()


async def test_a_replayed_clear_never_outlives_the_newer_switch(kit: KitSettings) -> None:
    assert [await topic_config(kit, name) for name in ("control", "directory")] == ["delete", "delete"]
    clear = s.ControlKillswitchData(tenant_id="acme", tool="issue_refund", active=False, reason="", set_by="oncall")
    old_clear = sign_as_operator(kit, s.ControlKillswitch.build(clear, source="tidegate/cli"))
    await send_as_ops(kit, s.encode(old_clear), old_clear.key or b"")  # the operator's genuine clear
    await publish_killswitch(kit, tenant="acme", tool="issue_refund", active=True, reason="incident", set_by="oncall")
    await send_as_ops(kit, s.encode(old_clear), old_clear.key or b"")  # the captured clear, genuinely signed, sent again

    state = await read_control(kit)  # a service or CLI (re)starting: the whole topic from the beginning
    assert state.killed("acme", "issue_refund") is not None


async def test_ensure_topics_turns_a_compacted_control_into_a_kept_one(kit: KitSettings, wait_for: Any) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:  # `control` as an older release made it
        topic = kit.topic_prefix + "control"
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": "compact", "retention.ms": "-1"})])
    finally:
        await admin.close()
    await wait_for(lambda: is_policy(kit, "compact"), what="control compacted")  # an altered config reaches the broker a moment later
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names())
    await wait_for(lambda: is_policy(kit, "delete"), what="control back to delete-policy")


async def is_policy(kit: KitSettings, policy: str) -> bool:
    return await topic_config(kit, "control") == policy


async def test_a_stolen_retired_operator_key_signs_nothing_new_and_its_old_records_stay(kit: KitSettings) -> None:
    kit = kit.model_copy(update={"retired_key_grace_s": 0.0})  # no grace: anything appended after the rotation is refused
    assert await topic_config(kit, "control", "message.timestamp.type") == "LogAppendTime"  # stamped by the broker
    await publish_killswitch(kit, tenant="acme", tool="issue_refund", active=True, reason="incident", set_by="oncall")
    stolen = operator_key(kit)  # a copy of the private key, kept by whoever leaves
    rotate(kit.operator_keys_dir, kit.operator, private_dir=kit.operator_private_keys_dir)
    clear = s.ControlKillswitchData(tenant_id="acme", tool="issue_refund", active=False, reason="", set_by="oncall")
    forged = sign_event(s.ControlKillswitch.build(clear, source="tidegate/cli"), stolen, sequence=next_sequence())
    await send_as_ops(kit, s.encode(forged), forged.key or b"")

    accepted: list[s.Envelope] = []
    skipped: list[str] = []
    state = await read_trusted_control(kit, accepted=accepted, on_skip=lambda _offset, why: skipped.append(why))
    assert state.killed("acme", "issue_refund") is not None  # the switch set before the rotation still holds
    assert len(accepted) == 1
    assert [why.split(":")[0] for why in skipped] == ["signer_retired"]


async def test_a_denied_operator_signs_nothing_new_and_what_it_set_before_survives_a_restart(kit: KitSettings) -> None:
    await publish_killswitch(kit, tenant="acme", tool="issue_refund", active=True, reason="incident", set_by=kit.operator)
    kept = operator_key(kit)  # the denied operator still holds the private key
    env = os.environ | {"TIDEGATE_KEYS_DIR": str(kit.keys_dir), "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix}
    denied = await asyncio.to_thread(tidegate, env, "keys", "deny-operator", kit.operator)
    assert denied.returncode == 0, denied.stderr
    clear = s.ControlKillswitchData(tenant_id="acme", tool="issue_refund", active=False, reason="", set_by=kit.operator)
    late = sign_event(s.ControlKillswitch.build(clear, source="tidegate/cli"), kept, sequence=next_sequence())
    await send_as_ops(kit, s.encode(late), late.key or b"")

    # A service restarting (the default grace of a rotation, 600 s, does not apply to a denial): control from the start.
    skipped: list[str] = []
    state = await read_trusted_control(kit, on_skip=lambda _offset, why: skipped.append(why))
    assert state.killed("acme", "issue_refund") is not None  # the switch the operator set before the denial holds
    assert [why.split(":")[0] for why in skipped] == ["signer_retired"]
    listed = await asyncio.to_thread(tidegate, env, "keys", "list")
    assert f"operator  {kit.operator:<10} {kept.key_id}  denied" in listed.stdout
    cleared = await asyncio.to_thread(tidegate, env, "killswitch", "clear", "--tenant", "acme", "--tool", "issue_refund")
    assert cleared.returncode == 1  # the CLI does not quietly put the denied key back on the allow-list
    assert "was retired or denied" in cleared.stderr
