"""A CrewAI crew governed by Tidegate, offline: the refund blocks the crew until a human approves it with an edit.

PYTHONPATH=. .venv-crewai/bin/python examples/integrations/crewai_crew.py
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _offline import rule
from crewai import Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM

from tidegate.client import ClientSettings, MemoryTransport, SqliteProposals, SyncTidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.crewai import governed_crewai_tool


class ScriptedLLM(BaseLLM):
    """Stands in for a model: one ReAct call for a 900 USD refund, then a final answer quoting the tool."""

    calls: int = 0

    def call(self, messages: Any, tools: Any = None, callbacks: Any = None, available_functions: Any = None, **kwargs: Any) -> str:
        self.calls += 1
        if self.calls == 1:
            return 'Thought: I should refund.\nAction: issue_refund\nAction Input: {"payee_id": "cus_1", "amount_usd": 900.0}'
        said = [str(m["content"]) for m in messages if m["role"] == "assistant" and "Observation:" in str(m["content"])]
        return f"Thought: done.\nFinal Answer: {said[-1].rsplit('Observation:', 1)[1].strip() if said else 'nothing'}"

    def supports_function_calling(self) -> bool:
        return False


def issue_refund(payee_id: str, amount_usd: float) -> str:
    """Refund a customer."""
    return f"refunded {amount_usd:.2f} to {payee_id}"


def main() -> list[str]:
    story: list[str] = []
    state = Path(tempfile.mkdtemp(prefix="tidegate-crewai-"))
    offline = {"CREWAI_DISABLE_TELEMETRY": "true", "CREWAI_TRACING_ENABLED": "false", "OTEL_SDK_DISABLED": "true"}
    for name, value in (offline | {"CREWAI_STORAGE_DIR": str(state / "crewai")}).items():
        os.environ.setdefault(name, value)
    bus = MemoryTransport()
    tidegate = ScriptedTidegate(bus, rule, topic_tools=("issue_refund",))
    proposals = SqliteProposals(state / "proposals.sqlite3")
    with SyncTidegate(ClientSettings(state_dir=state), transport=bus, task_id="ticket-1007", proposals=proposals) as tg:
        tg.run(tidegate.__aenter__())
        # The line that governs an existing crew: its tools, wrapped (the run key makes a re-run pick up the decision).
        refund = governed_crewai_tool(tg, issue_refund, run_key="ticket-1007")
        agent = Agent(role="support", goal="help the customer", backstory="careful", llm=ScriptedLLM(model="scripted"), tools=[refund])
        crew = Crew(agents=[agent], tasks=[Task(description="refund order O-1 (900 USD)", expected_output="one sentence", agent=agent)])
        outputs: list[Any] = []
        running = threading.Thread(target=lambda: outputs.append(crew.kickoff()))
        running.start()
        deadline = time.monotonic() + 10
        while not tidegate.pending():  # a person would open the approver page; here we look until the request is there
            assert time.monotonic() < deadline, "no approval request"
            time.sleep(0.02)
        story.append(f"waiting: the crew is blocked on {tidegate.pending()[0].tool} ({tidegate.pending()[0].reasons[0].code})")
        edited = {"payee_id": "cus_1", "amount_usd": 450.0}
        tg.run(tidegate.approve(tidegate.pending()[0].approval_id, "bob@acme.example", edited_args=edited))
        running.join(timeout=30)
        story.append(f"resumed: {outputs[0].raw}")
        tg.run(tidegate.__aexit__(None, None, None))
    for line in story:
        print(line)
    return story


if __name__ == "__main__":
    main()
