"""A task's model is offered only the tools its tenant may call, and a step on another tenant's tool is dropped, saying why.

`tenants` grants an outside tool (kinds `topic`, `mcp`, `http`) to the tenants it names; the policy denies any other
tenant's call `tool_not_granted`. The planner now applies the same rule before it proposes: acme's own system
(`acme_ledger_sync`, `tenants: [acme]`) is offered to acme's model only, its name, description and schema never reach
initech's, and a call of it that initech's model makes anyway (a guess, an injected name) is dropped and recorded
"not granted to tenant initech", as an uncatalogued tool is: no proposal the policy can only deny, no failed task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from schemas import TaskSubmittedData, ToolSpec
from servicekit import EventOutlet, ToolCatalog
from services.planner.action_ids import ActionIds
from services.planner.handlers import PlannerHandlers
from services.planner.model_api import ModelReply, ToolCall
from services.planner.repository import InMemoryTaskRepository
from services.planner.strategies import LlmStrategy, PlaybookStrategy, Strategy
from systems.seed import TICKETS
from tests.unit.planner.conftest import RATES, Harness
from tidegate.demo.tickets import ticket_task

TICKET = {t.ticket_id: t for t in TICKETS}
ACME_ONLY = "Syncs a ticket into ACME-LEDGER-7, acme's own accounting system"


def _tool(name: str, **extra: Any) -> ToolSpec:
    schema = {"type": "object", "properties": {"ticket_id": {"type": "string"}, "ledger_code": {"type": "string"}}}
    return ToolSpec.model_validate(
        {"name": name, "description": f"{name} (test)", "risk": "write_low", "kind": "python", "entrypoint": "x:y", "args_schema": schema}
        | extra
    )


def catalog(**acme_only: Any) -> ToolCatalog:
    """Python tools (every tenant) and acme's own outside tool; each name in `acme_only` becomes an outside tool of acme's only."""
    tools = [_tool("tag_ticket"), _tool("add_internal_note"), _tool("draft_reply")]
    tools.append(_tool("acme_ledger_sync", kind="http", url="https://ledger.acme.example/sync", tenants=["acme"], description=ACME_ONLY))
    tools += [_tool(name, kind="http", url=f"https://{name}.acme.example", tenants=["acme"]) for name in acme_only]
    return ToolCatalog({t.name: t for t in tools})


@dataclass
class StandInModel:
    """A model that records the tools it was offered and plans `calls`, whatever it was offered."""

    calls: list[tuple[str, dict[str, Any]]]
    offered: list[list[dict[str, Any]]] = field(default_factory=list)

    async def complete(self, *, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> ModelReply:
        if tools is None:  # the classification call
            return ModelReply(model=model, content='{"category": "general", "confidence": 0.9}')
        self.offered.append(tools)
        planned = [ToolCall(name=name, arguments=args, raw_arguments=json.dumps(args)) for name, args in self.calls]
        return ModelReply(model=model, content=None, tool_calls=planned)


def llm(tools: ToolCatalog, model: StandInModel) -> LlmStrategy:
    return LlmStrategy(tools, model, cheap_model="stand-in/cheap", strong_model="stand-in/strong")


def task(tenant: str, ticket: str = "T-1007") -> TaskSubmittedData:
    return ticket_task(TICKET[ticket], tenant_id=tenant, task_id=f"t-{tenant}-{ticket}")


def offered_names(model: StandInModel) -> list[str]:
    return [t["function"]["name"] for t in model.offered[-1]]


PLAN = [("tag_ticket", {"ticket_id": "T-1007"}), ("acme_ledger_sync", {"ticket_id": "T-1007", "ledger_code": "L-1"})]


async def test_acme_s_model_is_offered_its_granted_tool_and_initech_s_is_not() -> None:
    model = StandInModel(PLAN)
    strategy = llm(catalog(), model)

    acme = await strategy.plan(task("acme"))
    assert offered_names(model) == ["tag_ticket", "add_internal_note", "draft_reply", "acme_ledger_sync"]
    assert ([s.tool for s in acme.steps], acme.dropped) == (["tag_ticket", "acme_ledger_sync"], [])

    initech = await strategy.plan(task("initech"))
    assert offered_names(model) == ["tag_ticket", "add_internal_note", "draft_reply"]
    shown = json.dumps(model.offered[-1])
    assert "acme_ledger_sync" not in shown
    assert ACME_ONLY not in shown  # nor its description
    assert "ledger.acme.example" not in shown
    # Its model names the tool anyway: dropped as an uncatalogued one is, saying why; nothing the policy would deny is planned.
    assert [s.tool for s in initech.steps] == ["tag_ticket"]
    assert initech.dropped == ["acme_ledger_sync(not granted to tenant initech)"]


async def test_a_tool_not_in_the_catalog_is_still_dropped_by_its_name_alone() -> None:
    result = await llm(catalog(), StandInModel([("wire_money", {"to": "x"}), *PLAN[:1]])).plan(task("initech"))
    assert ([s.tool for s in result.steps], result.dropped) == (["tag_ticket"], ["wire_money"])


async def test_a_refusable_step_s_hand_off_keeps_only_what_the_tenant_may_call() -> None:
    refund = ("issue_refund", {"ticket_id": "T-1007"})
    tools = ToolCatalog(dict(catalog(draft_reply=True)) | {"issue_refund": _tool("issue_refund", risk="financial")})
    acme = await llm(tools, StandInModel([refund])).plan(task("acme"))
    initech = await llm(tools, StandInModel([refund])).plan(task("initech"))
    assert [s.tool for s in acme.steps[0].on_deny] == ["add_internal_note", "draft_reply"]
    assert [s.tool for s in initech.steps[0].on_deny] == ["add_internal_note"]
    assert initech.dropped == ["draft_reply(not granted to tenant initech)"]


async def test_the_playbook_drops_a_step_on_a_tool_not_granted_to_the_task_s_tenant() -> None:
    tools = catalog(draft_reply=True)  # the general ticket's reply draft goes to acme's own system only
    acme = await PlaybookStrategy(tools).plan(task("acme"))
    initech = await PlaybookStrategy(tools).plan(task("initech"))
    assert [s.tool for s in acme.steps] == ["tag_ticket", "add_internal_note", "draft_reply"]
    assert ([s.tool for s in initech.steps], initech.dropped) == (
        ["tag_ticket", "add_internal_note"],
        ["draft_reply(not granted to tenant initech)"],
    )


class PlannerOf(Harness):
    """The planner's handlers over the in-memory repository, planning with `strategy`."""

    def __init__(self, strategy: Strategy) -> None:
        self.repo = InMemoryTaskRepository()
        self.published = []
        self.handlers = PlannerHandlers(
            repo=self.repo,
            strategy=strategy,
            out=EventOutlet(self._publish),
            rates=RATES,
            read_only=frozenset(),
            ids=ActionIds(b"planner-test-secret-".ljust(32, b".")),
        )


async def test_initech_s_task_completes_with_the_drop_in_its_summary_and_no_proposal_of_acme_s_tool() -> None:
    planner = PlannerOf(llm(catalog(), StandInModel(PLAN)))
    await planner.submit(task("initech"))
    assert [p.tool for p in planner.proposals()] == ["tag_ticket"]
    await planner.run_allowed(planner.last())
    [outcome] = planner.outcomes()
    assert outcome.type == "tidegate.task.completed"
    assert outcome.data.summary.endswith(
        "Dropped proposals (a name alone: not in the catalog): acme_ledger_sync(not granted to tenant initech)"
    )
    state = await planner.repo.get("initech", "t-initech-T-1007")
    assert state is not None
    assert state.dropped == ["acme_ledger_sync(not granted to tenant initech)"]
