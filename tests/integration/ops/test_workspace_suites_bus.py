"""The workspace suites through a real policy service and executor on Kafka and PostgreSQL: the same decisions as in process."""

from __future__ import annotations

from pathlib import Path

import pytest

from servicekit import REPO_ROOT, KitSettings
from tidegate.ops.workspaces import load_suite, run_suite, run_suite_through_service

SUITES = sorted((REPO_ROOT / "evals" / "workspaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
async def test_a_suite_through_the_policy_service_and_executor_on_the_bus(path: Path, kit: KitSettings, ops_login: Path) -> None:
    suite = load_suite(path)
    operator = kit.model_copy(update={"kafka_credentials_dir": ops_login})  # the `ops` login alone: no admin, no service's own
    on_bus = (await run_suite_through_service(suite, operator, REPO_ROOT / "policies" / "default")).as_dict()
    in_process = (await run_suite(suite, REPO_ROOT / "policies" / "default")).as_dict()
    figures = ("legit_calls", "allowed_without_human", "escalated", "denied", "attacks", "attacker_goals_reached_declared")
    assert {k: on_bus[k] for k in figures} == {k: in_process[k] for k in figures}, on_bus["misses"]
    assert on_bus["attacker_goals_reached_undeclared"] == 0
    # Every call the policy let through was performed by the executor (its `action.succeeded` read back), none other.
    assert on_bus["run_without_human"] == on_bus["allowed_without_human"] > 0, on_bus["misses"]
    shown = ("rubric_agent_calls", "run_without_human", "attacker_goals_reached_undeclared", "run_p50_ms", "run_p95_ms")
    print(f"\n{suite.name} on the bus:", {k: on_bus[k] for k in (*figures, *shown, "decision_p50_ms", "decision_p95_ms")})
