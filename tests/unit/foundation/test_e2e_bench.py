"""The end-to-end benchmark's own arithmetic and its tickets (bench/e2e_bench.py); no infrastructure."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from bench.e2e_bench import MIX, Step, bench_ticket, by_minute, by_role, by_step, capacity, infra_pids, ramp_offsets, write_latencies
from servicekit import KitSettings
from systems.seed import TICKETS


def test_latency_is_grouped_by_the_minute_its_proposal_was_made() -> None:
    proposed = {"a": 0, "b": 30_000, "c": 61_000, "d": 119_000, "late": 125_000}
    results = {"a": 100, "b": 30_300, "c": 63_000, "d": 119_050, "late": 125_400}

    windows = by_minute(proposed, results)

    # the last window holds proposals of 5 seconds, not a minute: shown, but not a minute to call the worst
    assert windows == [(2, 100, 300, True), (2, 50, 2000, True), (1, 400, 400, False)]


def test_a_result_without_its_proposal_is_left_out_and_no_results_give_no_windows() -> None:
    assert by_minute({"a": 1_000}, {"a": 1_250, "unseen": 2_000}) == [(1, 250, 250, False)]
    assert by_minute({"a": 1_000}, {}) == []


def test_each_task_triages_a_ticket_of_its_own_that_the_tools_accept() -> None:
    pattern = yaml.safe_load((Path(__file__).parents[3] / "catalog/tools/get_ticket.yaml").read_text())
    ticket_pattern = pattern["args_schema"]["properties"]["ticket_id"]["pattern"]
    by_id = {t.ticket_id: t for t in TICKETS}

    tickets = [bench_ticket(i) for i in range(8)]

    assert len({t.ticket_id for t in tickets}) == 8
    assert all(re.fullmatch(ticket_pattern, t.ticket_id) for t in tickets)
    for i, ticket in enumerate(tickets):  # a copy of the mix's ticket, its id aside
        model = by_id[MIX[i % len(MIX)]]
        assert (ticket.customer_id, ticket.subject, ticket.body, ticket.order_id) == (
            model.customer_id,
            model.subject,
            model.body,
            model.order_id,
        )


def test_a_ramp_sends_each_steps_rate_for_its_length_one_step_after_another() -> None:
    offsets = ramp_offsets((2, 4), 1.5)

    assert offsets == [0.0, 0.5, 1.0, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75]


def test_a_step_holds_when_the_actions_executed_from_its_proposals_kept_within_the_p99() -> None:
    start = 10_000
    proposed = {"a": 10_100, "denied": 10_500, "b": 10_900, "c": 11_100, "d": 11_500, "e": 12_200, "early": 9_000, "after": 13_500}
    results = {"a": 10_200, "b": 11_000, "c": 11_200, "d": 12_000, "after": 13_600}  # d too slow; "denied" and e have none

    steps = by_step(proposed, results, start, (5, 10, 15), 1.0, 250)

    assert steps[:2] == [Step(5, 3, 2, 3.0, 100, 100, True), Step(10, 2, 2, 2.0, 100, 500, False)]  # d's 500 ms
    assert (steps[2].actions, steps[2].executed, steps[2].held) == (1, 0, False)  # nothing executed: nothing shown to hold
    assert len(steps) == 3  # "early" (before the ramp) and "after" (past its last step) belong to no step
    assert capacity(steps) == steps[0]


def test_capacity_is_the_last_step_held_before_the_first_that_did_not() -> None:
    held, lost = Step(1, 1, 1, 1.0, 1, 1, True), Step(2, 1, 1, 1.0, 900, 900, False)

    assert capacity([held, held._replace(rate=2), lost._replace(rate=3), held._replace(rate=4)]) == held._replace(rate=2)
    assert capacity([lost, held]) is None  # a step held after one that did not is noise, not capacity
    assert capacity([]) is None


def test_postgres_cpu_by_role_counts_each_backend_from_its_own_start_and_never_goes_negative() -> None:
    before = {10: ("policy", 40.0), 11: ("policy", 2.0), 20: ("planner", 5.0)}
    # 10 ended (its pool closed it, idle) and 12 replaced it; 11 and 20 lived on; 30 started for the executor
    after = {11: ("policy", 2.5), 12: ("policy", 1.0), 20: ("planner", 7.0), 30: ("executor", 0.75)}

    assert by_role(before, after) == {"executor": 0.75, "planner": 2.0, "policy": 1.5}
    assert by_role(before, {}) == {}  # every backend ended: nothing to tell by role


def test_the_latencies_file_lists_each_executed_action_by_when_it_was_proposed(tmp_path: Path) -> None:
    out = tmp_path / "latencies.csv"

    write_latencies(
        out, {"b": 1_700_000_001_500, "a": 1_700_000_000_250, "denied": 1_700_000_000_300}, {"a": 1_700_000_000_290, "b": 1_700_000_001_800}
    )

    assert out.read_text().splitlines() == [
        "proposed_at,latency_ms,action_id",
        "2023-11-14T22:13:20.250+00:00,40,a",
        "2023-11-14T22:13:21.500+00:00,300,b",
    ]


def test_the_infrastructure_pids_are_read_without_walking_the_brokers_data(tmp_path: Path, monkeypatch: Any) -> None:
    """The broker deletes a topic's directory whenever a test or a run drops its topics; the bench must not walk into it."""
    kafka = tmp_path / "kafka"
    (kafka / "data" / "t-0").mkdir(parents=True)
    (kafka / "node-2" / "data").mkdir(parents=True)
    (kafka / "kafka.pid").write_text(f"{os.getpid()}\n")
    (kafka / "node-2" / "kafka.pid").write_text(f"{os.getppid()}\n")
    (tmp_path / "pg" / "data").mkdir(parents=True)
    (tmp_path / "pg" / "data" / "postmaster.pid").write_text(f"{os.getpid()}\n/data\n")
    scandir = os.scandir

    def deleted_meanwhile(path: Any = ".") -> Any:  # a topic's directory the broker removed between two looks
        if Path(path).name == "data" or "data" in Path(path).parts[len(tmp_path.parts) :]:
            raise FileNotFoundError(path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", deleted_meanwhile)

    assert infra_pids(KitSettings(infra_dir=tmp_path)) == {"kafka": [os.getpid(), os.getppid()], "postgres": [os.getpid()]}
