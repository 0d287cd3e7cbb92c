"""`tidegate demo --systems stand-in`: the demo's helpdesk on a Zendesk stand-in and its payments on Stripe's stripe-mock.

For the length of the run this process serves our Zendesk stand-in (the demo tickets as tickets 1001…)
and stripe-mock (Stripe's own, built with `go install` on first use) behind a proxy that gives each demo
order a charge of its amount, paid by its customer; it connects the tenant to both with fresh random
credentials (sealed to the executor's key, like any tenant's) and marks each task's trusted input with
the systems that hold its records, so the planner proposes the connector tools.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import connectors as c
from servicekit import REPO_ROOT, KitSettings, ToolCatalog
from services.executor import ExecutorSettings
from standins import RecordingProxy, StripeMock, ensure_stripe_mock, serve_app
from standins.zendesk import ZendeskStandIn
from systems.seed import ORDERS, TICKETS

__all__ = ["SYSTEMS", "StandIns", "standin_systems"]

SYSTEMS = {"helpdesk": "zendesk", "payments": "stripe"}
# The writes the playbook proposes, and the tools that undo them (`tidegate undo` on a demo action); reads come with the connector.
ZENDESK_TOOLS = ["zendesk_tag_ticket", "zendesk_untag_ticket", "zendesk_add_internal_note", "zendesk_draft_reply", "zendesk_set_status"]
STRIPE_TOOLS = ["stripe_refund"]


@dataclass(frozen=True)
class StandIns:
    """Where the stand-ins answer, and what each task's trusted input must say about them."""

    zendesk: ZendeskStandIn
    stripe: RecordingProxy
    charges: dict[str, str]

    def task_input(self) -> dict[str, Any]:
        """Trusted input fields that route a task's steps to the connectors."""
        return {"systems": dict(SYSTEMS), "charges": dict(self.charges)}


def _charge_id(order_id: str) -> str:
    return "ch_" + re.sub(r"[^A-Za-z0-9]", "", order_id)


@asynccontextmanager
async def standin_systems(kit: KitSettings, tenant: str, orders: dict[str, str]) -> AsyncIterator[StandIns]:
    """Serve the stand-ins and connect `tenant` to them until the block ends; `orders` maps a ticket to its order of this run."""
    binary = await asyncio.to_thread(ensure_stripe_mock, REPO_ROOT / ".tidegate" / "bin")  # a minute or two, once
    mock = await asyncio.to_thread(StripeMock(binary).start)
    try:
        proxy = RecordingProxy(mock.url)
        by_ticket = {t.ticket_id: t.order_id for t in TICKETS}
        charges: dict[str, str] = {}
        for order in ORDERS:
            ids = [order.order_id] + [fresh for ticket, fresh in orders.items() if by_ticket.get(ticket) == order.order_id]
            for order_id in ids:
                charge = charges[order_id] = _charge_id(order_id)
                proxy.fixtures[f"/v1/charges/{charge}"] = {
                    "id": charge, "amount": int(order.amount_usd * 100), "amount_refunded": 0, "currency": "usd",
                    "customer": order.customer_id, "paid": True, "refunded": False, "status": "succeeded",
                }  # fmt: skip
        zendesk = ZendeskStandIn(email=f"agent@{tenant}.example", token=secrets.token_urlsafe(24))
        for ticket in TICKETS:
            zendesk.add_ticket(int(ticket.ticket_id.removeprefix("T-")), ticket.subject, ticket.body)
        async with serve_app(proxy.app) as stripe_url, serve_app(zendesk.app) as zendesk_url:
            proxy.url, zendesk.url = stripe_url, zendesk_url
            await _connect(kit, tenant, stripe_url=stripe_url, zendesk=zendesk)
            yield StandIns(zendesk, proxy, charges)
    finally:
        await asyncio.to_thread(mock.stop)


async def _connect(kit: KitSettings, tenant: str, *, stripe_url: str, zendesk: ZendeskStandIn) -> None:
    """What `tidegate connectors enable` and `set-credential` do, with credentials made for this run."""
    catalog = ToolCatalog.load(*kit.tool_dirs)
    vault = c.Vault(ExecutorSettings().connector_keys_dir or kit.keys_dir)
    vault.ensure()
    from tidegate.commands.connectors import grant_writer

    async with grant_writer(kit) as store:
        for grant, why in await store.unverified():
            # A grant of the demo's connectors the executor refuses, and `enable` below refuses to build on: a run stopped
            # (Ctrl-C) between writing its grant and naming it current on `control` (grant_rolled_back), or one signed by
            # an operator key this deployment no longer has. Every later demo failed there, with a traceback. The demo
            # replaces it with an empty grant of its own (the refused row's tools and credential are not trusted).
            if grant.tenant_id == tenant and grant.connector in ("zendesk", "stripe"):
                await store.put(c.Grant(tenant, grant.connector))
                print(f"the {grant.connector} grant of {tenant} was refused ({why.code}): the demo replaced it with its own")
        await c.enable(store, catalog, tenant, "zendesk", tools=ZENDESK_TOOLS, connection={"base_url": zendesk.url, "email": zendesk.email})
        await c.set_credential(store, vault, tenant, "zendesk", zendesk.token)
        await c.enable(store, catalog, tenant, "stripe", tools=STRIPE_TOOLS, connection={"base_url": stripe_url})
        await c.set_credential(
            store, vault, tenant, "stripe", "sk_test_" + secrets.token_hex(24)
        )  # stripe-mock refuses a key with a third "_"
