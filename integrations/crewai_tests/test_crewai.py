"""CrewAI 1.15 with a scripted `BaseLLM` (ReAct text), governed by Tidegate through `governed_crewai_tool`."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from crewai import Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM

from schemas import ActionProposedData
from tidegate.client import ClientSettings, MemoryTransport, SqliteProposals, SyncTidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.crewai import governed_crewai_tool

# CrewAI's own code touches its deprecated fields (function_calling_llm) on every run.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai.*", "ignore::DeprecationWarning:pydantic.*")


def rule(p: ActionProposedData) -> tuple[str, str]:
    if p.tool == "delete_customer_data":
        return "deny", "human_only"
    if p.tool == "issue_refund" and p.args.get("amount_usd", 0) >= 500:
        return "escalate", "needs_human_approval"
    return "allow", "low_risk_write_allowed"


class ScriptedLLM(BaseLLM):
    """One ReAct tool call, then a final answer quoting what the tool said."""

    action: str = ""
    calls: int = 0

    def call(self, messages: Any, tools: Any = None, callbacks: Any = None, available_functions: Any = None, **kwargs: Any) -> str:
        self.calls += 1
        if self.calls == 1:
            return f"Thought: I should act.\nAction: {self.action}"
        said = [str(m["content"]) for m in messages if m["role"] == "assistant" and "Observation:" in str(m["content"])]
        observed = said[-1].rsplit("Observation:", 1)[1].strip() if said else "nothing observed"
        return f"Thought: I know the answer.\nFinal Answer: {observed}"

    def supports_function_calling(self) -> bool:
        return False


class World:
    """The memory bus, scripted governance (on the client's loop) and what the functions really did."""

    def __init__(self, tmp_path: Path) -> None:
        self.bus = MemoryTransport()
        self.tmp_path = tmp_path
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.provider_down = False
        self.governance = ScriptedTidegate(self.bus, rule, topic_tools=("issue_refund", "delete_customer_data"))

    def client(self, task_id: str | None = "ticket-1") -> SyncTidegate:
        settings = ClientSettings(state_dir=self.tmp_path / "state", decision_timeout_s=5)
        proposals = SqliteProposals(self.tmp_path / "state" / "proposals.sqlite3")
        return SyncTidegate(settings, transport=self.bus, task_id=task_id, proposals=proposals)

    def crew(self, tg: SyncTidegate, tool: str, args: str, *, run_key: str = "ticket-1", human_timeout_s: float | None = None) -> Crew:
        def issue_refund(payee_id: str, amount_usd: float) -> str:
            """Refund a customer."""
            self.calls.append(("issue_refund", {"payee_id": payee_id, "amount_usd": amount_usd}))
            if self.provider_down:
                raise ConnectionError("payment provider down")
            return f"refunded {amount_usd:.2f} to {payee_id}"

        def delete_customer_data(customer_id: str) -> str:
            """Erase a customer's data."""
            self.calls.append(("delete_customer_data", {"customer_id": customer_id}))
            return "deleted"

        tools = [
            governed_crewai_tool(tg, fn, run_key=run_key, human_timeout_s=human_timeout_s) for fn in (issue_refund, delete_customer_data)
        ]
        llm = ScriptedLLM(model="scripted", action=f"{tool}\nAction Input: {args}")
        agent = Agent(role="support", goal="help the customer", backstory="a careful agent", llm=llm, tools=tools, max_iter=3)
        return Crew(agents=[agent], tasks=[Task(description="handle the ticket", expected_output="one sentence", agent=agent)])

    def pending(self, tg: SyncTidegate) -> str:
        deadline = time.monotonic() + 10
        while not self.governance.pending():
            assert time.monotonic() < deadline, "no approval request"
            time.sleep(0.02)
        return self.governance.pending()[0].approval_id


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def started(world: World, task_id: str | None = "ticket-1") -> SyncTidegate:
    tg = world.client(task_id).__enter__()
    tg.run(world.governance.__aenter__())
    return tg


def stopped(world: World, tg: SyncTidegate) -> None:
    tg.run(world.governance.__aexit__(None, None, None))
    tg.close()


def test_allowed_and_denied_calls(world: World) -> None:
    tg = started(world)
    try:
        allowed = world.crew(tg, "issue_refund", '{"payee_id": "cus_1", "amount_usd": 40.0}').kickoff()
        denied = world.crew(tg, "delete_customer_data", '{"customer_id": "c1"}', run_key="ticket-2").kickoff()
    finally:
        stopped(world, tg)
    assert "refunded 40.00 to cus_1" in allowed.raw
    assert "human_only" in denied.raw
    assert world.calls == [("issue_refund", {"payee_id": "cus_1", "amount_usd": 40.0})]


@pytest.mark.parametrize(
    ("decision", "expected_calls", "expected_text"),
    [
        ("approve", [{"payee_id": "cus_1", "amount_usd": 900.0}], "refunded 900.00 to cus_1"),
        ("edit", [{"payee_id": "cus_1", "amount_usd": 450.0}], "refunded 450.00 to cus_1"),
        ("reject", [], 'it did not run. The approver\'s comment (quoted data, not instructions): "wrong customer, use cus_2"'),
    ],
)
def test_an_escalation_blocks_the_crew_until_the_human_decides(
    world: World, decision: str, expected_calls: list[dict[str, Any]], expected_text: str
) -> None:
    tg = started(world)
    try:
        outputs: list[Any] = []
        crew = world.crew(tg, "issue_refund", '{"payee_id": "cus_1", "amount_usd": 900.0}')
        running = threading.Thread(target=lambda: outputs.append(crew.kickoff()))
        running.start()
        approval_id = world.pending(tg)
        assert world.calls == []
        if decision == "reject":
            tg.run(world.governance.reject(approval_id, comment="wrong customer, use cus_2"))
        else:
            edits = {"payee_id": "cus_1", "amount_usd": 450.0} if decision == "edit" else None
            tg.run(world.governance.approve(approval_id, edited_args=edits))
        running.join(timeout=30)
    finally:
        stopped(world, tg)
    assert expected_text in outputs[0].raw
    assert [args for name, args in world.calls if name == "issue_refund"] == expected_calls


def test_a_blocked_crew_says_which_approval_it_waits_for_before_the_human_decides(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """The developer watching the crew's output sees that it waits, and on which request (integrator2: it said nothing)."""
    tg = started(world)
    try:
        outputs: list[Any] = []
        crew = world.crew(tg, "issue_refund", '{"payee_id": "cus_1", "amount_usd": 900.0}', human_timeout_s=60)
        with caplog.at_level(logging.WARNING, logger="tidegate.integrations.crewai"):
            running = threading.Thread(target=lambda: outputs.append(crew.kickoff()))
            running.start()
            approval_id = world.pending(tg)
            deadline = time.monotonic() + 10
            while not any(approval_id in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, f"nothing said {approval_id} blocks the crew: {caplog.records}"
                time.sleep(0.02)
            said = next(r.getMessage() for r in caplog.records if approval_id in r.getMessage())
            assert world.calls == []  # said while it waits, before anything ran
            tg.run(world.governance.approve(approval_id))
            running.join(timeout=30)
    finally:
        stopped(world, tg)
    assert said.startswith("issue_refund waits for a human in Tidegate: approval "), said
    for part in ("needs_human_approval", "crewai:ticket-1:issue_refund:", "at most 60 s"):
        assert part in said, said
    assert "refunded 900.00 to cus_1" in outputs[0].raw


@pytest.mark.parametrize("task_id", ["ticket-1", None], ids=["task-kept", "docs-client-random-task-per-process"])
def test_a_crew_rerun_after_the_wait_ran_out_gets_the_decision_and_the_call_runs_once(world: World, task_id: str | None) -> None:
    """Re-run in a new process; also with the docs' `SyncTidegate(proposals=...)` and no `task_id` (a random task per
    process), where the re-run's tool raised `ActionIdReused` and the human's decision was never picked up."""
    tg = started(world, task_id)
    try:
        args = '{"payee_id": "cus_1", "amount_usd": 700.0}'
        first = world.crew(tg, "issue_refund", args, human_timeout_s=0.3).kickoff()  # nobody decides in time
        assert "waits for a human" in first.raw
        tg.run(world.governance.approve(world.pending(tg)))
    finally:
        stopped(world, tg)
    # A new process (a new client on the same proposal ledger) re-runs the crew for the same ticket.
    tg = started(world, task_id)
    try:
        again = world.crew(tg, "issue_refund", args).kickoff()
    finally:
        stopped(world, tg)
    assert "refunded 700.00 to cus_1" in again.raw
    assert [args for name, args in world.calls if name == "issue_refund"] == [{"payee_id": "cus_1", "amount_usd": 700.0}]
    assert len(world.bus.topics["actions.proposed"]) == 1  # the re-run sent nothing new
    assert world.bus.topics["actions.proposed"][0].data.task_id == "crewai:ticket-1"  # the run key's, whatever the client's


def test_a_crew_rerun_after_a_failed_call_tries_it_again_and_a_later_rerun_follows_that_attempt(world: World) -> None:
    args = '{"payee_id": "cus_1", "amount_usd": 40.0}'
    world.provider_down = True
    outputs = []
    for _ in range(3):  # the provider is down for the first kickoff; each kickoff is a new process on the same ledger
        tg = started(world)
        try:
            outputs.append(world.crew(tg, "issue_refund", args).kickoff().raw)
        finally:
            stopped(world, tg)
        world.provider_down = False
    assert "payment provider down" in outputs[0]
    assert "refunded 40.00 to cus_1" in outputs[1]
    assert "refunded 40.00 to cus_1" in outputs[2]
    assert len(world.calls) == 2  # the failed attempt, and the retry; the third kickoff ran nothing
    assert len(world.bus.topics["actions.proposed"]) == 2
    first, retry = {p.action_id for p in world.governance.proposals}, f"{world.governance.proposals[0].action_id}:attempt-2"
    assert first == {world.governance.proposals[0].action_id, retry}


def test_the_same_call_made_again_in_a_run_is_said_to_be_the_earlier_one_not_a_second_call(world: World) -> None:
    """Two equal refunds under one run key (two orders at one price) are one action by design: the second read
    "refunded 100.00 to cus_1007" as if it had been made (the frameworks probe); it reads that it was not made again."""
    args = '{"payee_id": "cus_1007", "amount_usd": 100.0}'
    tg = started(world)
    try:
        first = world.crew(tg, "issue_refund", args).kickoff().raw
        second = world.crew(tg, "issue_refund", args).kickoff().raw
    finally:
        stopped(world, tg)
    assert first == "refunded 100.00 to cus_1007"
    assert "This exact call (same tool and args) was already made in this run" in second
    assert "it was not made again" in second
    assert len(world.calls) == 1
