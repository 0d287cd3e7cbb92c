"""A start resumes `control` from its sealed checkpoint: junk the `ops` login appended is read once, not at every start.

`control` is kept forever and every service reads it whole before it serves; 100,000 unsigned records appended with
`ops.properties` alone (no operator key) made each start of the policy read and dead-letter them again for two
minutes (reviewer F6, bounds F5). With `TIDEGATE_START_CHECKPOINTS` a service keeps, sealed with its own key, the
records it accepted and how far it read; the next start handles those again (every check, today's keys) and reads on
from there. The attacker here is a plain producer with the `ops` login, on the real broker, and whoever can write the
checkpoint's folder.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from aiokafka import AIOKafkaProducer

from servicekit import OPS, ControlState, KitSettings, deployment_authority, kafka_options, service_bus, service_key
from servicekit.start_checkpoint import read_checkpoint, write_checkpoint
from tidegate.commands.killswitch import publish_killswitch

JUNK = 2_000


async def append_junk(kit: KitSettings, count: int) -> None:
    """As the holder of `ops.properties` only: unsigned records on `control`."""
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, linger_ms=10, **kafka_options(kit, OPS))
    await producer.start()
    try:
        junk = json.dumps({"specversion": "1.0", "type": "tidegate.control.killswitch", "id": "j"}).encode()
        for _ in range(count):
            await producer.send(kit.topic_prefix + "control", junk, key=b"junk")
        await producer.flush()
    finally:
        await producer.stop()


async def start_policy(kit: KitSettings) -> tuple[ControlState, int]:
    """A policy's bus reading `control` as the service does at its start: the state it reached, and how much it dead-lettered."""
    control = ControlState()
    bus = service_bus(kit, "policy", signer=service_key(kit, "policy"), authority=deployment_authority(kit))
    bus.consume("control", control.apply, group_id=None)
    await bus.start()
    try:
        await bus.wait_caught_up("control", while_progressing=True)
        bus.save_checkpoints()
        return control, bus.rejected
    finally:
        await bus.stop()


async def test_junk_on_control_is_read_once_and_every_switch_stays(kit: KitSettings, tmp_path: Path) -> None:
    kit = kit.model_copy(update={"start_checkpoints": True, "run_dir": tmp_path / "run"})
    await publish_killswitch(kit, tenant="acme", tool="issue_refund", active=True, reason="incident", set_by="oncall")
    state, refused = await start_policy(kit)
    assert state.killed("acme", "issue_refund") is not None
    assert refused == 0

    await append_junk(kit, JUNK)
    await publish_killswitch(kit, tenant="*", tool="send_email", active=True, reason="spam", set_by="oncall")  # after the junk
    state, refused = await start_policy(kit)  # the junk's first reading: dead-lettered once
    assert refused == JUNK
    assert state.killed("acme", "issue_refund") is not None
    assert state.killed("globex", "send_email") is not None

    state, refused = await start_policy(kit)  # and never again
    assert refused == 0
    assert state.killed("acme", "issue_refund") is not None
    assert state.killed("globex", "send_email") is not None
    assert state.sequences  # the kept records' sequences: a replay of an older one is still refused

    # Whoever can write the folder drops the kill switch from the checkpoint: the seal no longer holds, read whole.
    [path] = (tmp_path / "run" / "checkpoints").glob("policy.*control*.json")
    document = json.loads(path.read_text())
    kept = document["checkpoint"]["kept"]
    document["checkpoint"]["kept"] = [k for k in kept if b"send_email" not in base64.b64decode(k["value"])]
    assert len(document["checkpoint"]["kept"]) == len(kept) - 1
    path.write_text(json.dumps(document))
    state, refused = await start_policy(kit)
    assert refused == JUNK  # read whole again
    assert state.killed("globex", "send_email") is not None


async def test_a_checkpoint_of_a_topic_since_recreated_is_not_followed(kit: KitSettings, tmp_path: Path) -> None:
    """The checkpoint names the last record it read: a `control` recreated under the same name (fewer records, or others at
    those offsets) is read whole, so no switch set on the new topic below the old checkpoint's offset is skipped."""
    kit = kit.model_copy(update={"start_checkpoints": True, "run_dir": tmp_path / "run"})
    await append_junk(kit, 5)
    await publish_killswitch(kit, tenant="acme", tool="issue_refund", active=True, reason="incident", set_by="oncall")
    await start_policy(kit)
    [path] = (tmp_path / "run" / "checkpoints").glob("policy.*control*.json")
    checkpoint = read_checkpoint(path.parent, "policy", service_key(kit, "policy"), kit.topic_prefix + "control", 0)
    assert checkpoint is not None
    checkpoint.last_sha256 = "0" * 64  # as if another record stood at its last offset now (sealed by the service's key)
    write_checkpoint(path.parent, "policy", service_key(kit, "policy"), checkpoint)
    state, refused = await start_policy(kit)
    assert refused == 5  # read whole
    assert state.killed("acme", "issue_refund") is not None
