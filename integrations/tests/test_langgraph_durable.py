"""A LangGraph agent paused on an escalation, resumed from a durable checkpointer by a new process.

`InMemorySaver` kept across two clients (test_langgraph.py) keeps the paused graph's Python objects as they were; a
durable checkpointer writes them out and reads them back. Everything the middleware puts in the graph's state and in
its interrupt must survive that: here LangGraph's own SQLite checkpointer (`langgraph-checkpoint-sqlite`), on a file,
each "process" with its own connection, the first closed before the human decides.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Command

from integrations.harness import SideEffects, wait_pending
from integrations.tests.test_langgraph import ScriptedModel, agent, script
from tidegate.client import Tidegate
from tidegate.client.scripted import ScriptedTidegate

CONFIG = {"configurable": {"thread_id": "thread-durable"}}


async def test_a_thread_paused_on_an_escalation_resumes_from_sqlite_in_a_new_process_and_runs_once(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects, tmp_path: Path
) -> None:
    checkpoints = str(tmp_path / "checkpoints.sqlite3")
    async with make_client() as first, AsyncSqliteSaver.from_conn_string(checkpoints) as saver:
        model = script("issue_refund", {"payee_id": "cus_9", "amount_usd": 900.0})
        paused: dict[str, Any] = await agent(first, effects, model, saver).ainvoke({"messages": [("user", "refund 900")]}, CONFIG)
        [interrupt] = paused["__interrupt__"]
        ids = interrupt.value["tidegate"]
    # The first process and its connection are gone; only the file remains. A human approves meanwhile.
    approval_id = await wait_pending(governance)
    assert ids["approval_id"] == approval_id
    await governance.approve(approval_id)

    async with make_client() as second, AsyncSqliteSaver.from_conn_string(checkpoints) as saver:
        graph = agent(second, effects, ScriptedModel(messages=iter([AIMessage("done")])), saver)
        waiting = await graph.aget_state(CONFIG)
        [pending] = waiting.interrupts  # read back from the file: the same call, the same Tidegate ids
        assert pending.value["tidegate"] == ids
        state = await graph.ainvoke(Command(resume={pending.id: True}), CONFIG)
        again = await graph.ainvoke(Command(resume={pending.id: True}), CONFIG)  # a duplicate resume changes nothing

    [message] = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert message.content == "refunded 900.00 to cus_9"
    assert effects.of("issue_refund") == [{"payee_id": "cus_9", "amount_usd": 900.0}]
    assert len(governance.proposals) == 1
    assert again["messages"][-1].content == "done"
