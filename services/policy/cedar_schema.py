"""The Cedar schema and entities the policy pack is checked and evaluated against, generated from the tool catalog.

Every request is `principal: Agent` (the proposer), `action: Action::"<tool>"`, `resource: Tenant`, with
the context below. Each tool's action is a member of an action group named after its risk class, so a
policy can say `action in Action::"financial"`. Money is in integer cents: Cedar has no floats.
"""

from __future__ import annotations

import json
from typing import Any

from schemas import RiskClass
from servicekit import ToolCatalog

__all__ = ["CONTEXT_TYPE", "action_entities", "cedar_schema", "cedar_schema_json"]


def _long() -> dict[str, str]:
    return {"type": "Long"}


def _bool() -> dict[str, str]:
    return {"type": "Boolean"}


def _str() -> dict[str, str]:
    return {"type": "String"}


def _record(**attrs: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Record", "attributes": attrs}


# The one definition of the request context; `engine.cedar_context` builds exactly these attributes.
CONTEXT_TYPE: dict[str, Any] = _record(
    tenant=_str(),
    tool=_str(),
    risk=_str(),
    mode=_str(),
    writes=_bool(),
    facts=_record(
        has_amount=_bool(),
        amount_cents=_long(),
        has_payee=_bool(),
        payee_is_new=_bool(),
        recipient_count=_long(),
        external_recipients=_long(),
        tainted=_bool(),
        tainted_args={"type": "Set", "element": _str()},  # the tainted important args, for a message to name them
        tainted_unseen=_bool(),  # tainted only because what the task read was not seen when decided (origin not known)
        unseen_sources={"type": "Set", "element": _str()},  # what was not seen ("the results of get_ticket"), for a message
        automation_tag=_bool(),  # the call adds a tag the tenant's automations act on
        automation_tags={"type": "Set", "element": _str()},  # which, for a message to name them
        documentation_present=_bool(),
        sensitive_paths=_bool(),
        reviewed=_bool(),
        spend_task_cents=_long(),
        spend_tenant_cents=_long(),
        reversible=_bool(),
        irreversible=_bool(),
        has_confidence=_bool(),
        confidence_pct=_long(),
        has_record=_bool(),
        record_read=_bool(),
        within_record=_bool(),
        record_id=_str(),
        record_read_failed=_bool(),
        record_read_error=_str(),
        paid_task_cents=_long(),
        paid_payee_cents=_long(),
        paid_tenant_cents=_long(),  # what the tenant paid out over 24 hours without a human (0 for a call with no amount)
    ),
    settings=_record(
        refund_threshold_cents=_long(),
        payee_daily_bounded=_bool(),  # false: the tenant turned the per-payee daily bound off
        payee_daily_threshold_cents=_long(),  # 0 when it is off
        tenant_daily_bounded=_bool(),  # false: the tenant turned its daily payout bound off
        tenant_daily_payout_cents=_long(),  # 0 when it is off
        allow_autonomous=_bool(),
        new_payee_escalates=_bool(),
        external_recipient=_str(),
        permission_change_escalates=_bool(),
        min_confidence_pct=_long(),
        tool_error_limit=_long(),
        retry_limit=_long(),
        accept_irreversible={"type": "Set", "element": _str()},
    ),
    flow=_record(
        untrusted_read=_bool(),
        calls=_long(),
        tool_calls=_long(),
        tools_called={"type": "Set", "element": _str()},
        external_sends=_long(),
        sent_amount_cents=_long(),
        last_decision=_str(),
        retries=_long(),
        tool_errors=_long(),
        task_unseen=_bool(),
    ),
    approval=_record(granted=_bool()),
)


def cedar_schema(catalog: ToolCatalog) -> dict[str, Any]:
    """The Cedar JSON schema: one action per catalogued tool, grouped by risk class, all with the same context."""
    # A risk class's group is an action of its own (never requested), so that a rule on a class the
    # catalog has no tool of still validates: the default pack loads against any catalog.
    applies = {"principalTypes": ["Agent"], "resourceTypes": ["Tenant"], "context": CONTEXT_TYPE}
    actions: dict[str, Any] = {risk.value: {"appliesTo": applies} for risk in RiskClass}
    for name, spec in sorted(catalog.items()):
        if name in actions:
            raise ValueError(f"tool {name!r} has the name of a risk class; rename the tool")
        actions[name] = {
            "memberOf": [{"id": spec.risk.value}],
            "appliesTo": applies,
        }
    return {"": {"entityTypes": {"Agent": {}, "Tenant": {}}, "actions": actions}}


def cedar_schema_json(catalog: ToolCatalog) -> str:
    """`cedar_schema` as indented JSON (what `tidegate policy validate --print-schema` shows)."""
    return json.dumps(cedar_schema(catalog), indent=2, sort_keys=True)


def action_entities(catalog: ToolCatalog) -> list[dict[str, Any]]:
    """Action entities with their risk-class parents, so `action in Action::"<risk>"` holds at evaluation."""
    groups = [{"uid": {"type": "Action", "id": risk.value}, "attrs": {}, "parents": []} for risk in RiskClass]
    tools = [
        {"uid": {"type": "Action", "id": name}, "attrs": {}, "parents": [{"type": "Action", "id": spec.risk.value}]}
        for name, spec in sorted(catalog.items())
    ]
    return groups + tools
