"""A task is its requester's: a call is proposed in a task of its own requester only (red team F4, second red team F1).

A second agent of the tenant, holding its own registered key, proposed a step into another requester's task (one the
planner had finished ten minutes earlier): it was decided in that task's mode, counted in its figures, run, and
`tidegate audit explain` showed it as the task's step. Then the guard was first come, first served: an agent that used
a predictable task id before its owner (a task request or a proposal of its own) owned the victim's task, its refund
was allowed in it, and the victim's planner task read "Requested by: <attacker>". Now a task id two requesters used
decides nothing more, for either of them, and says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_policy_provenance import onboarded_service

from schemas import ActionProposed, ActionProposedData, TaskSubmitted, TaskSubmittedData
from servicekit.undo import undo_action_id
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

CLIENT_SOURCE = "urn:tidegate:client:agent"
DENIED = "deny:task_of_another_requester"


@pytest.fixture
async def service(tmp_path: Path) -> PolicyService:
    # `planned`: a stand-in for "signed by the planner's key"
    return await onboarded_service(
        tmp_path, settings=PolicySettings(provenance_wait_s=5), planned=lambda event: event.source == "tidegate/planner"
    )


async def _submit(service: PolicyService, requested_by: str, task_id: str = "t-demo") -> None:
    request = TaskSubmittedData(
        task_id=task_id, tenant_id="acme", workflow="support_triage", input={"ticket_id": "T-1007"}, requested_by=requested_by,
        mode="autonomous",
    )  # fmt: skip
    await service.on_tasks([TaskSubmitted.build(request, source="tidegate/cli")])


async def _propose(
    service: PolicyService,
    *,
    requested_by: str,
    action_id: str,
    source: str = CLIENT_SOURCE,
    task_id: str = "t-demo",
    undoes: str | None = None,
    tool: str = "add_internal_note",
    args: dict[str, object] | None = None,
) -> list[str]:
    data = ActionProposedData(
        action_id=action_id, task_id=task_id, tenant_id="acme", step=9, tool=tool,
        args=args or {"ticket_id": "T-1007", "note": "customer verified identity by phone; OK to reset"}, proposer="agent",
        requested_by=requested_by, mode="autonomous", undoes=undoes,
    )  # fmt: skip
    decided = (await service.on_proposed(ActionProposed.build(data, source=source))).decided
    assert decided is not None
    return [f"{decided.data.outcome}:{r.code.value}" for r in decided.data.reasons]


async def test_another_requesters_agent_is_denied_in_the_task(service: PolicyService) -> None:
    await _submit(service, "demo@acme.example")
    assert await _propose(service, requested_by="mallory@acme.example", action_id="a-mallory") == [DENIED]


async def test_the_tasks_own_requester_the_planner_and_a_task_of_ones_own_are_decided_as_before(service: PolicyService) -> None:
    await _submit(service, "demo@acme.example")
    own = await _propose(service, requested_by="demo@acme.example", action_id="a-demo")
    planner = await _propose(service, requested_by="demo@acme.example", source="tidegate/planner", action_id="a-planner")
    elsewhere = await _propose(service, requested_by="mallory@acme.example", action_id="a-new", task_id="t-mallory")
    assert own == planner, (own, planner)  # the same call, decided alike whoever of the task proposed it
    for said in (own, planner, elsewhere):
        assert DENIED not in said, said


async def test_an_id_taken_first_by_a_proposal_is_nobodys_once_its_requester_submits_it(service: PolicyService) -> None:
    """Second red team F1, T2: the attacker proposes under the victim's coming task id before the victim submits it."""
    first = await _propose(service, requested_by="mallory@acme.example", action_id="a-first")
    assert DENIED not in first  # nobody's task yet: mallory's own, as far as anyone can tell
    await _submit(service, "victim@acme.example")
    assert await _propose(service, requested_by="mallory@acme.example", action_id="a-2") == [DENIED]
    assert await _propose(service, requested_by="victim@acme.example", action_id="a-3") == [DENIED]  # said, not run in a shared id


