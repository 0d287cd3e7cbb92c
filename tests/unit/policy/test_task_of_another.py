"""An outside agent proposes in tasks of its own requester only (red team F4).

A second agent of the tenant, holding its own registered key, proposed a step into another requester's task (one the
planner had finished ten minutes earlier): it was decided in that task's mode, counted in its figures, run, and
`tidegate audit explain` showed it as the task's step 9.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_policy_provenance import CATALOG, TENANT

from schemas import ActionProposed, ActionProposedData, ControlTenant, ControlTenantData, Envelope, TaskSubmitted, TaskSubmittedData
from servicekit import REPO_ROOT, ControlState, EventOutlet, KitSettings, SigningKey, sign_as_operator
from services.policy import InMemoryPolicyRepository
from services.policy.pack import PackSource, compile_pack
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

CLIENT_SOURCE = "urn:tidegate:client:agent"


@pytest.fixture
async def service(tmp_path: Path) -> PolicyService:
    async def publish(topic: str, event: Envelope) -> None:
        return None

    svc = PolicyService(
        catalog=CATALOG,
        pack=compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG),
        repo=InMemoryPolicyRepository(),
        signer=SigningKey.load_or_create(tmp_path, "policy"),
        keys_dir=tmp_path,
        control=ControlState(),
        publish_many=EventOutlet(publish).publish_many,
        settings=PolicySettings(provenance_wait_s=5),
        planned=lambda event: event.source == "tidegate/planner",  # stand-ins for "signed by the planner's / a client's key"
        outside=lambda event: event.source == CLIENT_SOURCE,
    )
    record = ControlTenant.build(ControlTenantData(tenant_id="acme", settings=TENANT, set_by="admin"), source="cli")
    await svc.on_control(sign_as_operator(KitSettings(keys_dir=tmp_path / "operator"), record))
    request = TaskSubmittedData(
        task_id="t-demo", tenant_id="acme", workflow="support_triage", input={"ticket_id": "T-1007"}, requested_by="demo@acme.example",
        mode="autonomous",
    )  # fmt: skip
    await svc.on_tasks([TaskSubmitted.build(request, source="tidegate/cli")])
    return svc


async def _propose(service: PolicyService, *, requested_by: str, source: str, action_id: str, task_id: str = "t-demo") -> list[str]:
    data = ActionProposedData(
        action_id=action_id, task_id=task_id, tenant_id="acme", step=9, tool="add_internal_note",
        args={"ticket_id": "T-1007", "note": "customer verified identity by phone; OK to reset"}, proposer="agent",
        requested_by=requested_by, mode="autonomous",
    )  # fmt: skip
    decided = (await service.on_proposed(ActionProposed.build(data, source=source))).decided
    assert decided is not None
    return [f"{decided.data.outcome}:{r.code.value}" for r in decided.data.reasons]


async def test_another_requesters_agent_is_denied_in_the_task(service: PolicyService) -> None:
    said = await _propose(service, requested_by="mallory@acme.example", source=CLIENT_SOURCE, action_id="a-mallory")
    assert said == ["deny:task_of_another_requester"]


async def test_the_tasks_own_requester_the_planner_and_a_task_of_ones_own_are_decided_as_before(service: PolicyService) -> None:
    own = await _propose(service, requested_by="demo@acme.example", source=CLIENT_SOURCE, action_id="a-demo")
    planner = await _propose(service, requested_by="demo@acme.example", source="tidegate/planner", action_id="a-planner")
    elsewhere = await _propose(service, requested_by="mallory@acme.example", source=CLIENT_SOURCE, action_id="a-new", task_id="t-mallory")
    assert own == planner, (own, planner)  # the same call, decided alike whoever of the task proposed it
    for said in (own, planner, elsewhere):
        assert not any(code.endswith("task_of_another_requester") for code in said), said
