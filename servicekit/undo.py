"""Undo plans: the call that takes back a succeeded write, computed from its catalog entry, args, result and prior state.

Pure functions: the executor computes a plan when a call succeeds (and records it), `tidegate undo`
and the approval API turn a `ready` plan into an ordinary proposal that policy decides. Both refuse
what cannot be undone now by one rule (`undo_refusal`), each from what it knows of the action and its
undo (`ActionState`): the audit log's events (`undo_states`) or the approval service's records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from schemas import (
    ActionDecided,
    ActionFailed,
    ActionProposed,
    ActionProposedData,
    ActionResultData,
    ActionSucceeded,
    ActionUnknown,
    ApprovalResolved,
    ArgSource,
    Mode,
    ReasonCode,
    UndoPlan,
    UndoSpec,
)

__all__ = [
    "ActionState",
    "UndoRefused",
    "UndoUnavailable",
    "before_args",
    "plan_undo",
    "resolve",
    "undo_action_id",
    "undo_proposal",
    "undo_refusal",
    "undo_states",
]


class UndoUnavailable(ValueError):
    """A value the undo needs is not in the call, its result or the state read before it."""


def _at(scope: dict[str, Any], path: str) -> Any:
    value: Any = scope
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise UndoUnavailable(f"{path} is not there")
        value = value[part]
    return value


def _items(scope: dict[str, Any], path: str) -> list[Any]:
    value = _at(scope, path)
    if not isinstance(value, list):
        raise UndoUnavailable(f"{path} is not a list")
    return value


def resolve(source: str | ArgSource, scope: dict[str, Any]) -> Any:
    """The value `source` names in `scope` (`args`, `result`, `before`); raises UndoUnavailable."""
    if isinstance(source, str):
        return _at(scope, source)
    value = _at(scope, source.from_)
    if source.without is None and source.within is None:
        return value
    if not isinstance(value, list):
        raise UndoUnavailable(f"{source.from_} is not a list")
    if source.without is not None:
        left_out = _items(scope, source.without)
        value = [v for v in value if v not in left_out]
    if source.within is not None:
        kept = _items(scope, source.within)
        value = [v for v in value if v in kept]
    return value


def before_args(spec: UndoSpec, args: dict[str, Any]) -> dict[str, Any] | None:
    """Args of the read to make before the call, or None when the undo needs no prior state."""
    if spec.before is None:
        return None
    return {name: resolve(source, {"args": args}) for name, source in spec.before.args.items()}


def plan_undo(spec: UndoSpec, args: dict[str, Any], result: dict[str, Any] | None, before: dict[str, Any] | None) -> UndoPlan:
    """How to undo a succeeded call, given what it was called with, what it returned and what was there before."""
    if spec.irreversible is not None:
        return UndoPlan(status="irreversible", message=spec.irreversible)
    if spec.before is not None and before is None:
        return UndoPlan(status="unavailable", tool=spec.tool, message=f"the state before the call ({spec.before.tool}) was not recorded")
    scope = {"args": args, "result": result or {}, "before": before or {}}
    try:
        undo_args = {name: resolve(source, scope) for name, source in spec.args.items()}
    except UndoUnavailable as exc:
        return UndoPlan(status="unavailable", tool=spec.tool, message=f"cannot compute the undo of this call: {exc}")
    empty = [name for name, value in undo_args.items() if value is None or value == []]
    if empty:
        message = f"nothing to undo: {', '.join(empty)} would be empty (the call changed nothing the undo restores)"
        return UndoPlan(status="nothing_to_undo", tool=spec.tool, args=undo_args, message=message)
    return UndoPlan(status="ready", tool=spec.tool, args=undo_args)


class UndoRefused(ValueError):
    """An undo that cannot be proposed, with a stable reason code and what a person must do instead."""

    def __init__(self, code: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_LONGEST_ACTION_ID = 256  # the contract's


def undo_action_id(action_id: str) -> str:
    """The action id of the undo of `action_id`: the same every time, so an action is undone at most once.

    `undo-<action_id>` while that fits the contract's 256 characters; for a longer one, `undo~`, the id's first 218
    characters, a dash and 32 hex digits of the SHA-256 of the whole id (UTF-8). Each form has its own prefix, so two
    actions never share an undo id: a crafted short id cannot take a long id's (docs/autonomy.md).
    """
    whole = f"undo-{action_id}"
    if len(whole) <= _LONGEST_ACTION_ID:
        return whole
    digest = hashlib.sha256(action_id.encode()).hexdigest()[:32]
    hashed = "undo~"  # never the plain form's `undo-`: a cut undo id never equals a plain one
    return f"{hashed}{action_id[: _LONGEST_ACTION_ID - len(hashed) - len(digest) - 1]}-{digest}"


@dataclass(frozen=True)
class ActionState:
    """What is known of one action when its undo is asked for; None (or empty) where nothing is known yet.

    `undoes`: the action it undoes, when it is an undo itself. `decision`: policy's last outcome (allow, deny,
    escalate), `denied_for` the reason codes of a deny. `status`: its result's (succeeded, failed, unknown),
    `error` what went wrong, `plan` the executor's undo plan of a succeeded call. `resolution`: what a person found
    in the system of record after an unknown outcome (its follow-up's `confirmed_done` or `confirmed_not_done`), and
    `resolved_by` who.
    """

    action_id: str
    tool: str
    task_id: str
    undoes: str | None = None
    decision: str | None = None
    denied_for: str = ""
    status: str | None = None
    error: str | None = None
    plan: UndoPlan | None = None
    resolution: str | None = None
    resolved_by: str | None = None

    @classmethod
    def of_result(cls, result: ActionResultData, *, undoes: str | None = None) -> ActionState:
        """The state a result reports (`undoes`: the action it undoes, when known)."""
        error = f"{result.error.type}: {result.error.message}" if result.error is not None else None
        return cls(result.action_id, result.tool, result.task_id, undoes=undoes, status=result.status, error=error, plan=result.undo)


def undo_refusal(action: ActionState, undo: ActionState | None = None) -> UndoRefused | None:
    """Why `action` cannot be undone now, given its state and its undo's (None: no undo of it is known); None when it may be.

    The one rule of `tidegate undo` and the approval API, checked in this order: an undo is not undone; an action
    whose undo exists (succeeded, failed, unknown, denied or pending) is not undone again; what did not run or did
    not succeed left nothing to undo; a succeeded call is undone by its plan, when the plan is ready. An unknown
    outcome a person resolved counts as what they found: `confirmed_not_done` left nothing to undo, `confirmed_done`
    is a call that succeeded (undone by its plan, when the executor recorded one).
    """
    if action.undoes:
        return UndoRefused(
            ReasonCode.UNDO_IRREVERSIBLE,
            f"action {action.action_id} is the undo of {action.undoes}: an undo is not undone (that would be an undo of an undo); "
            f"to make {action.undoes}'s change again, propose that call again as a new action",
        )
    if undo is not None:
        return UndoRefused(ReasonCode.ACTION_ID_REUSED, _undone_already(action.action_id, undo))
    if action.status is None:
        return UndoRefused(ReasonCode.UNDO_IRREVERSIBLE, _not_run(action))
    if _outcome(action) != "succeeded":
        return UndoRefused(ReasonCode.UNDO_IRREVERSIBLE, _not_succeeded(action))
    plan = action.plan
    if plan is None and action.status == "unknown":
        return UndoRefused(ReasonCode.UNDO_IRREVERSIBLE, _done_without_plan(action))
    if plan is None:
        return UndoRefused(
            ReasonCode.UNDO_IRREVERSIBLE,
            f"{action.tool} declares no undo in the catalog: a person must check and correct the system of record by hand",
        )
    if plan.status == "irreversible":
        return UndoRefused(ReasonCode.UNDO_IRREVERSIBLE, f"{action.tool} is irreversible: {plan.message}")
    if plan.status != "ready" or plan.tool is None or plan.args is None:
        return UndoRefused(ReasonCode.UNDO_IRREVERSIBLE, f"{action.tool} (action {action.action_id}): {plan.message}")
    return None


def _outcome(action: ActionState) -> str | None:
    """The call's outcome for undo: its result's status, or what a person confirmed of an unknown one."""
    if action.status == "unknown" and action.resolution == "confirmed_done":
        return "succeeded"
    if action.status == "unknown" and action.resolution == "confirmed_not_done":
        return "not_done"
    return action.status


def _resolved(action: ActionState) -> str:
    by = f" by {action.resolved_by}" if action.resolved_by else ""
    return f"its unknown outcome was resolved {action.resolution}{by}"


def _done_without_plan(action: ActionState) -> str:
    """Why a call a person confirmed done is not undone by a tool: the executor never had its result to plan the undo from."""
    return (
        f"action {action.action_id}: {_resolved(action)}, but the executor never received the call's result, so no undo was "
        f"computed from it: correct {action.tool}'s system of record by hand, or propose the undo call yourself with the "
        "values that system shows"
    )


def _not_run(action: ActionState) -> str:
    """Why an action with no result has nothing to undo: denied, or not run yet."""
    if action.decision == "deny":
        return f"action {action.action_id} was denied by policy ({action.denied_for or 'no reason given'}): it never ran, nothing to undo"
    state = "waits for a human approval" if action.decision == "escalate" else "has no result yet"
    return (
        f"action {action.action_id} {state}: nothing was done to undo yet; once it has succeeded, undo it again "
        f"(`tidegate audit explain {action.task_id}` shows where it is)"
    )


def _not_succeeded(action: ActionState) -> str:
    """Why a failed or unknown call (or one a person confirmed did not happen) is not undone by a tool."""
    if _outcome(action) == "not_done":
        return f"action {action.action_id} did not take effect: {_resolved(action)}; nothing was done to undo"
    if action.status == "unknown":
        why = f" ({action.error})" if action.error else ""
        return (
            f"action {action.action_id} did not succeed: its outcome is unknown{why}; a person must check {action.tool}'s system "
            "of record and correct it by hand (an undo computed from a call that may not have happened could do harm)"
        )
    return f"action {action.action_id} did not succeed ({action.status}): nothing was done to undo"


def _undone_already(action_id: str, undo: ActionState) -> str:
    """What became of the undo of `action_id`, proposed already (its id cannot be used again)."""
    by_hand = f"correct the system of record by hand (the undo's id {undo.action_id} cannot be used again)"
    of = f"the undo {undo.action_id} of action {action_id}"
    why = f": {undo.error}" if undo.error else ""
    if undo.status == "succeeded":
        return f"action {action_id} was undone already by {undo.action_id} ({undo.tool}, succeeded)"
    if undo.status == "unknown":
        return f"{of} has an unknown outcome{why}; a person must check and {by_hand}"
    if undo.status is not None:
        return f"{of} failed{why}; {by_hand}"
    if undo.decision == "deny":
        return f"{of} was denied by policy ({undo.denied_for or 'no reason given'}); {by_hand}"
    if undo.decision == "escalate":
        return f"{of} was proposed already and waits for a human approval"
    return f"{of} was proposed already and has no result yet (`tidegate audit explain` shows where it is)"


def undo_states(events: Iterable[Any], action_id: str) -> tuple[ActionState | None, ActionState | None]:
    """The states of the action `action_id` and of its undo (None: unknown), told by `events`: theirs, as the audit log records them.

    The undo is the proposal that names the action in `undoes`, or that holds its undo id (`undo_action_id`).
    """
    events = list(events)
    proposals = {e.data.action_id: e.data for e in events if isinstance(e, ActionProposed)}
    undo_id = undo_action_id(action_id)
    undo = next((p.action_id for p in proposals.values() if p.undoes == action_id or p.action_id == undo_id), None)
    return _state_in(events, action_id, proposals.get(action_id)), _state_in(events, undo, proposals.get(undo)) if undo else None


def _state_in(events: list[Any], action_id: str, proposal: ActionProposedData | None) -> ActionState | None:
    results = [e.data for e in events if isinstance(e, ActionSucceeded | ActionFailed | ActionUnknown) and e.data.action_id == action_id]
    result = results[0] if results else None  # the first result holds (the executor runs an action once)
    decisions = [e.data for e in events if isinstance(e, ActionDecided) and e.data.action_id == action_id]
    decision = decisions[-1] if decisions else None  # the last decision holds (a human's grant re-evaluated)
    resolved = next((e.data for e in events if isinstance(e, ApprovalResolved) and e.data.action_id == action_id), None)
    undoes = proposal.undoes if proposal is not None else None
    if result is not None:
        state = ActionState.of_result(result, undoes=undoes)
        if resolved is not None:  # a follow-up is resolved once (the approval service settles it once)
            state = replace(state, resolution=resolved.resolution, resolved_by=resolved.approver)
    else:
        own = decision or proposal
        if own is None:
            return None
        state = ActionState(action_id, own.tool, own.task_id, undoes=undoes)
    if decision is None:
        return state
    return replace(state, decision=decision.outcome, denied_for=", ".join(r.code for r in decision.reasons))


def undo_proposal(
    result: ActionResultData, *, requested_by: str, proposer: str, mode: Mode = "autonomous", rationale: str = ""
) -> ActionProposedData:
    """The governed proposal that undoes the call `result` reports; raises UndoRefused when there is nothing a tool can undo."""
    refused = undo_refusal(ActionState.of_result(result))
    if refused is not None:
        raise refused
    plan = result.undo
    assert plan is not None  # undo_refusal refuses a call without a ready plan
    assert plan.tool is not None
    assert plan.args is not None
    return ActionProposedData(
        action_id=undo_action_id(result.action_id),
        task_id=result.task_id,
        tenant_id=result.tenant_id,
        step=result.step,
        tool=plan.tool,
        args=plan.args,
        rationale=rationale or f"undo of {result.tool} (action {result.action_id})",
        proposer=proposer,
        mode=mode,
        requested_by=requested_by,
        confidence=1.0,
        undoes=result.action_id,
    )
