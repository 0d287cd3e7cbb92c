"""What the executor records around a call for its undo: the state before its first attempt, and the plan once it succeeded.

Both are kept in the executor's schema (`undo.UndoStore`, `executor.undo_plans`) on the connection that holds the claim.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas import ActionAuthorizedData, ToolSpec, UndoPlan
from servicekit import ToolCatalog
from servicekit.toolcontract import ToolContext, ToolError
from servicekit.undo import UndoUnavailable, before_args, plan_undo
from services.executor.claims import ClaimSession
from services.executor.tools import Invoker
from services.executor.undo import KeptLater, UndoKey, UndoStore

__all__ = ["ContextOf", "UndoRecording", "reads_prior_state"]

log = logging.getLogger(__name__)

ContextOf = Callable[[ActionAuthorizedData, ToolSpec, int], ToolContext]
"""The context of attempt number n of a tool for an authorized call."""


def reads_prior_state(spec: ToolSpec | None) -> bool:
    """Whether the undo of `spec` reads the state before the first attempt (kept before the attempt is marked running)."""
    return spec is not None and spec.undo is not None and spec.undo.before is not None


@dataclass(frozen=True)
class UndoRecording:
    """Reads and keeps what undoing one call needs.

    Attributes:
        store: Where prior states and plans are kept.
        catalog: Where the tool that reads the prior state (catalog `undo.before.tool`) is found.
        invokers: How that read is called (not counted as an attempt of the call).
        context: The context each tool call gets.
    """

    store: UndoStore
    catalog: ToolCatalog
    invokers: Invoker
    context: ContextOf

    async def prior_state(self, session: ClaimSession, spec: ToolSpec, data: ActionAuthorizedData, *, recovering: bool) -> KeptLater:
        """The state the undo restores, read once before the first attempt (catalog `undo.before`) and kept.

        Ask for it once the attempt is marked `running`: the mark's statement keeps it (`UndoStore.keep_prior_state_running`).

        After a crash the state kept before the first attempt is used: reading again could see the
        call's own effect. A read that fails, however (a tool error, a timeout, a bug or an answer of
        an unexpected shape), leaves the undo `unavailable`; it never stops the call, which policy
        allowed on its own terms.
        """
        if spec.undo is None or spec.undo.before is None:
            return _none
        kept = await self.store.prior_state(data.action_id, held=session)
        read = self.catalog.get(spec.undo.before.tool)
        if kept is not None or recovering or read is None:
            return lambda: kept
        try:
            args = before_args(spec.undo, data.args)
            assert args is not None
            async with asyncio.timeout(read.timeout_s):
                answer = await self.invokers.invoke(read, self.context(data, read, 1), args)
        except Exception as exc:  # whatever the read raises, the call goes on: it is the undo that is lost
            expected = isinstance(exc, ToolError | TimeoutError | UndoUnavailable)
            log.warning(
                "action %s: could not read the state before %s (%s: %s): its undo will be unavailable",
                data.action_id,
                spec.name,
                type(exc).__name__,
                exc,
                exc_info=not expected,
            )
            return _none
        return await self.store.keep_prior_state_running(_undo_key(data), answer.result, held=session)

    async def plan(
        self,
        session: ClaimSession,
        spec: ToolSpec,
        data: ActionAuthorizedData,
        result: dict[str, Any] | None,
        before: dict[str, Any] | None,
    ) -> UndoPlan | None:
        """How to undo the call that just succeeded, kept in the executor's schema (None when the catalog declares no undo)."""
        if spec.undo is None:
            return None
        plan = plan_undo(spec.undo, data.args, result, before)
        await self.store.keep_plan(_undo_key(data), plan, held=session)
        return plan


def _none() -> None:
    return None


def _undo_key(data: ActionAuthorizedData) -> UndoKey:
    return UndoKey(action_id=data.action_id, tenant_id=data.tenant_id, task_id=data.task_id, tool=data.tool)
