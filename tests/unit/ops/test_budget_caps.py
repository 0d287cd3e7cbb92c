"""`tidegate budget list` shows the cap the policy enforces, and where it comes from (restore7 F4, brief h53).

The policy's precedence (services/policy/engine.py `_facts`, service.py `_tenant`): a `control.budget` record, else the
tenant's settings: its `control.tenant` record over the pack's `default` entry, else the pack's own entry.
"""

from __future__ import annotations

from typing import Any

import schemas as s
from servicekit import ControlState
from services.policy import PackSettings
from tidegate.commands.budget import tenant_cap

PACK = PackSettings.model_validate({"tenants": {"default": {"budget_usd": 100}, "acme": {"budget_usd": 50}, "free": {"budget_usd": None}}})


def record(tenant: str, **settings: Any) -> s.ControlTenantData:
    return s.ControlTenantData(tenant_id=tenant, settings=settings, set_by="ops@tidegate.example")


def test_a_tenant_onboarded_with_a_budget_shows_its_records_cap() -> None:
    """`tidegate tenant add initech --budget 0.2` then `tenant set --budget 0.07`: the policy enforces 0.07, not the pack's 100."""
    state = ControlState(tenants={"initech": record("initech", allow_autonomous=True, budget_usd=0.07)})
    assert tenant_cap(PACK, state, "initech") == (0.07, "control.tenant (set by ops@tidegate.example)")


def test_a_control_budget_overrides_the_tenants_record_and_the_pack() -> None:
    state = ControlState(budgets={"initech": 0.05, "acme": 7.5}, tenants={"initech": record("initech", budget_usd=0.07)})
    assert tenant_cap(PACK, state, "initech") == (0.05, "control.budget")
    assert tenant_cap(PACK, state, "acme") == (7.5, "control.budget")


def test_a_record_without_a_budget_takes_the_packs_default_entry_as_the_policy_does() -> None:
    state = ControlState(tenants={"acme": record("acme", refund_threshold_usd=250)})
    assert tenant_cap(PACK, state, "acme") == (100.0, "pack settings")  # the record is over `default`, not over acme's entry


def test_a_record_that_says_no_cap_means_none() -> None:
    state = ControlState(tenants={"initech": record("initech", budget_usd=None)})
    assert tenant_cap(PACK, state, "initech") == (None, "none")


def test_without_records_the_packs_own_entry() -> None:
    assert tenant_cap(PACK, ControlState(), "acme") == (50.0, "pack settings")
    assert tenant_cap(PACK, ControlState(), "free") == (None, "none")


def test_a_record_the_policy_would_refuse_leaves_the_pack_cap() -> None:
    state = ControlState(tenants={"acme": record("acme", budget_usd=-1)})  # invalid: the policy ignores it
    assert tenant_cap(PACK, state, "acme") == (50.0, "pack settings")
