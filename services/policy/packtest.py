"""Table-driven policy tests, as `opa test` does for Rego: each case is a call plus state, and the outcome and reason it must get.

A case file is `tests/*.yaml` in a pack directory, a list of cases:

```yaml
- name: refund under the threshold to a known payee is allowed
  tenant: acme                 # default: acme
  tool: issue_refund
  args: {payee_id: cus_1001, amount_usd: 499.99, order_id: O-1}
  mode: autonomous             # default: autonomous (draft mode has cases of its own)
  tainted_args: []             # default: []
  budget_usd: null             # the task's budget
  model_cost_usd: 0            # cost of producing the proposal
  confidence: null             # the proposer's confidence, 0–1
  state:                       # what the service would know; all optional
    payee_known: false         # learned from a successful refund
    spend_task_usd: 0
    spend_tenant_usd: 0
    tenant_budget_usd: null    # a control.budget record
    killswitch: false          # a kill switch on this tool for this tenant
    approval_granted: false    # evaluated again after a human grant
  facts: {}                    # override computed facts (e.g. documentation_present: false)
  flow: {}                     # the task so far: untrusted_read, tool_calls {tool: n}, external_sends, sent_amount_usd, last_decisions,
                               # retries, tool_errors
  records: {}                  # entries of the system of record the task read: {id: {amount_usd: 80, currency: usd}}
  failed_reads: {}             # entries whose read the task tried and that failed: {id: "http_500: down after 3 attempts"}
  settings: null               # a control.tenant record (e.g. triggers: {new_payee: {action: escalate}})
  expect: {outcome: allow, reason: within_threshold}   # reason: a code that must be among the reasons
                               # absent: [codes] that must not be among them
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import ControlKillswitch, ControlKillswitchData
from services.policy.engine import Controls, Verdict, decide
from services.policy.facts import Call, FailedRead, Flow, History, SystemRecord
from services.policy.pack import CompiledPack
from services.policy.tenant_settings import TenantSettings

__all__ = ["CaseResult", "PolicyCase", "load_cases", "run_case", "run_cases"]


class CaseState(BaseModel):
    """What the service would know when the case is decided."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    payee_known: bool = False
    spend_task_usd: float = 0.0
    spend_tenant_usd: float = 0.0
    tenant_budget_usd: float | None = None
    killswitch: bool = False
    approval_granted: bool = False


class RecordRead(BaseModel):
    """What a trusted read of an entry of the system of record said (a charge: what is left, its currency)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount_usd: float
    currency: str = "usd"


class Expectation(BaseModel):
    """The outcome a case must get and a reason code that must be among its reasons."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: Literal["allow", "escalate", "deny"]
    reason: str | None = None
    absent: list[str] = Field(default_factory=list, description="Reason codes that must not be among the reasons.")


