"""`tidegate tenant add|set|show` as an admin runs them, against the real broker: control.tenant records, checked before publishing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

from servicekit import REPO_ROOT, KitSettings, catalog_topic_names, ensure_topics
from tidegate.commands.killswitch import read_control


def tidegate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tidegate.cli", *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


def _on_the_test_topics(infra: Any, prefix: str) -> tuple[dict[str, str], KitSettings]:
    """The CLI's environment on this test's topics (made first), and the kit that reads them."""
    asyncio.run(ensure_topics(infra.kafka_bootstrap, prefix, catalog_topic_names()))
    env = os.environ | {"TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "COLUMNS": "200"}
    return env, KitSettings(kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=prefix)


def test_tenant_commands_publish_checked_records(infra, prefix: str) -> None:
    env, kit = _on_the_test_topics(infra, prefix)

    assert "not onboarded" in tidegate(env, "tenant", "show", "initech").stdout
    added = tidegate(
        env, "tenant", "add", "initech", "--autonomous", "--internal-domain", "Initech.example", "--chat-channel", "general",
        "--trigger", "new_payee=escalate:2", "--by", "admin",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    # The repo's outside tools name acme and globex: the new tenant is told it may call neither until they name it.
    assert "tenant initech may not call 2 tool(s) served outside the deployment" in added.stdout, added.stdout
    assert "create_shipping_label, update_inventory" in added.stdout
    again = tidegate(env, "tenant", "add", "initech")
    assert again.returncode != 0
    assert "already onboarded" in again.stderr
    assert tidegate(env, "tenant", "set", "initech", "--refund-threshold", "250").returncode == 0
    bad = tidegate(env, "tenant", "set", "initech", "--trigger", "permission_change=allow")
    assert bad.returncode != 0
    assert "invalid tenant settings" in bad.stderr

    record = asyncio.run(read_control(kit)).tenants["initech"]
    assert record.set_by != ""
    assert record.settings == {
        "allow_autonomous": True,
        "internal_domains": ["initech.example"],
        "chat_channels": ["general"],
        "triggers": {"new_payee": {"action": "escalate", "approvers": 2}},
        "refund_threshold_usd": 250.0,
    }
    shown = tidegate(env, "tenant", "show", "initech").stdout
    assert "control.tenant" in shown
    assert '"refund_threshold_usd": 250.0' in shown


def test_a_setting_set_to_null_goes_back_to_the_packs_default(infra, prefix: str) -> None:
    """`--setting KEY=null` takes the tenant's own value out of its record (before, null was read as "not given": no way back)."""
    env, kit = _on_the_test_topics(infra, prefix)
    added = tidegate(env, "tenant", "add", "initech", "--internal-domain", "initech.example", "--setting", "payee_daily_threshold_usd=off")
    assert added.returncode == 0, added.stderr
    assert asyncio.run(read_control(kit)).tenants["initech"].settings["payee_daily_threshold_usd"] is False

    unset = tidegate(env, "tenant", "set", "initech", "--setting", "payee_daily_threshold_usd=null", "--setting", "min_confidence=0.5")
    assert unset.returncode == 0, unset.stderr
    record = asyncio.run(read_control(kit)).tenants["initech"]
    assert record.settings == {"internal_domains": ["initech.example"], "min_confidence": 0.5}
    shown = tidegate(env, "tenant", "show", "initech").stdout
    assert '"payee_daily_threshold_usd": null' in shown  # the pack's default: the tenant's refund threshold, per payee per day


def test_the_daily_payout_bound_is_set_turned_off_and_a_bad_value_refused_in_one_line(infra, prefix: str) -> None:
    """`--daily-payout` (red team F5): what the tenant may pay out over 24 hours without a human, all payees and tasks together."""
    env, kit = _on_the_test_topics(infra, prefix)
    added = tidegate(env, "tenant", "add", "initech", "--internal-domain", "initech.example", "--daily-payout", "2500")
    assert added.returncode == 0, added.stderr
    assert asyncio.run(read_control(kit)).tenants["initech"].settings["tenant_daily_payout_usd"] == 2500.0
    assert '"tenant_daily_payout_usd": 2500.0' in tidegate(env, "tenant", "show", "initech").stdout

    assert tidegate(env, "tenant", "set", "initech", "--daily-payout", "OFF").returncode == 0
    assert asyncio.run(read_control(kit)).tenants["initech"].settings["tenant_daily_payout_usd"] == "off"
    for bad, says in (("lots", "--daily-payout is a number of USD or off, not 'lots'"), ("-5", "tenant_daily_payout_usd")):
        refused = tidegate(env, "tenant", "set", "initech", "--daily-payout", bad)
        assert refused.returncode != 0
        assert says in refused.stderr, refused.stderr
    assert asyncio.run(read_control(kit)).tenants["initech"].settings["tenant_daily_payout_usd"] == "off"  # nothing changed
