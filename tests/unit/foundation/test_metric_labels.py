"""An agent chooses two values the metrics are labelled with: a task's `workflow` and a proposal's `tool`.

One agent with one client key submits tasks of made-up workflows (2 KB each) and proposes made-up tools, some thousands
a second under its quota: each distinct value used to be a new series (36 per task in the planner, 2 per proposal in
the policy), kept for the life of the process and served on every scrape, until the planner ran out of memory. Now an
unknown tool is counted `uncatalogued`, a task that failed for an unknown workflow `unknown`, and a label holds at most
`LABEL_VALUES_KEPT` distinct values of reasonable length, the rest counted as `other`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

import schemas as s
from servicekit import metrics
from servicekit.metrics import LABEL_VALUES_KEPT, observe_published


@pytest.fixture(autouse=True)
def labels_kept_before() -> Iterator[None]:
    """The label values kept as they were: filling a label here must not make another test's workflow `other`."""
    kept = {label: set(values) for label, values in metrics._kept_values.items()}
    yield
    metrics._kept_values.clear()
    metrics._kept_values.update(kept)


def series(label: str, values: set[str]) -> int:
    """How many samples of any tidegate metric carry one of `values` as `label`."""
    return sum(
        1
        for metric in REGISTRY.collect()
        if metric.name.startswith("tidegate_")
        for sample in metric.samples
        if sample.labels.get(label) in values
    )


def labelled(label: str) -> set[str]:
    """Every value of `label` on a tidegate metric."""
    metrics = [metric for metric in REGISTRY.collect() if metric.name.startswith("tidegate_")]
    return {sample.labels[label] for metric in metrics for sample in metric.samples if label in sample.labels}


def decision(tool: str, policy_id: str) -> s.ActionDecided:
    reason = s.Reason(code=s.ReasonCode.NO_PERMIT, policy_id=policy_id, message="")
    data = s.ActionDecidedData(
        action_id=f"act-{uuid.uuid4()}", task_id="t-1", tenant_id="acme", tool=tool, args={}, action_digest="d" * 64,
        outcome="deny", reasons=[reason], policy_version="v1", latency_ms=1.0,
    )  # fmt: skip
    return s.ActionDecided.build(data, source="tidegate/policy")


def failed_task(workflow: str, reason: str) -> s.TaskFailed:
    data = s.TaskOutcomeData(
        task_id=f"t-{uuid.uuid4()}", tenant_id="acme", workflow=workflow, status="failed", summary="", reason=reason, duration_ms=1.0
    )
    return s.TaskFailed.build(data, source="tidegate/planner")


def test_made_up_tools_proposed_by_an_agent_add_no_series_to_the_policy() -> None:
    made_up = {"zz" + uuid.uuid4().hex for _ in range(300)}
    for tool in made_up:
        observe_published("policy", decision(tool, "builtin:unknown-tool"))

    assert series("tool", made_up) == 0
    assert "uncatalogued" in labelled("tool")


def test_made_up_workflows_submitted_by_an_agent_add_no_series_to_the_planner() -> None:
    made_up = {"wf" + uuid.uuid4().hex + "x" * 2000 for _ in range(300)}
    for workflow in made_up:
        observe_published("planner", failed_task(workflow, "unknown_workflow"))

    assert series("workflow", made_up) == 0
    assert "unknown" in labelled("workflow")


def test_a_label_keeps_a_bounded_number_of_values_whatever_the_producer_names() -> None:
    # A strategy that plans any workflow (a model), or a tool denied for another reason: the values are kept, up to a bound.
    before = len(labelled("workflow"))
    names = [f"w{i}_{uuid.uuid4().hex[:8]}" for i in range(LABEL_VALUES_KEPT * 3)]
    for workflow in names:
        observe_published("planner", failed_task(workflow, "no_progress"))
    long_one = "a" * 5000
    observe_published("planner", failed_task(long_one, "no_progress"))

    kept = labelled("workflow")
    assert len(kept) <= max(before, LABEL_VALUES_KEPT) + 2  # at most the bound, plus `other` and `unknown`
    assert "other" in kept
    assert long_one not in kept
    assert series("workflow", {"other"}) > 0
