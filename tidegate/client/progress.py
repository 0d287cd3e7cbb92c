"""The pure part of following one action: fold the answer topics' events into where the action stands."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from schemas import ActionDecidedData, ActionResultData, ApprovalData
from tidegate.client.outcomes import Decided, Denied, Executed, Failed, Rejected

__all__ = ["ANSWER_TOPICS", "Progress"]

ANSWER_TOPICS = ("actions.decided", "approvals", "actions.results")


@dataclass
class Progress:
    """Everything seen so far about one action id of one tenant, in the order the topics told it.

    Action ids are global, and the first call the policy decides under one owns it: it refuses any other
    proposal of that id (`action_id_reused`, dead-lettered: a client cannot read it). So only events of
    `tenant_id` count, and only once the policy's decision of the call proposed (`action_digest`; any call of
    the tenant when it is not known) was seen: the rest of the story (approvals, the result) is that call's.
    A policy decision of another call under the id means this proposal was refused: `refused` then holds.
    """

    action_id: str
    tenant_id: str
    action_digest: str | None = None
    tool: str = ""
    decision: ActionDecidedData | None = None
    decided_at: datetime | None = None
    requested: ApprovalData | None = None
    human: tuple[str, ApprovalData] | None = None
    redecision: ActionDecidedData | None = None
    result: tuple[str, ActionResultData] | None = None
    taken_by: ActionDecidedData | None = None
    seen: list[str] = field(default_factory=list)

    def apply(self, topic: str, event: Any) -> bool:
        """Take one event (of any action; others are ignored); True when it told something about this action."""
        data = event.data
        if getattr(data, "action_id", None) != self.action_id:
            return False
        if topic == "actions.decided" and data.via == "policy" and not self._ours(data):
            self.taken_by = self.taken_by or data  # another call owns the id: the policy refused this one
            return True
        if data.tenant_id != self.tenant_id:  # another tenant's story under the same id is never this one's
            return False
        kind = event.type.removeprefix("tidegate.")
        self.seen.append(kind)
        self.tool = self.tool or getattr(data, "tool", "")
        if topic == "actions.decided":
            if data.via == "policy":
                if self.decision is None:
                    self.decision, self.decided_at = data, event.time
            else:
                self.redecision = data
        elif topic == "approvals":
            if kind == "approval.requested":
                self.requested = self.requested or data
            elif kind in ("approval.granted", "approval.rejected", "approval.expired") and self.human is None:
                self.human = (kind, data)
        elif topic == "actions.results" and self.result is None:
            self.result = (str(data.status), data)
        return True

    def _ours(self, decided: ActionDecidedData) -> bool:
        digest_matches = self.action_digest is None or decided.action_digest == self.action_digest
        return decided.tenant_id == self.tenant_id and digest_matches

    @property
    def refused(self) -> bool:
        """The policy decided another call under this id (and not this one): this proposal was refused `action_id_reused`."""
        return self.taken_by is not None and self.decision is None

    @property
    def escalated(self) -> bool:
        """Policy escalated and the approval request exists (so there is an approval id to show)."""
        return self.decision is not None and self.decision.outcome == "escalate" and self.requested is not None

    def decided_before(self, moment: datetime) -> bool:
        """Whether the policy's decision read for this call was made before `moment` and is still open (an escalation).

        Read by a client that began reading at `moment`, it is the policy's answer to a repeat of a call proposed before
        (by another process, or before a restart): what followed it (the approval request, a human's answer, the result)
        was published before the client began reading, so its live reader never sees it.
        """
        return self.decided_at is not None and self.decided_at < moment and self.final() is None and not self.allowed

    @property
    def waiting_for_human(self) -> bool:
        """Escalated, and nothing read yet says a human decided or anything followed (as far as read)."""
        return self.escalated and self.human is None and self.redecision is None and self.result is None

    @property
    def allowed(self) -> bool:
        """The policy allowed the call (at once, or again after a human's grant): its result is what is still to come."""
        latest = self.redecision or self.decision
        return latest is not None and latest.outcome == "allow"

    @property
    def _grant_read(self) -> bool:
        """Whether what let an escalated call run has been read: the human's grant (who, their edit) and policy's re-decision."""
        return self.redecision is not None and self.human is not None and self.human[0] == "approval.granted"

    def final(self) -> Decided | None:
        """The end of the story, when it has been told; None while something is still to come.

        Nothing ends before the policy's decision of this call was seen: what came before it (under a
        topic read ahead of another) counts from then on, as this call's. The result of an escalated call
        ends it only once the human's grant and policy's re-decision were read too: the three answer topics
        are read independently, and the result read first would otherwise be told without who granted it
        and with which edit (the args that ran, which the model must be told).
        """
        if self.decision is None:
            return None
        via: Literal["policy", "approval"] = "approval" if self.redecision is not None else "policy"
        if self.result is not None and (self.decision.outcome != "escalate" or self._grant_read):
            status, data = self.result
            granted = self.human[1] if self.human and self.human[0] == "approval.granted" else None
            if status == "succeeded":
                return Executed(
                    action_id=self.action_id,
                    tool=data.tool,
                    result=data.result or {},
                    via=via,
                    approval_id=granted.approval_id if granted else None,
                    approver=granted.approver if granted else None,
                    edited_args=granted.edited_args if granted else None,
                    comment=granted.comment if granted else None,
                    review_reason=granted.review_reason if granted else None,
                )
            edited = granted if granted and granted.edited_args is not None else None  # what failed was the human's edit
            return Failed(
                self.action_id,
                data.tool,
                "unknown" if status == "unknown" else "failed",
                data.error,
                via,
                edited_args=edited.edited_args if edited else None,
                comment=edited.comment if edited else None,
                review_reason=edited.review_reason if edited else None,
            )
        for decided in (self.decision, self.redecision):
            if decided is not None and decided.outcome == "deny":
                return Denied(self.action_id, decided.tool, tuple(decided.reasons), decided.via)
        if self.human is not None and self.human[0] != "approval.granted":
            kind, human = self.human
            expired = kind == "approval.expired"
            return Rejected(self.action_id, human.tool, human.approval_id, expired, human.approver, human.comment, human.review_reason)
        return None
