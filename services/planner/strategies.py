"""Planning strategies: deterministic playbooks (default, offline) and an LLM strategy with model routing.

A strategy turns a submitted task into the ordered steps the planner will propose one at a time.
Whatever it produces, only catalogued tools the task's tenant may call get through (a model is shown no
other); anything else is dropped and recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas import ProposalCost, RiskClass, TaskSubmittedData, storable
from servicekit import ToolCatalog
from services.planner.isolation import UNTRUSTED_NOTICE, split_input, tainted_paths, untrusted_block
from services.planner.model_api import ModelClient, ModelError, ModelReply
from services.planner.playbooks import PLAYBOOKS, classify_ticket, handoff_steps
from services.planner.task_state import PlannedStep

__all__ = ["LlmStrategy", "PlanResult", "PlaybookStrategy", "Strategy", "catalog_tools_for_model", "keep_callable"]


@dataclass(frozen=True)
class PlanResult:
    """Steps to propose; `error` (a reason code) when no plan could be made."""

    steps: list[PlannedStep]
    dropped: list[str] = field(default_factory=list)
    error: str | None = None
    detail: str = ""


class Strategy(Protocol):
    """Something that plans a task."""

    name: str

    async def plan(self, task: TaskSubmittedData) -> PlanResult:
        """Plan `task`."""
        ...


def _unplannable(tool: str, catalog: ToolCatalog, tenant_id: str) -> str | None:
    """What `dropped` records for a step on `tool` in a task of `tenant_id`; None: the step may be proposed.

    The name alone for a tool not in the catalog; with why for one not granted to the tenant (`ToolSpec.granted_to`, the
    policy's `tool_not_granted` rule, which would deny it).
    """
    if tool not in catalog:
        return tool
    if not catalog[tool].granted_to(tenant_id):
        return f"{tool}(not granted to tenant {tenant_id})"
    return None


def keep_callable(steps: list[PlannedStep], catalog: ToolCatalog, tenant_id: str) -> tuple[list[PlannedStep], list[str]]:
    """Steps (and alternatives) on catalogued tools `tenant_id` may call only, and what was dropped (`_unplannable`)."""
    kept: list[PlannedStep] = []
    dropped: list[str] = []
    for step in steps:
        if (why := _unplannable(step.tool, catalog, tenant_id)) is not None:
            dropped.append(why)
            continue
        alternatives, lost = keep_callable(step.on_deny, catalog, tenant_id)
        dropped += lost
        kept.append(step.model_copy(update={"on_deny": alternatives}) if lost else step)
    return kept, dropped


@dataclass
class PlaybookStrategy:
    """The deterministic playbook of the task's workflow."""

    catalog: ToolCatalog
    name: str = "playbook"

    async def plan(self, task: TaskSubmittedData) -> PlanResult:
        """Run the workflow's playbook; an unknown workflow is an error, not an empty plan."""
        playbook = PLAYBOOKS.get(task.workflow)
        if playbook is None:
            return PlanResult([], error="unknown_workflow", detail=f"no playbook for workflow {task.workflow!r}")
        steps, dropped = keep_callable(playbook(task), self.catalog, task.tenant_id)
        return PlanResult(steps, dropped)


def catalog_tools_for_model(catalog: ToolCatalog) -> list[dict[str, Any]]:
    """The catalog as OpenAI-style function tools: name, description, and the args' JSON Schema, verbatim."""
    return [
        {"type": "function", "function": {"name": spec.name, "description": spec.description, "parameters": spec.args_schema}}
        for spec in catalog.values()
    ]


CLASSIFY_PROMPT = (
    "You classify helpdesk tickets for the workflow {workflow}. Answer with JSON only: "
    '{{"category": one of ["refund", "account_deletion", "bulk_email", "general"], "tags": [up to 4 lowercase tags], '
    '"confidence": how sure you are of the category, 0 to 1}}. ' + UNTRUSTED_NOTICE
)
PLAN_PROMPT = (
    "You are the planner of the workflow {workflow} for tenant {tenant}. The ticket was classified as {category}. "
    "Plan the tool calls that handle it, in order, by calling the tools: tag the ticket, add an internal note, perform the "
    "action the ticket needs if any, and draft a reply for a human to review. Use only the tools given. Every call is "
    "checked by policy before it runs. " + UNTRUSTED_NOTICE
)
_HANDOFF_REPLY = "Thanks for your patience; a member of our team will follow up."
_CATEGORIES = {"refund", "account_deletion", "bulk_email", "general"}
STATED_DEFAULT_CONFIDENCE = 0.8  # a usable classification that states no confidence
FALLBACK_CONFIDENCE = 0.4  # the model's classification was unusable: keywords chose the category


def derive_confidence(stated: Any) -> float:
    """The confidence of a model's plan: what the classifier stated (clamped to 0–1), else a usable answer's default."""
    if isinstance(stated, int | float) and not isinstance(stated, bool) and stated == stated:  # not NaN
        return round(min(max(float(stated), 0.0), 1.0), 3)
    return STATED_DEFAULT_CONFIDENCE


def _user_message(task: TaskSubmittedData) -> str:
    trusted, untrusted = split_input(task.input, task.untrusted_keys)
    parts = [f"Task {task.task_id}. Trusted fields from our systems (JSON): {json.dumps(trusted, sort_keys=True, default=str)}"]
    parts += [
        untrusted_block(key, value if isinstance(value, str) else json.dumps(value, default=str))
        for key, value in sorted(untrusted.items())
    ]
    return "\n\n".join(parts)


@dataclass
class LlmStrategy:
    """Plans with models through litellm: a cheap model classifies, a strong one plans with the tools the task's tenant may call."""

    catalog: ToolCatalog
    client: ModelClient
    cheap_model: str
    strong_model: str
    name: str = "llm"

    def classify_messages(self, task: TaskSubmittedData) -> list[dict[str, Any]]:
        """Messages of the classification call; untrusted content only in the user message, delimited."""
        return [
            {"role": "system", "content": CLASSIFY_PROMPT.format(workflow=task.workflow)},
            {"role": "user", "content": _user_message(task)},
        ]

    def plan_messages(self, task: TaskSubmittedData, category: str) -> list[dict[str, Any]]:
        """Messages of the planning call."""
        return [
            {"role": "system", "content": PLAN_PROMPT.format(workflow=task.workflow, tenant=task.tenant_id, category=category)},
            {"role": "user", "content": _user_message(task)},
        ]

    def _category(self, reply: ModelReply, task: TaskSubmittedData) -> tuple[str, float]:
        """The category and how sure the plan can be of it (the proposals' `confidence`)."""
        try:
            answer = json.loads((reply.content or "").strip().removeprefix("```json").removesuffix("```"))
            category = str(answer.get("category", ""))
            stated = answer.get("confidence")
        except (ValueError, AttributeError):
            category, stated = "", None
        if category in _CATEGORIES:
            return category, derive_confidence(stated)
        # An unusable answer falls back to keywords rather than failing the task; the plan is then less sure.
        return classify_ticket(f"{task.input.get('subject', '')}\n{task.input.get('body', '')}")[0], FALLBACK_CONFIDENCE

    async def plan(self, task: TaskSubmittedData) -> PlanResult:
        """Classify with the cheap model, plan with the strong one; fail closed if a model is unavailable.

        The strong model is offered the tools of the task's tenant only (`ToolCatalog.for_tenant`): another tenant's outside
        tools, their descriptions and schemas, never reach it, and a call of one it names anyway is dropped.
        """
        offered = catalog_tools_for_model(self.catalog.for_tenant(task.tenant_id))
        try:
            classified = await self.client.complete(model=self.cheap_model, messages=self.classify_messages(task))
            category, confidence = self._category(classified, task)
            planned = await self.client.complete(model=self.strong_model, messages=self.plan_messages(task, category), tools=offered)
        except ModelError as exc:
            return PlanResult([], error="model_unavailable", detail=str(exc))
        trusted, untrusted = split_input(task.input, task.untrusted_keys)
        ticket = str(trusted.get("ticket_id", ""))
        steps: list[PlannedStep] = []
        dropped: list[str] = []
        for call in planned.tool_calls:
            if (why := _unplannable(call.name, self.catalog, task.tenant_id)) is not None:
                dropped.append(why)
                continue
            if call.arguments is None:
                dropped.append(f"{call.name}(unparseable arguments)")
                continue
            if storable(call.arguments) is not call.arguments:  # a U+0000, lone surrogate or NaN: no event may carry it
                dropped.append(f"{call.name}(arguments no event can carry)")
                continue
            risk = self.catalog[call.name].risk
            refusable = risk in (RiskClass.FINANCIAL, RiskClass.DESTRUCTIVE, RiskClass.CODE_CHANGE) or bool(
                self.catalog[call.name].facts.recipients
            )
            handoff = handoff_steps(ticket, call.name, _HANDOFF_REPLY) if refusable and ticket else []
            handoff, lost = keep_callable(handoff, self.catalog, task.tenant_id)  # the playbook's hand-off tools, as the playbook's
            dropped += lost
            steps.append(
                PlannedStep(
                    tool=call.name,
                    args=call.arguments,
                    rationale=f"planned by {self.strong_model} for a {category} ticket",
                    tainted_args=tainted_paths(call.arguments, untrusted, trusted),
                    on_deny=handoff,
                    required=refusable,
                    continue_on_failure=risk is RiskClass.READ,
                    confidence=confidence,
                )
            )
        if steps:
            total = ProposalCost(
                model=f"{self.cheap_model}+{self.strong_model}",
                tokens_in=classified.tokens_in + planned.tokens_in,
                tokens_out=classified.tokens_out + planned.tokens_out,
                usd=round(classified.usd + planned.usd, 8),
            )
            steps[0] = steps[0].model_copy(update={"cost": total})
        return PlanResult(steps, dropped)
