"""A tenant the policy pack onboards (its `settings.yaml`) keeps its settings when an admin changes one with `tidegate tenant`.

A `control.tenant` record replaces the pack's entry for its tenant (`PackSettings.from_records`). `tenant add acme
--setting min_confidence=0.5` used to publish a record of that one setting (acme had no record yet), so every other
setting the pack gives acme fell back to the pack's `default`: autonomous mode off, its internal domain, known payees and
budget gone; `tenant set acme` refused acme as not onboarded. Now `add` refuses a tenant the pack onboards, naming `set`,
and `set` starts from the pack's entry.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas import DirectoryUpdated, DirectoryUpdatedData, TenantDirectory, encode
from servicekit import ADMIN, KitSettings, catalog_topic_names, ensure_topics, kafka_options
from tests.integration.policy.test_tenant_cli import tidegate
from tests.signers import as_operator
from tidegate.commands.killswitch import read_control


def _shown(env: dict[str, str], tenant: str) -> dict[str, Any]:
    """`tidegate tenant show <tenant>`'s effective settings (after its `<tenant>: from …` line)."""
    shown = tidegate(env, "tenant", "show", tenant)
    assert shown.returncode == 0, shown.stderr
    first, _, settings = shown.stdout.partition("\n")
    assert first.startswith(f"{tenant}: from "), shown.stdout
    doc: dict[str, Any] = json.loads(settings)
    return doc


def test_a_setting_given_for_a_tenant_the_pack_onboards_changes_that_setting_only(infra: Any, prefix: str) -> None:
    asyncio.run(ensure_topics(infra.kafka_bootstrap, prefix, catalog_topic_names()))
    env = os.environ | {"TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "COLUMNS": "200"}
    kit = KitSettings(kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=prefix)
    before = _shown(env, "acme")
    assert (before["allow_autonomous"], before["internal_domains"], before["budget_usd"]) == (True, ["acme.example"], 50)  # the pack's acme

    added = tidegate(env, "tenant", "add", "acme", "--setting", "min_confidence=0.5", "--by", "admin")
    assert added.returncode != 0, added.stdout
    assert "tenant 'acme' is already onboarded (by the policy pack's settings.yaml)" in added.stderr
    assert "change it with `tidegate tenant set acme …`" in added.stderr
    assert "acme" not in asyncio.run(read_control(kit)).tenants  # nothing was published

    changed = tidegate(env, "tenant", "set", "acme", "--setting", "min_confidence=0.5", "--by", "admin")
    assert changed.returncode == 0, changed.stderr
    assert _shown(env, "acme") == before | {"min_confidence": 0.5}


def test_set_names_add_for_a_tenant_onboarded_over_the_approval_api(infra: Any, prefix: str) -> None:
    """A tenant onboarded by `POST /api/v1/tenants` has a `directory` record and no settings: `set` says `add` gives it its first."""
    asyncio.run(ensure_topics(infra.kafka_bootstrap, prefix, catalog_topic_names()))
    env = os.environ | {"TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "COLUMNS": "200"}
    kit = KitSettings(kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=prefix)
    onboarded = DirectoryUpdated.build(
        DirectoryUpdatedData(tenant_id="initech", directory=TenantDirectory(), set_by="ops"), source="tidegate/approval"
    )

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, ADMIN))
        await producer.start()
        try:
            event = as_operator(onboarded, kit)  # what `POST /api/v1/tenants` publishes, signed as the CLI signs
            await producer.send_and_wait(prefix + "directory", encode(event), key=event.key)
        finally:
            await producer.stop()

    asyncio.run(publish())
    changed = tidegate(env, "tenant", "set", "initech", "--setting", "min_confidence=0.5", "--by", "admin")
    assert changed.returncode != 0, changed.stdout
    assert "tenant 'initech' has no settings of its own yet (onboarded over the approval API)" in changed.stderr
    assert "`tidegate tenant add initech …` gives it its first" in changed.stderr
    assert "initech" not in asyncio.run(read_control(kit)).tenants  # nothing was published
    added = tidegate(env, "tenant", "add", "initech", "--setting", "min_confidence=0.5", "--by", "admin")
    assert added.returncode == 0, added.stderr
    assert asyncio.run(read_control(kit)).tenants["initech"].settings["min_confidence"] == 0.5
