"""Attacker tests against the real broker and services: a second tenant cannot have the first tenant's own tool run for it.

As an outside tester found (integrator4 finding 1, probe p7): acme's agent process serves `tag_order`, a tool of kind
`topic`; globex, a second tenant of the same deployment, proposes it and has its own approver grant it. The catalog
grants `tag_order` to acme only (`tenants: [acme]`): the policy denies globex `tool_not_granted`, and acme's function
never runs. Behind it, acme's serve loop answers a call of another tenant `tenant_not_served` (a tool the catalog
grants both tenants, served by acme alone): the executor records the action failed, and nothing ran.
"""

from __future__ import annotations

from typing import Any

from conftest import Stack
from test_cross_tenant_answers import approve_as_globex, globex_settings

from tidegate.client import ClientSettings, Denied, Escalated, Failed, Tidegate, governed


async def test_globex_proposing_acmes_own_tool_is_denied_and_acmes_function_never_runs(
    stack: Stack, client_settings: ClientSettings
) -> None:
    ran: list[dict[str, Any]] = []
    async with Tidegate(client_settings) as acme, Tidegate(globex_settings(stack, client_settings)) as globex:

        @governed("tag_order", client=acme)
        def tag_order(order_id: str, tag: str) -> str:
            ran.append({"order_id": order_id, "tag": tag})
            return f"{order_id} tagged {tag}"

        outcome = await globex.propose("tag_order", {"order_id": "O-9", "tag": "from-globex"})
        if isinstance(outcome, Escalated):  # what happened before: globex's own approver granted it (acme's never saw it)
            await approve_as_globex(stack, outcome.approval_id)
            outcome = await outcome.decision(timeout_s=60)
        assert isinstance(outcome, Denied), outcome
        assert outcome.codes == ["tool_not_granted"]
        [reason] = outcome.reasons
        assert reason.policy_id == "builtin:tool-tenants"
        assert "'tag_order' is not granted to tenant 'globex'" in reason.message
        assert "acme" not in reason.message  # globex learns no other tenant's id

        assert await tag_order("O-1", "vip") == "O-1 tagged vip"  # acme, the tenant named, calls it as before
    assert ran == [{"order_id": "O-1", "tag": "vip"}]


async def test_a_granted_call_of_another_tenant_reaching_acmes_serve_loop_fails_tenant_not_served(
    stack: Stack, client_settings: ClientSettings
) -> None:
    """`reorder_stock` names acme and globex, but only acme's process serves it: globex's granted call reaches acme's loop."""
    ran: list[dict[str, Any]] = []
    async with Tidegate(client_settings) as acme, Tidegate(globex_settings(stack, client_settings)) as globex:

        @governed("reorder_stock", client=acme)
        def reorder_stock(sku: str, quantity: int) -> str:
            ran.append({"sku": sku, "quantity": quantity})
            return f"PO-ACME-{sku}"

        outcome = await globex.propose("reorder_stock", {"sku": "GLX-1", "quantity": 2})
        assert isinstance(outcome, Escalated), outcome  # globex works in draft mode: its own approver grants it
        await approve_as_globex(stack, outcome.approval_id)
        final = await outcome.decision(timeout_s=60)
    assert isinstance(final, Failed), final
    assert final.status == "failed"
    assert final.error is not None
    assert final.error.type == "tenant_not_served"
    assert final.error.message == "the process serving reorder_stock does not serve tenant globex: nothing ran"
    assert ran == []
