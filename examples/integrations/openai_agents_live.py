"""An OpenAI Agents SDK agent governed by a running Tidegate: the refund waits for a human, then runs once in Tidegate.

Unlike `openai_agents_agent.py` (scripted governance on a memory bus), this one talks to a real deployment
(`tidegate infra up && tidegate db migrate && tidegate topics ensure && tidegate up --detach`), with the client's
`TIDEGATE_CLIENT_*` exports of docs/integrations.md ("The Python client"; from your own app's folder, "From your own
application"). It governs the catalog's own `issue_refund` (a `python` tool Tidegate's executor runs against the
demo's payments tables, which `tidegate demo --seed-only` seeds; unseeded, the call runs and fails `unknown_payee`), so nothing is
served here (`serve=False`). The default refund, 899.00 USD of order O-5002 to cus_1002, is over acme's 500 USD
threshold: it is escalated, and the script prints the line a human approves it with, then waits.

    pip install '/path/to/tidegate[openai-agents]'               # into your app's venv
    python openai_agents_live.py --task ticket-1002              # then approve it: the script prints how

The model is the SDK's own `agents.testing.ScriptedModel`, so it runs without a model API; give `Agent` your model
(`model="gpt-4.1"`, or `OpenAIChatCompletionsModel(model=..., openai_client=AsyncOpenAI(base_url=...))` for a local
OpenAI-compatible server) and nothing else changes. Run it again with the same `--task` after a crash: the call is
followed, never proposed twice (the client's ledger and the saved run state are in `--state`).
Tested against the real policy, approval and executor: tests/integration/client/test_live_examples_with_services.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from agents import Agent, Runner, RunState, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call

from tidegate.client import SqliteProposals, Tidegate
from tidegate.integrations.openai_agents import escalations, governed_function_tool, settle_interruptions


def issue_refund(payee_id: str, amount_usd: float, order_id: str, reason: str = "") -> str:
    """Refund an amount in USD to a payee for an order."""
    # The catalog's `issue_refund` runs in Tidegate's executor; this function only gives the model its schema.
    raise RuntimeError("not served here: Tidegate's executor runs issue_refund")


async def main(task: str, state_dir: Path, payee: str, amount: float, order: str, wait_s: float) -> str:
    """Run the agent until the refund is decided and done; returns the text the model read as the tool's output."""
    set_tracing_disabled(True)  # the SDK would export its traces to OpenAI
    call = {"payee_id": payee, "amount_usd": amount, "order_id": order}
    model = ScriptedModel([[function_call("issue_refund", call, call_id="call_1")], [assistant_message("Done.")]])
    saved_run = state_dir / f"{task}.run.json"
    # A task per conversation, kept when it is resumed; the ledger lets a re-run follow its proposals.
    async with Tidegate(task_id=task, proposals=SqliteProposals(state_dir / "proposals.sqlite3")) as client:
        agent = Agent(name="support", model=model, tools=[governed_function_tool(client, issue_refund, serve=False)])
        if saved_run.exists():  # a re-run after a crash: resume the saved run, nothing is proposed again
            result = await Runner.run(agent, await RunState.from_string(agent, saved_run.read_text()))
        else:
            result = await Runner.run(agent, f"refund order {order} ({amount} USD) to {payee}")
        while result.interruptions:
            saved_run.write_text(result.to_state().to_string())  # keep it anywhere while a human decides
            state = await RunState.from_string(agent, saved_run.read_text())
            for waiting in await escalations(client, state):  # the approval each interruption waits for
                print(f"escalated: {waiting.action_id} waits for a human in approval {waiting.approval_id}; approve it with", flush=True)
                print(f"  tidegate approvals approve {waiting.approval_id}", flush=True)
            if not await _settled(client, state, wait_s):
                print(f"no decision within {wait_s:.0f} s: run this again with --task {task} to follow it", flush=True)
                return ""
            result = await Runner.run(agent, state)
        saved_run.unlink(missing_ok=True)
    said = [str(item.output) for item in result.new_items if item.type == "tool_call_output_item"]
    print(f"the model read: {json.dumps(said)}", flush=True)
    print(f"final output: {result.final_output}", flush=True)
    return said[-1] if said else ""


async def _settled(client: Tidegate, state: RunState, wait_s: float) -> bool:  # type: ignore[type-arg]
    """Whether Tidegate decided (and, if granted, ran) every interrupted call within `wait_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while loop.time() < deadline:
        if await settle_interruptions(client, state, timeout_s=5):
            return True
    return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--task", required=True, help="the conversation's task id (keep it to resume the run)")
    parser.add_argument("--state", type=Path, default=Path("state"), help="the client's proposal ledger and saved runs")
    parser.add_argument("--payee", default="cus_1002")
    parser.add_argument("--amount", type=float, default=899.0)
    parser.add_argument("--order", default="O-5002")
    parser.add_argument("--wait", type=float, default=600.0, help="seconds to wait for the human")
    args = parser.parse_args()
    args.state.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args.task, args.state, args.payee, args.amount, args.order, args.wait))
