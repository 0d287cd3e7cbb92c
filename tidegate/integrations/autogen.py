"""AutoGen (autogen-agentchat 0.7): a workbench whose every tool call goes through Tidegate.

    workbench = GovernedWorkbench(client, [FunctionTool(issue_refund, description="...")])
    agent = AssistantAgent("support", model_client=model, workbench=workbench)
    result = await agent.run(task="...")

AutoGen's agents reach their tools through a `Workbench`; this one proposes each call (action id
`autogen:<task id>:<call id>`: use a task per conversation and keep it when resuming) and returns
what Tidegate made of it: the result of a call that ran, or an error result saying why one was denied
or rejected (the reason codes, policy's messages, the approver's comment). Args are checked first with the
tool's own model (as `run_json` checks them): a call whose args do not fit gets the error `StaticWorkbench`
gives and is never proposed; one that fits is proposed as that check accepted it, in JSON form (`"900"` for
a number as `900.0`).
The tool functions are served as governed `topic` tools, so a
function runs only when Tidegate's executor invokes it with the policy's signed authorization, and
once per call however often it is invoked.
`call_tool` never raises (AutoGen's agent would wait for ever): args the client refuses, no decision
in time and an action id another call holds are error results saying why, as `StaticWorkbench` answers errors.
AutoGen has no approval of its own for tool calls: an escalated call waits for the human's decision
(as AutoGen's `UserProxyAgent` waits for its human), and a run that restarts after a crash replays
the same call id, which follows the first proposal instead of making a second one.
A governed workbench is not a declarative component: `dump_component()` (of it, or of an agent or team
holding it) raises instead of writing a plain `StaticWorkbench` that would load back ungoverned, since
its client (keys, login, proposal ledger) cannot live in a config. Build the agent in code instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from autogen_core import CancellationToken
from autogen_core.tools import BaseTool, StaticWorkbench, TextResultContent, ToolResult
from pydantic import ValidationError

from tidegate.client import Escalated, Executed, Tidegate
from tidegate.integrations._common import checked_args, outcome_text, proposal_error_text, serve_function

__all__ = ["GovernedWorkbench"]

log = logging.getLogger(__name__)

# The action id is `autogen:<task>:<call id>`, and nothing AutoGen hands the workbench outlives the process: under the
# client's random default task, a run re-run after a crash in a new process proposed its calls again as new actions (a
# second approval request, a refund paid twice once both were approved), with nothing said (the integrator probe).
_RANDOM_TASK = (
    "GovernedWorkbench on a client of its random default task %s: a run re-run in another process (after a crash, a "
    "deploy) proposes its calls again as new actions, a second approval request or a second refund. Give each "
    "conversation a task of its own and keep it when re-running: Tidegate(task_id=...)"
)


class GovernedWorkbench(StaticWorkbench):
    """A `StaticWorkbench` that never calls a tool itself: it proposes, and Tidegate's executor invokes the served function.

    Args:
        client: A started `Tidegate` client.
        tools: The agent's tools; each is a catalog tool of kind `topic` named as the tool.
        human_timeout_s: Longest a call waits for a human (default: as long as it takes); past it the
            call returns an error result naming the approval, and the same call id later picks it up.
    """

    component_provider_override = "tidegate.integrations.autogen.GovernedWorkbench"

    def __init__(self, client: Tidegate, tools: Sequence[BaseTool[Any, Any]], *, human_timeout_s: float | None = None) -> None:
        super().__init__(list(tools))
        self.client = client
        self.human_timeout_s = human_timeout_s
        if not client.task_chosen:  # a re-run in another process would name its calls anew: said once, where it is built
            log.warning(_RANDOM_TASK, client.task_id)
        for tool in tools:
            serve_function(client, tool.name, _runner(tool))

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Propose the call (keyed on the model's call id), wait for policy and any human, return the outcome as the tool's result."""
        tool = next((tool for tool in self._tools if tool.name == name), None)
        if tool is None:  # only the agent's own tools, as `StaticWorkbench` answers
            return _result(name, f"Tool {name} not found.", is_error=True)
        try:  # the tool's own check (`run_json` validates with it first): bad args are answered as `StaticWorkbench` does, never proposed
            args = checked_args(tool.args_type().model_validate(dict(arguments or {})))
        except ValidationError as exc:
            return _result(name, self._format_errors(exc), is_error=True)
        action_id = f"autogen:{self.client.task_id}:{call_id}" if call_id else None
        try:  # AutoGen's agent waits for ever on a workbench that raises: every error is a result, as `StaticWorkbench` answers
            outcome = await self.client.propose(name, args, action_id=action_id, rationale="AutoGen tool call")
        except Exception as exc:
            said = proposal_error_text(exc, action_id)
            if said is None:
                log.exception("proposing %s failed", name)
            return _result(name, said or f"Proposing this call to Tidegate failed: {self._format_errors(exc)}", is_error=True)
        if isinstance(outcome, Escalated):
            escalated = outcome
            try:
                outcome = await escalated.decision(self.human_timeout_s)
            except TimeoutError:
                waiting = f"Waiting for a human to decide approval {escalated.approval_id} ({', '.join(escalated.codes)}); it has not run."
                return _result(name, waiting, is_error=True)
        return _result(name, outcome_text(outcome), is_error=not isinstance(outcome, Executed))

    def _to_config(self) -> NoReturn:
        # Dumped as a StaticWorkbench it would load back running the functions in process, ungoverned.
        raise NotImplementedError(_NOT_A_CONFIG)

    @classmethod
    def _from_config(cls, config: Any) -> NoReturn:
        raise NotImplementedError(_NOT_A_CONFIG)


_NOT_A_CONFIG = (
    "GovernedWorkbench cannot be dumped to or loaded from a component config: it needs a started Tidegate client, "
    "and as a plain StaticWorkbench its tools would run ungoverned. Build the agent in code with GovernedWorkbench(client, tools)."
)


def _result(name: str, text: str, *, is_error: bool) -> ToolResult:
    return ToolResult(name=name, result=[TextResultContent(content=text)], is_error=is_error)


def _runner(tool: BaseTool[Any, Any]) -> Any:
    async def run(args: dict[str, Any]) -> Any:
        return await tool.run_json(args, CancellationToken())

    return run
