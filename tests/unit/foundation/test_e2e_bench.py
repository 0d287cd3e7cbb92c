"""The end-to-end benchmark's own arithmetic and its tickets (bench/e2e_bench.py); no infrastructure."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bench.e2e_bench import MIX, bench_ticket, by_minute
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