class PolicyCase(BaseModel):
    """One row of a policy test table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    tenant: str = "acme"
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["draft", "autonomous"] = "autonomous"
    tainted_args: list[str] = Field(default_factory=list)
    budget_usd: float | None = None
    model_cost_usd: float = 0.0
    confidence: float | None = Field(default=None, ge=0, le=1, description="The proposer's confidence.")
    proposer: str = "tidegate/planner/playbook"
    state: CaseState = Field(default_factory=CaseState)
    facts: dict[str, Any] = Field(default_factory=dict)
    flow: dict[str, Any] = Field(default_factory=dict, description="The task's flow so far (`facts.Flow` fields).")
    records: dict[str, RecordRead] = Field(default_factory=dict, description="Entries of the system of record the task read, by id.")
    failed_reads: dict[str, str] = Field(
        default_factory=dict, description="Entries of the system of record whose read the task tried and that failed: id → the error."
    )
    settings: dict[str, Any] | None = Field(
        default=None, description="The tenant's `control.tenant` record (over the pack's `default` entry); `{}` onboards with defaults."
    )
    expect: Expectation
    source: str = ""


@dataclass(frozen=True)
class CaseResult:
    """How a case fared."""

    case: PolicyCase
    verdict: Verdict

    @property
    def passed(self) -> bool:
        """Whether the outcome and the expected reason match."""
        exp, codes = self.case.expect, self.verdict.codes
        reason_ok = exp.reason is None or exp.reason in codes
        return self.verdict.outcome == exp.outcome and reason_ok and not set(exp.absent) & set(codes)

    def describe(self) -> str:
        """One line: expected vs got."""
        exp = self.case.expect
        return (
            f"{self.case.source}: {self.case.name}: expected {exp.outcome}"
            + (f" ({exp.reason})" if exp.reason else "")
            + f", got {self.verdict.outcome} ({', '.join(self.verdict.codes)})"
        )


def load_cases(directory: Path) -> list[PolicyCase]:
    """Every case of `directory/tests/*.yaml` (or of `directory` itself when it holds the YAML files)."""
    tests = directory / "tests" if (directory / "tests").is_dir() else directory
    cases: list[PolicyCase] = []
    for path in sorted(tests.glob("*.y*ml")):
        rows = yaml.safe_load(path.read_text()) or []
        if not isinstance(rows, list):
            raise ValueError(f"{path}: a test file is a list of cases")
        for i, row in enumerate(rows):
            try:
                cases.append(PolicyCase.model_validate({**row, "source": f"{path.name}#{i + 1}"}))
            except ValidationError as exc:
                raise ValueError(f"{path} case {i + 1}: {exc}") from exc
    return cases


def _flow(doc: dict[str, Any]) -> Flow:
    """A case's `flow:` as a Flow (mappings become the sorted pairs Flow keeps)."""
    pairs: dict[str, Any] = {k: tuple(sorted(v.items())) if isinstance(v, dict) else v for k, v in doc.items()}
    return Flow(**pairs)


def run_case(pack: CompiledPack, case: PolicyCase) -> CaseResult:
    """Decide one case with the pack."""
    call = Call(
        tenant_id=case.tenant,
        task_id="policy-test",
        tool=case.tool,
        args=case.args,
        proposer=case.proposer,
        tainted_args=tuple(case.tainted_args),
        mode=case.mode,
        model_cost_usd=case.model_cost_usd,
        task_budget_usd=case.budget_usd,
        confidence=case.confidence,
        flow=_flow(case.flow),
        records={k: SystemRecord(r.amount_usd, r.currency, "the policy test") for k, r in case.records.items()},
        failed_reads={k: FailedRead(error, "the policy test") for k, error in case.failed_reads.items()},
    )
    st = case.state
    history = History(payee_known=st.payee_known, spend_task_usd=st.spend_task_usd, spend_tenant_usd=st.spend_tenant_usd)
    switch = None
    if st.killswitch:
        data = ControlKillswitchData(tenant_id=case.tenant, tool=case.tool, active=True, reason="policy test", set_by="policy-test")
        switch = ControlKillswitch.build(data, source="tidegate/policy-test")
    tenant = None
    if case.settings is not None:
        base = pack.settings.tenant(case.tenant).model_dump() if pack.settings.onboarded(case.tenant) else {}
        tenant = TenantSettings.model_validate(base | case.settings) if base else pack.settings.with_record(case.settings)
    controls = Controls(killswitch=switch, tenant_budget_usd=st.tenant_budget_usd, tenant=tenant)
    overrides = dict(case.facts)
    for key in ("sensitive_paths", "tainted_important_args"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    verdict = decide(pack, call, history, controls, approval_granted=st.approval_granted, fact_overrides=overrides or None)
    return CaseResult(case, verdict)


def run_cases(pack: CompiledPack, cases: list[PolicyCase]) -> list[CaseResult]:
    """Decide every case."""
    return [run_case(pack, c) for c in cases]
