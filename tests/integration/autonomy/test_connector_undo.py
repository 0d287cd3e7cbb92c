"""Undo of the connector writes on the real stack: on the Zendesk, GitHub and Salesforce stand-ins, each reversible
connector tool's undo is a proposal policy decides, runs once, restores the stand-in's state and is linked in the
audit log; a Zendesk note is escalated (irreversible) and a Zendesk draft's undo is refused with what to do instead.

Policy, executor and audit run as in production (their `app.build`, real Kafka and PostgreSQL); the tenant is
connected to the stand-ins as `tidegate connectors enable … && set-credential …` does (grants in PostgreSQL,
credentials sealed to the executor's key); the undo proposals are the ones `tidegate undo` makes from the audit log.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from autonomy_helpers import propose, recorded
from bus_helpers import Collector, Producer

import connectors as c
import schemas as s
from servicekit import REPO_ROOT, KitSettings, ToolCatalog, apply_migrations, create_pool
from services.audit.app import build as build_audit
from services.executor.app import build as build_executor
from services.policy.app import build as build_policy
from standins import serve_app
from standins._tls import self_signed
from standins.github import GitHubStandIn
from standins.salesforce import SalesforceStandIn
from standins.zendesk import ZendeskStandIn
from tidegate.ops.undo import undo_steps

WATCHED = ["actions.proposed", "actions.decided", "actions.results"]
WRITES = {
    "zendesk": ["zendesk_tag_ticket", "zendesk_untag_ticket", "zendesk_set_status", "zendesk_add_internal_note", "zendesk_draft_reply"],
    "github": ["github_comment", "github_delete_comment"],
    "salesforce": ["salesforce_add_task", "salesforce_delete_task", "salesforce_update_opportunity_stage"],
}


@dataclass
class Stack:
    kit: KitSettings
    tenant: str
    producer: Producer
    collector: Collector
    zendesk: ZendeskStandIn
    github: GitHubStandIn
    salesforce: SalesforceStandIn
    account: str
    opportunity: str

    async def propose(self, tool: str, args: dict[str, Any], task_id: str) -> str:
        return await propose(self.producer, self.tenant, tool, args, task_id=task_id, requested_by="agent@cundo.example")

    def result(self, action_id: str) -> Any:
        return self.collector.result(action_id)

    def decision(self, action_id: str) -> Any:
        return next((e.data for e in self.collector.events["actions.decided"] if e.data.action_id == action_id), None)

    def state(self) -> dict[str, Any]:
        """What the undos must restore, on each stand-in (a re-added comment or task is compared by what it says)."""
        tickets = {n: {k: v for k, v in t.items() if k != "updated_at"} for n, t in self.zendesk.tickets.items()}
        comments = [c["body"] for c in self.github.repos["acme/web"]["issues"][7]["comments"]]
        tasks = sorted((t["WhatId"], t["Subject"], t.get("Description")) for t in self.salesforce.records["Task"].values())
        opportunity = self.salesforce.records["Opportunity"]
        state = {
            "zendesk": tickets,
            "zendesk_comments": self.zendesk.comments,
            "github": comments,
            "tasks": tasks,
            "opportunity": opportunity,
        }
        return copy.deepcopy(state)  # the stand-ins change their lists in place


async def _connect(kit: KitSettings, tenant: str, connections: dict[str, dict[str, str]], token: str) -> None:
    """What `tidegate connectors enable --tool … && set-credential …` does for each stand-in."""
    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    vault = c.Vault(kit.keys_dir)
    vault.ensure()
    pool: asyncpg.Pool = await create_pool(kit.database_url, max_size=2)
    try:
        await apply_migrations(pool, "executor", REPO_ROOT / "services" / "executor" / "migrations")
        store = c.GrantWriter.of_operator(kit, c.PgGrantStore(pool))
        for connector, connection in connections.items():
            await c.enable(store, catalog, tenant, connector, tools=WRITES[connector], connection=connection)
            await c.set_credential(store, vault, tenant, connector, token)
    finally:
        await pool.close()


@pytest.fixture
async def stack(kit: KitSettings, tmp_path: Path) -> AsyncIterator[Stack]:
    tenant = f"cun-{uuid.uuid4().hex[:8]}"
    token = secrets.token_urlsafe(24)
    zendesk = ZendeskStandIn(email=f"agent@{tenant}.example", token=token)
    zendesk.add_ticket(101, "Refund for order O-1001", "I was charged twice.", tags=["vip"])
    zendesk.add_ticket(102, "Where is my parcel?", "It has been a week.", tags=["urgent"])
    zendesk.tickets[101]["status"] = "pending"
    github = GitHubStandIn(token=token)
    github.add_repo("acme/web", {"README.md": "# web\n"})
    github.add_issue("acme/web", 7, "Typo in README", "The title says Web.", ("+1", "same here"))
    salesforce = SalesforceStandIn(token=token)
    account = salesforce.add("Account", Name="Initech", Industry="Software")
    opportunity = salesforce.add("Opportunity", Name="Initech renewal", StageName="Negotiation/Review", Amount=12000.0, AccountId=account)
    salesforce.add("Task", WhatId=account, Subject="Send the contract", Description="before Friday")
    cert, key = self_signed(tmp_path / "tls")
    async with AsyncExitStack() as stack:
        zendesk.url = await stack.enter_async_context(serve_app(zendesk.app))
        github.url = await stack.enter_async_context(serve_app(github.app))
        salesforce.url = await stack.enter_async_context(serve_app(salesforce.app, tls=(cert, key)))
        await _connect(
            kit,
            tenant,
            {
                "zendesk": {"base_url": zendesk.url, "email": zendesk.email},
                "github": {"base_url": github.url},
                "salesforce": {"base_url": "", "instance_url": salesforce.url, "ca_bundle": str(cert)},
            },
            token,
        )
        producer = Producer(kit)
        await producer.start()
        stack.push_async_callback(producer.stop)
        # A tenant that accepts no irreversible write (the default), with deals up to 50,000 USD within its threshold.
        # Its GitHub organisation is its own (`acme` of acme/web): a comment elsewhere goes outside the tenant.
        settings = {
            "allow_autonomous": True, "internal_domains": ["cundo.example"], "organisations": ["acme"], "refund_threshold_usd": 50000,
        }  # fmt: skip
        onboard = s.ControlTenant.build(
            s.ControlTenantData(tenant_id=tenant, settings=settings, set_by="admin@cundo.example"), source="cli"
        )
        await producer.send("control", onboard)  # as `tidegate tenant add` does, signed as the operator
        for svc in (build_policy(kit), build_executor(kit), build_audit(kit)):
            await svc.start()
            stack.push_async_callback(svc.stop)
        collector = Collector(kit, WATCHED)
        await collector.start()
        stack.push_async_callback(collector.stop)
        yield Stack(kit, tenant, producer, collector, zendesk, github, salesforce, account, opportunity)


def _calls(stack: Stack) -> list[tuple[str, dict[str, Any], str]]:
    """Each reversible connector write (called as an agent would), and the tool that undoes it."""
    last_comment = stack.github.repos["acme/web"]["issues"][7]["comments"][-1]["id"]
    [contract] = stack.salesforce.records["Task"]
    return [
        ("zendesk_tag_ticket", {"ticket_id": 101, "tags": ["refund", "vip"]}, "zendesk_untag_ticket"),  # "vip" was there: it stays
        ("zendesk_untag_ticket", {"ticket_id": 102, "tags": ["urgent", "never-there"]}, "zendesk_tag_ticket"),
        ("zendesk_set_status", {"ticket_id": 101, "status": "solved"}, "zendesk_set_status"),
        ("github_comment", {"repo": "acme/web", "number": 7, "body": "Fixed in #1."}, "github_delete_comment"),
        ("github_delete_comment", {"repo": "acme/web", "comment_id": last_comment}, "github_comment"),
        ("salesforce_add_task", {"what_id": stack.account, "subject": "Call back", "description": "renewal"}, "salesforce_delete_task"),
        ("salesforce_delete_task", {"task_id": contract}, "salesforce_add_task"),
        (
            "salesforce_update_opportunity_stage",
            {"opportunity_id": stack.opportunity, "stage": "Closed Won", "amount_usd": 12000},
            "salesforce_update_opportunity_stage",
        ),
    ]


async def test_each_reversible_connector_tool_is_undone_through_policy_and_restores_the_standin(stack: Stack, wait_for: Any) -> None:
    before = stack.state()
    done: dict[str, tuple[str, str]] = {}
    for tool, args, undo_tool in _calls(stack):
        task_id = f"t-{tool}-{uuid.uuid4().hex[:6]}"
        action = await stack.propose(tool, args, task_id)
        result = await wait_for(lambda a=action: stack.result(a), timeout=30, what=f"{tool} result")
        assert (result.type, result.data.undo.status) == ("tidegate.action.succeeded", "ready"), result.data
        assert stack.decision(action).outcome == "allow"  # a write a tool can undo runs without a human
        done[task_id] = (action, undo_tool)
    assert stack.state() != before

    for task_id, (original, undo_tool) in reversed(done.items()):
        events = await recorded(stack.kit, task_id, wait_for, count=4)  # proposed, decided, authorized, succeeded
        [step] = undo_steps(events, requested_by="ops@cundo.example")
        assert step.proposal is not None
        assert (step.proposal.tool, step.proposal.undoes) == (undo_tool, original)
        await stack.producer.send("actions.proposed", s.ActionProposed.build(step.proposal, source="external/undo"))
        undo_result = await wait_for(lambda p=step.proposal: stack.result(p.action_id), timeout=30, what=f"the undo of {original}")
        assert undo_result.type == "tidegate.action.succeeded", undo_result.data
        decided = stack.decision(step.proposal.action_id)
        assert (decided.outcome, decided.via) == ("allow", "policy")  # policy decided the undo like any other call
        linked = await recorded(stack.kit, task_id, wait_for, count=8)
        proposals = [e.data for e in linked if isinstance(e, s.ActionProposed) and e.data.undoes == original]
        assert [p.action_id for p in proposals] == [step.proposal.action_id]
        assert undo_steps(linked, requested_by="ops@cundo.example") == []  # undone once: nothing left to propose

    after = stack.state()
    assert after["zendesk"] == before["zendesk"], [
        (n, k, v, after["zendesk"][n][k]) for n, t in before["zendesk"].items() for k, v in t.items() if after["zendesk"][n][k] != v
    ]
    assert after == before


async def test_a_zendesk_note_waits_for_a_human_and_a_draft_cannot_be_undone_by_a_tool(stack: Stack, wait_for: Any) -> None:
    note = await stack.propose("zendesk_add_internal_note", {"ticket_id": 101, "body": "checked"}, f"t-note-{uuid.uuid4().hex[:6]}")
    decided = await wait_for(lambda: stack.decision(note), timeout=30, what="the note's decision")
    assert decided.outcome == "escalate"
    assert "irreversible_write" in [str(r.code) for r in decided.reasons]  # Zendesk cannot delete a comment
    assert len(stack.zendesk.comments[101]) == 1  # nothing was written: only the requester's first comment

    task_id = f"t-draft-{uuid.uuid4().hex[:6]}"
    draft = await stack.propose("zendesk_draft_reply", {"ticket_id": 102, "body": "It ships today."}, task_id)
    result = await wait_for(lambda: stack.result(draft), timeout=30, what="the draft's result")
    assert (result.type, result.data.undo.status) == ("tidegate.action.succeeded", "irreversible")
    events = await recorded(stack.kit, task_id, wait_for, count=4)
    [step] = undo_steps(events, requested_by="ops@cundo.example", only=draft)
    assert step.proposal is None
    assert step.refused is not None
    assert step.refused.code == s.ReasonCode.UNDO_IRREVERSIBLE
    assert "redact it in Zendesk" in step.refused.message  # what a person does instead
