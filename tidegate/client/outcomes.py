"""What became of a proposal: executed, failed, denied, rejected by a human, or waiting for one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas import ErrorInfo, Reason

__all__ = ["Decided", "Denied", "Escalated", "Executed", "Failed", "Outcome", "Rejected"]


@dataclass(frozen=True)
class Executed:
    """Allowed (by policy, or after a human) and run once by the executor.

    After a human's grant: who granted, and, when they edited the call, the args that ran (`edited_args`), their
    comment and their review reason (a code of the tenant's taxonomy, such as `wrong_amount`).
    """

    action_id: str
    tool: str
    result: dict[str, Any]
    via: Literal["policy", "approval"] = "policy"
    approval_id: str | None = None
    approver: str | None = None
    edited_args: dict[str, Any] | None = None
    comment: str | None = None
    review_reason: str | None = None

    ok: Literal[True] = True


@dataclass(frozen=True)
class Failed:
    """Allowed, but the call failed (`failed`) or may or may not have happened (`unknown`: a human follows up).

    After a human's grant that edited the call: the args that were tried (`edited_args`), the approver's comment and review reason.
    """

    action_id: str
    tool: str
    status: Literal["failed", "unknown"]
    error: ErrorInfo | None
    via: Literal["policy", "approval"] = "policy"
    edited_args: dict[str, Any] | None = None
    comment: str | None = None
    review_reason: str | None = None

    ok: Literal[False] = False


@dataclass(frozen=True)
class Denied:
    """Policy said no (before a human, or again after one granted); nothing ran."""

    action_id: str
    tool: str
    reasons: tuple[Reason, ...]
    via: Literal["policy", "approval"] = "policy"

    ok: Literal[False] = False

    @property
    def codes(self) -> list[str]:
        """The stable reason codes."""
        return [str(r.code) for r in self.reasons]


@dataclass(frozen=True)
class Rejected:
    """A human rejected the escalated call, or nobody decided before it expired; nothing ran.

    A rejection carries the approver's comment and review reason (a code of the tenant's taxonomy), when they gave them.
    """

    action_id: str
    tool: str
    approval_id: str
    expired: bool
    approver: str | None = None
    comment: str | None = None
    review_reason: str | None = None

    ok: Literal[False] = False

    @property
    def codes(self) -> list[str]:
        """`approval_expired` or `approval_rejected`."""
        return ["approval_expired" if self.expired else "approval_rejected"]


Decided = Executed | Failed | Denied | Rejected


@dataclass(frozen=True)
class Escalated:
    """Policy asked a human; `decision()` waits for what the human (then policy, then the executor) made of it.

    `position` is where the answer topics stood before the proposal was sent: keep it (with the action
    id) and a restarted client resumes with `client.resume(action_id, position=...)`. It is empty (the topics'
    beginning, as `resume` reads it) when the call was proposed before this client started and its story
    began before it (a restarted agent proposing its waiting call again without its proposals ledger).
    """

    action_id: str
    tool: str
    approval_id: str
    reasons: tuple[Reason, ...]
    position: str
    _decision: Callable[[float | None], Awaitable[Decided]] = field(repr=False, compare=False)

    ok: Literal[False] = False

    @property
    def codes(self) -> list[str]:
        """The reason codes of the escalation."""
        return [str(r.code) for r in self.reasons]

    async def decision(self, timeout_s: float | None = None) -> Decided:
        """Wait (without limit by default) for the human's decision and what followed from it."""
        return await self._decision(timeout_s)


Outcome = Decided | Escalated
