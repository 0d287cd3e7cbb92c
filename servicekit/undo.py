"""Undo plans: the call that takes back a succeeded write, computed from its catalog entry, args, result and prior state.

Pure functions: the executor computes a plan when a call succeeds (and records it), `tidegate undo`
and the approval API turn a `ready` plan into an ordinary proposal that policy decides.
"""

from __future__ import annotations

import hashlib
from typing import Any

from schemas import ActionProposedData, ActionResultData, ArgSource, Mode, ReasonCode, UndoPlan, UndoSpec

__all__ = ["UndoRefused", "UndoUnavailable", "before_args", "plan_undo", "resolve", "undo_action_id", "undo_proposal"]


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

    `undo-<action_id>`; when that is longer than the contract allows, its head and a digest of the whole
    id, so two actions never share an undo id.
    """
    whole = f"undo-{action_id}"
    if len(whole) <= _LONGEST_ACTION_ID:
        return whole
    digest = hashlib.sha256(action_id.encode()).hexdigest()[:32]
    return f"{whole[: _LONGEST_ACTION_ID - len(digest) - 1]}-{digest}"


def undo_proposal(
    result: ActionResultData, *, requested_by: str, proposer: str, mode: Mode = "autonomous", rationale: str = ""
) -> ActionProposedData:
    """The governed proposal that undoes the call `result` reports; raises UndoRefused when there is nothing a tool can undo."""
    if result.status == "unknown":
        why = f" ({result.error.type}: {result.error.message})" if result.error is not None else ""
        raise UndoRefused(
            ReasonCode.UNDO_IRREVERSIBLE,
            f"action {result.action_id} did not succeed: its outcome is unknown{why}; a person must check {result.tool}'s system "
            "of record and correct it by hand (an undo computed from a call that may not have happened could do harm)",
        )
    if result.status != "succeeded":
        raise UndoRefused(
            ReasonCode.UNDO_IRREVERSIBLE, f"action {result.action_id} did not succeed ({result.status}): nothing was done to undo"
        )
    plan = result.undo
    if plan is None:
        raise UndoRefused(
            ReasonCode.UNDO_IRREVERSIBLE,
            f"{result.tool} declares no undo in the catalog: a person must check and correct the system of record by hand",
        )
    if plan.status == "irreversible":
        raise UndoRefused(ReasonCode.UNDO_IRREVERSIBLE, f"{result.tool} is irreversible: {plan.message}")
    if plan.status != "ready" or plan.tool is None or plan.args is None:
        raise UndoRefused(ReasonCode.UNDO_IRREVERSIBLE, f"{result.tool} (action {result.action_id}): {plan.message}")
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
