"""The undo an approver proposes of a succeeded call: an ordinary proposal, signed by the approval service, that policy decides.

Part of `ApprovalService` (`services.approval.service` composes it); the results it undoes are kept by `_bus_intake`.
"""

from __future__ import annotations

from schemas import ActionProposed, ActionProposedData, ReasonCode
from servicekit.undo import undo_proposal, undo_refusal
from services.approval._people import Session
from services.approval._service_base import ServiceBase, log
from services.approval._undo_states import undo_case
from services.approval.domain import Refusal

__all__ = ["UndoProposals"]


class UndoProposals(ServiceBase):
    """An approver's undo of a call of their tenant, proposed on the bus, or why it cannot be undone now."""

    async def propose_undo(self, action_id: str, session: Session) -> ActionProposedData | Refusal:
        """Propose the undo of a succeeded call for an approver of its tenant: an ordinary proposal that policy decides.

        The proposal is signed by this service (`requested_by` is the approver) and names the original in `undoes`;
        another tenant's action is 404, as an unknown one; what cannot be undone now is 422 with the reason and what
        to do, by the rule `tidegate undo` applies (`servicekit.undo.undo_refusal`): an undo itself, an action undone
        already (or whose undo failed, is unknown, denied or pending), one that failed, was denied or has no result.
        The plan proposed is only ever the executor's signed one (`_undo_proofs`): a kept result whose event does not
        verify for this action is 422 `undo_irreversible`, saying why, and nothing is proposed.
        """
        case = await undo_case(self.undo_results, self.repo, action_id, self.authority) if session.link is None else None
        if case is None or not session.approver.may_see(case.tenant_id):
            return Refusal(code="not_found", status=404, message=f"no call {action_id} is known here")
        refused = undo_refusal(case.action, case.undo) if case.action is not None else None  # None: its kept row is refused
        if refused is not None:
            return Refusal(code=str(refused.code), status=422, message=refused.message)
        if case.refused is not None:  # the row's copy would have it proposed: the executor's signed event does not say so
            return Refusal(code=str(ReasonCode.UNDO_IRREVERSIBLE), status=422, message=case.refused.message)
        assert case.result is not None  # a call with a ready plan is a kept result, verified
        who = session.approver.approver
        proposal = undo_proposal(case.result, requested_by=who, proposer=f"undo:{who}", rationale=f"undo requested by {who}")
        await self.publisher.publish("actions.proposed", ActionProposed.build(proposal, source="tidegate/approval"))
        log.info("approval: %s proposed the undo of %s (%s)", who, action_id, proposal.tool)
        return proposal
