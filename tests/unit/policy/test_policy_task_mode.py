"""A proposal's mode is bounded by its task's signed request: a proposal can make its task stricter, never looser.

As an outside review found (security4 F1): the planner's database login planted `mode: autonomous` in a draft task's
state, and the planner's proposals were decided autonomous (a write allowed with no human). The policy now takes the
mode the task's request asked for (`task.submitted`, signed by the requester's client) as learned on `tasks`: the
stricter of it, the proposal's and the tenant's. A planner's proposal whose task is never learned is decided draft;
an outside agent's proposal of a task nobody submitted keeps its own mode (the tenant allowing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas import (
    ActionDecidedData,
    ActionProposed,
    ActionProposedData,
    ControlTenant,
    ControlTenantData,
    Envelope,
    Mode,
    TaskSubmitted,
    TaskSubmittedData,
)
from servicekit import REPO_ROOT, ControlState, EventOutlet, KitSettings, SigningKey, ToolCatalog, sign_as_operator
from services.policy import InMemoryPolicyRepository, TenantSettings
from services.policy.pack import PackSource, compile_pack
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings
from tidegate.ops.whatif import evaluate

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
PACK = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG)
NOTE = {"ticket_id": "T-9", "note": "PLANTED by the planner's database login"}  # write_low with an undo: allowed alone when autonomous


async def _service(tmp_path: Path, *, autonomous_tenant: bool = True) -> PolicyService:
    async def publish(topic: str, event: Envelope) -> None:
        return None

    svc = PolicyService(
        catalog=CATALOG,
        pack=PACK,
        repo=InMemoryPolicyRepository(),
        signer=SigningKey.load_or_create(tmp_path, "policy"),
        keys_dir=tmp_path,
        control=ControlState(),
        publish_many=EventOutlet(publish).publish_many,
        settings=PolicySettings(provenance_wait_s=0.1),
    )
    settings = {"allow_autonomous": autonomous_tenant, "internal_domains": ["acme.example"]}
    record = ControlTenant.build(ControlTenantData(tenant_id="acme", settings=settings, set_by="admin"), source="cli")
    await svc.on_control(sign_as_operator(KitSettings(keys_dir=tmp_path / "operator"), record))  # as `tidegate tenant add` signs it
    return svc


def _planned(service: PolicyService) -> PolicyService:
    service.planned = lambda event: True  # in the process, the verified key is the planner's (`app.build`)
    return service


async def _submit(service: PolicyService, mode: Mode, task_id: str = "t-1") -> None:
    request = TaskSubmittedData(task_id=task_id, tenant_id="acme", workflow="w", input={"ticket_id": "T-9"}, requested_by="ann", mode=mode)
    await service.on_tasks([TaskSubmitted.build(request, source="client")])


async def _decide(service: PolicyService, action_id: str, mode: Mode, task_id: str = "t-1", tool: str = "add_internal_note") -> Any:
    data = ActionProposedData(
        action_id=action_id, task_id=task_id, tenant_id="acme", step=2, tool=tool, args=NOTE, proposer="tidegate/planner/playbook",
        mode=mode,
    )  # fmt: skip
    decided = (await service.on_proposed(ActionProposed.build(data, source="tidegate/planner"))).decided
    assert decided is not None
    return decided.data


def _codes(decided: ActionDecidedData) -> list[str]:
    return [r.code.value for r in decided.reasons]


async def test_a_draft_tasks_planner_proposal_claiming_autonomous_is_decided_draft(tmp_path: Path) -> None:
    service = _planned(await _service(tmp_path))
    await _submit(service, "draft")
    d = await _decide(service, "a-1", "autonomous")
    assert (d.outcome, _codes(d), d.mode) == ("escalate", ["draft_mode"], "draft")
    assert (d.facts["mode"], d.facts["task_mode"]) == ("draft", "draft")


async def test_an_outside_agents_proposal_of_a_learned_draft_task_is_decided_draft_too(tmp_path: Path) -> None:
    service = await _service(tmp_path)  # not the planner's key: the proposal does not wait, the task is learned already
    await _submit(service, "draft")
    d = await _decide(service, "a-1", "autonomous")
    assert (d.outcome, _codes(d)) == ("escalate", ["draft_mode"])


async def test_an_autonomous_task_runs_alone_and_a_proposal_may_ask_for_draft(tmp_path: Path) -> None:
    service = _planned(await _service(tmp_path))
    await _submit(service, "autonomous")
    alone = await _decide(service, "a-1", "autonomous")
    assert (alone.outcome, _codes(alone), alone.facts["task_mode"]) == ("allow", ["low_risk_write_allowed"], "autonomous")
    stricter = await _decide(service, "a-2", "draft")
    assert (stricter.outcome, _codes(stricter)) == ("escalate", ["draft_mode"])


async def test_the_tenant_still_caps_an_autonomous_task(tmp_path: Path) -> None:
    service = _planned(await _service(tmp_path, autonomous_tenant=False))
    await _submit(service, "autonomous")
    d = await _decide(service, "a-1", "autonomous")
    assert (d.outcome, _codes(d), d.facts["task_mode"]) == ("escalate", ["draft_mode"], "autonomous")


async def test_a_task_submitted_again_keeps_the_stricter_mode(tmp_path: Path) -> None:
    service = _planned(await _service(tmp_path))
    await _submit(service, "draft")
    await _submit(service, "autonomous")  # a second request of the task cannot lift it
    assert _codes(await _decide(service, "a-1", "autonomous")) == ["draft_mode"]
    await _submit(service, "autonomous", task_id="t-2")
    await _submit(service, "draft", task_id="t-2")  # and can make it stricter
    assert _codes(await _decide(service, "a-2", "autonomous", task_id="t-2")) == ["draft_mode"]


async def test_a_planners_proposal_whose_task_is_never_learned_is_decided_draft(tmp_path: Path) -> None:
    """No signed request says the task may run alone (a task the planner's login made up, or one lost): fail closed."""
    service = _planned(await _service(tmp_path))
    d = await _decide(service, "a-1", "autonomous", task_id="t-never-submitted")
    assert (d.outcome, _codes(d), d.facts["task_mode"]) == ("escalate", ["draft_mode"], "draft")


async def test_an_outside_agents_proposal_without_a_learned_task_keeps_its_own_mode(tmp_path: Path) -> None:
    """Today's rule for an agent outside the deployment whose task is on no topic: its mode, as the tenant allows."""
    service = await _service(tmp_path)
    d = await _decide(service, "a-1", "autonomous", task_id="t-outside")
    assert (d.outcome, _codes(d), d.facts["task_mode"]) == ("allow", ["low_risk_write_allowed"], None)
    assert _codes(await _decide(service, "a-2", "draft", task_id="t-outside")) == ["draft_mode"]


async def test_a_denial_before_the_facts_records_the_bounded_mode(tmp_path: Path) -> None:
    service = _planned(await _service(tmp_path))
    await _submit(service, "draft")
    d = await _decide(service, "a-1", "autonomous", tool="no_such_tool")
    assert (d.outcome, d.facts) == ("deny", {"mode": "draft", "task_mode": "draft"})


@pytest.mark.parametrize("task_mode", ["draft", "autonomous"])
async def test_what_if_decides_with_the_recorded_task_mode(tmp_path: Path, task_mode: Mode) -> None:
    """The same pack decides the recorded proposal the same way: the task's mode is taken from the decision's facts."""
    service = _planned(await _service(tmp_path))
    await _submit(service, task_mode)
    data = ActionProposedData(
        action_id="a-1", task_id="t-1", tenant_id="acme", step=2, tool="add_internal_note", args=NOTE, proposer="p", mode="autonomous"
    )
    record = await service.on_proposed(ActionProposed.build(data, source="tidegate/planner"))
    assert record.decided is not None
    tenants = {"acme": TenantSettings(allow_autonomous=True, internal_domains=["acme.example"])}
    report = evaluate(PACK, [data], [record.decided.data], tenants=tenants)
    assert (report.evaluated, report.unchanged, report.flips) == (1, 1, [])
    assert report.now_outcomes == {record.decided.data.outcome: 1}