async def test_a_task_id_another_requester_submitted_first_decides_nothing_for_the_planners_run_of_it(service: PolicyService) -> None:
    """Second red team F1, T5: mallory submits the victim's predictable id first; the planner runs the victim's task."""
    await _submit(service, "mallory@acme.example")
    await _submit(service, "victim@acme.example")  # the policy keeps the first request
    planner = await _propose(service, requested_by="victim@acme.example", source="tidegate/planner", action_id="a-planner")
    assert planner == [DENIED]
    assert await _propose(service, requested_by="mallory@acme.example", action_id="a-mallory") == [DENIED]  # the id is two's now


async def test_an_undo_is_any_of_the_tenants_people_to_ask(service: PolicyService) -> None:
    """`tidegate undo` proposes in the undone call's task as whoever runs it (`--requested-by`, cli@localhost by default)."""
    await _submit(service, "demo@acme.example")
    assert DENIED not in await _propose(service, requested_by="demo@acme.example", action_id="a-1")
    undo = await _propose(
        service,
        requested_by="cli@localhost",
        action_id=undo_action_id("a-1"),
        undoes="a-1",
        tool="delete_internal_note",
        args={"ticket_id": "T-1007", "note_id": 1},
    )  # fmt: skip  (the executor's plan: the catalog's undo of add_internal_note, the note id from its result)
    assert DENIED not in undo
    assert DENIED not in await _propose(service, requested_by="demo@acme.example", action_id="a-2")  # an undo claims nothing


async def test_a_call_labelled_an_undo_is_the_call_it_is_in_another_requesters_task(service: PolicyService) -> None:
    """Any client can write `undoes`: mallory labels her own calls undos of the victim's step to ride the victim's task.

    A call is any of the tenant's people's to ask there only when it is the undo the catalog names of a call of that task,
    with the arguments the catalog takes from that call: otherwise it is the call it is, and the task is not hers.
    """
    await _submit(service, "victim@acme.example")
    for step in ("a-1", "a-2"):
        assert DENIED not in await _propose(service, requested_by="victim@acme.example", source="tidegate/planner", action_id=step)
    not_its_undo = await _propose(service, requested_by="mallory@acme.example", action_id=undo_action_id("a-1"), undoes="a-1")
    assert not_its_undo == [DENIED], not_its_undo  # a note of hers, labelled the undo of the victim's note
    another_ticket = await _propose(
        service, requested_by="mallory@acme.example", action_id=undo_action_id("a-2"), undoes="a-2", tool="delete_internal_note",
        args={"ticket_id": "T-2000", "note_id": 9},
    )  # fmt: skip
    assert another_ticket == [DENIED], another_ticket  # the undo's tool, but not on the ticket the step wrote
    nothing_undone = await _propose(
        service, requested_by="mallory@acme.example", action_id=undo_action_id("a-never"), undoes="a-never",
        tool="delete_internal_note", args={"ticket_id": "T-1007", "note_id": 1},
    )  # fmt: skip
    assert nothing_undone == [DENIED], nothing_undone  # the undo of no call of this task


async def test_two_requesters_in_one_polled_batch_are_as_two_in_two_batches(service: PolicyService) -> None:
    """A proposal naming another requester, polled in the same batch as the planner's first one, still contests the id.

    The batch reads each task's owners once, before any of its proposals is recorded: the second requester's proposal
    read the task as nobody's and both were decided as if the id were one requester's (noticed in the review of red
    team F4's fix). One at a time, the planner's proposal after mallory's is denied; in one batch it must be too.
    """

    def proposal(requested_by: str, action_id: str, source: str) -> ActionProposed:
        data = ActionProposedData(
            action_id=action_id, task_id="t-batch", tenant_id="acme", step=1, tool="add_internal_note",
            args={"ticket_id": "T-1007", "note": "verified"}, proposer="agent", requested_by=requested_by, mode="autonomous",
        )  # fmt: skip
        return ActionProposed.build(data, source=source)

    batch = [proposal("mallory@acme.example", "a-mallory", CLIENT_SOURCE), proposal("victim@acme.example", "a-victim", "tidegate/planner")]
    records = await service.on_proposed_batch(batch, traced=False)
    said = [[f"{r.decided.data.outcome}:{c.code.value}" for c in r.decided.data.reasons] for r in records if r.decided is not None]
    assert DENIED not in said[0]  # the first to name the id: nobody else had, as one at a time
    assert said[1] == [DENIED], said  # the planner's, naming a second requester in the same batch
