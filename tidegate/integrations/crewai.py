"""CrewAI: tools whose calls Tidegate decides. CrewAI has no durable approval, so this adapter provides one.

    refund = governed_crewai_tool(tg, issue_refund, run_key="ticket-1007")   # tg: a started SyncTidegate
    agent = Agent(role=..., llm=..., tools=[refund])

A call's action id is `crewai:<run key>:<tool>:<digest of args>` and its task `crewai:<run key>`, whatever
the client's task (a random one per process by default): the same call in the same run is one
action, whether CrewAI repeats it or the whole crew is re-run after a crash; the agent then reads that it was
already made in this run and not made again, before what became of it (never as a second call's result). An escalated call blocks
the crew until the human decides (at most `human_timeout_s`); if that runs out, the tool answers that
the call is waiting, and re-running the crew with the same run key picks up the human's decision
instead of proposing again (keep proposals in `SqliteProposals` for that to hold across processes).
A call that failed (it did not happen) is tried again when it is made again, as a new attempt
(`…:attempt-2`, proposed and decided afresh); one whose outcome is `unknown` (it may have happened)
is not: it stays the answer under that run key until a human has followed it up.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import itertools
import logging
from collections.abc import Callable
from typing import Any

from crewai.tools import tool as crewai_tool

from schemas import digest
from tidegate.client import Escalated, Failed, SyncTidegate
from tidegate.integrations._common import outcome_text, serve_function

__all__ = ["governed_crewai_tool"]

log = logging.getLogger(__name__)


def governed_crewai_tool(
    client: SyncTidegate, fn: Callable[..., Any], *, run_key: str, human_timeout_s: float | None = None, serve: bool = True
) -> Any:
    """A CrewAI tool with `fn`'s name, docstring and arguments, whose calls go through Tidegate."""
    name, task = fn.__name__, _task(run_key)

    @functools.wraps(fn)
    def proposed(**kwargs: Any) -> str:
        base = f"crewai:{run_key}:{name}:{digest(kwargs)[:24]}"
        for attempt in itertools.count(1):
            action_id = base if attempt == 1 else f"{base}:attempt-{attempt}"
            earlier = client.client.proposals.lookup(action_id) is not None
            outcome = client.propose(name, kwargs, task=task, action_id=action_id, rationale="CrewAI tool call")
            # An earlier call that failed (it did not happen) is no answer for this one: try it again as the next attempt.
            if not (earlier and isinstance(outcome, Failed) and outcome.status == "failed"):
                break
        if not isinstance(outcome, Escalated):
            return _made_before(action_id) + outcome_text(outcome) if earlier else outcome_text(outcome)
        _say_blocked(name, outcome, human_timeout_s)
        try:
            return outcome_text(client.decision(outcome, timeout_s=human_timeout_s))
        except TimeoutError:
            return (
                f"This call waits for a human (approval {outcome.approval_id}, {', '.join(outcome.codes)}); "
                "it has not run. Re-run later to get the decision."
            )

    if serve:
        client.run(_serve(client, name, fn))
    return crewai_tool(name)(proposed)


def _say_blocked(name: str, escalated: Escalated, human_timeout_s: float | None) -> None:
    """Say, as a WARNING, that the crew now waits for a human, and which request they decide.

    CrewAI has no interrupt to hand the application, so the crew simply stopped: nothing said that it waited, nor on
    which approval, and a developer had to find the request with `tidegate approvals list` (integrator2). A WARNING
    shows with logging's defaults and CrewAI's own; the other adapters hand the approval id to the application instead.
    """
    log.warning(
        "%s waits for a human in Tidegate: approval %s (%s), action %s; the crew is blocked until they decide%s "
        "(`tidegate approvals show %s`, or the approver page)",
        name,
        escalated.approval_id,
        ", ".join(escalated.codes),
        escalated.action_id,
        "" if human_timeout_s is None else f", at most {human_timeout_s:g} s",
        escalated.approval_id,
    )


def _task(run_key: str) -> str:
    """`crewai:<run key>`: the run's task, the same in whichever process re-runs the crew.

    Proposed under the client's task (a random one per process unless `task_id` is given, and the docs' snippet gives
    none), a crew re-run in a new process was another task's call under the same action id: the tool raised
    `ActionIdReused` from the proposal ledger, the agent read CrewAI's generic tool error, and the human's decision was
    never picked up (the integrator probe). A task id is at most 200 characters: a longer one is hashed.
    """
    task = f"crewai:{run_key}"
    return task if len(task) <= 200 else f"crewai:{hashlib.sha256(run_key.encode()).hexdigest()}"


def _made_before(action_id: str) -> str:
    """Said before an earlier call's outcome: the same call made again in a run is that call, not a second one.

    Two equal refunds in one run (two tasks of the crew, two orders at one price) are one action by design; the second
    was answered "refunded 100.00 to cus_1007" as if it had been made (the frameworks probe). The agent now reads that it
    was not made again, and can say so, or make it under another run key if a second one is meant.
    """
    return (
        f"This exact call (same tool and args) was already made in this run (action {action_id}); it was not made again. "
        "A second, separate call needs its own run key. What became of the earlier one: "
    )


async def _serve(client: SyncTidegate, name: str, fn: Callable[..., Any]) -> None:
    async def run(args: dict[str, Any]) -> Any:
        value = fn(**args)
        return await value if inspect.isawaitable(value) else value

    serve_function(client.client, name, run)
    await asyncio.sleep(0)
