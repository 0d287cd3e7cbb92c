"""An insider with the `ops` bus login but not the operator key writes a forged `control.tenant`; the CLI neither shows nor launders it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

import schemas as s
from servicekit import OPS, REPO_ROOT, KitSettings, catalog_topic_names, ensure_topics, kafka_options, operator_key
from tidegate.commands.killswitch import read_control


def tidegate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tidegate.cli", *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


async def forge(kit: KitSettings, keyid: str) -> None:
    """A `control.tenant` that makes initech autonomous, with the operator's key id and a made-up signature, written as `ops`."""
    data = s.ControlTenantData(tenant_id="initech", settings={"allow_autonomous": True}, set_by="operator")
    document = json.loads(s.encode(s.ControlTenant.build(data, source="tidegate/cli")))
    document |= {"keyid": keyid, "signature": "junk", "sequence": 2**62}
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, OPS))
    await producer.start()
    try:
        await producer.send_and_wait(f"{kit.topic_prefix}control", json.dumps(document).encode(), key=b"tenant:initech")
    finally:
        await producer.stop()


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
