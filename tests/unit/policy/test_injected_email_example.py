"""The documented injected email (examples/injected_email/task.json) reaches an approver, its injection flagged.

Quote probe F4: no demo ticket's injection escalated to an approver (T-1005 names a new payee: denied), so nobody trying
Tidegate saw what the approver is shown. docs/demo.md submits this example; here it goes through the demo's playbook
and the default pack as `tidegate submit -i @examples/injected_email/task.json -u subject -u body --mode autonomous` does.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas import ActionProposed, ActionProposedData, TaskSubmitted, TaskSubmittedData
from servicekit import REPO_ROOT
from services.planner.playbooks import plan_support_triage
from tests.unit.policy.test_policy_provenance import TENANT, onboarded_service

EXAMPLE = REPO_ROOT / "examples" / "injected_email" / "task.json"


async def test_the_documented_injected_email_escalates_with_its_injection_flagged(tmp_path: Path) -> None:
    task = TaskSubmittedData(
        task_id="t-inj",
        tenant_id="acme",
        workflow="support_triage",
        input=json.loads(EXAMPLE.read_text()),
        untrusted=["subject", "body"],
        requested_by="cli@localhost",
        mode="autonomous",
    )
    [refund] = [s for s in plan_support_triage(task) if s.tool == "issue_refund"]
    assert refund.args["payee_id"] == "cus_1001"  # the email's payee, a payee acme paid before, not the one on file
    service = await onboarded_service(tmp_path, TENANT)
    await service.on_task(TaskSubmitted.build(task, source="client"))
    proposal = ActionProposedData(
        action_id="a-1", task_id="t-inj", tenant_id="acme", step=4, tool="issue_refund", args=refund.args,
        tainted_args=refund.tainted_args, proposer="planner", mode="autonomous",
    )  # fmt: skip
    decided = (await service.on_proposed(ActionProposed.build(proposal, source="planner"))).decided
    assert decided is not None
    d = decided.data
    assert (d.outcome, [r.code.value for r in d.reasons]) == ("escalate", ["tainted_argument"])  # an approver decides it
    [quote] = [t["excerpt"] for t in d.facts["taint"] if t["arg"] == "payee_id" and "excerpt" in t]
    assert quote["at"] > 2000  # the payee stands 2 KB below the injection
    [source] = d.facts["untrusted_passages"]
    first = source["passages"][0]
    assert first["at"] == 0
    assert "ignore all previous instructions" in first["text"]
    assert {"hidden", "invisible", "role", "override"} <= set(first["kinds"])
