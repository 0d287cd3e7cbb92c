"""`tidegate audit actions` says how each approver was proven in the words `explain` uses (roomcheck).

An auditor asks "who approved this refund, and with which credential?" across tasks with `audit actions`, and one task
at a time with `explain`. The two wrote a credential each their own way: `actions` said `alice: api_token tok_…` for an
operator's token (which decides for every tenant) as for an approver's own, and `callback ep-1` without the message the
chat tool posted, where `explain` said `operator token` and `chat callback through webhook endpoint ep-1 (message …)`.
One reading of a vote's credential now serves both.
"""

from __future__ import annotations

import re
from datetime import timedelta

from test_explain_binding import ARGS, T0, _digest, _explanation, _granted, _proposed

import schemas as s
from services.audit.ledger import action_lines
from tidegate.audit_render import render_markdown

OPERATOR = s.ApprovalCredential(
    kind="api_token", id="tok_0p3r470r", issued_by="operator-3f2a9c1d7e4b", issued_at=T0 - timedelta(days=3), operator=True
)
CALLBACK = s.ApprovalCredential(kind="callback", id="ep-chat-1", message_id="msg_2Yd9")


def _granted_by_two() -> s.Envelope:
    votes = [
        s.ApprovalVote(approver="alice@acme.example", decision="approve", at=T0, credential=OPERATOR),
        s.ApprovalVote(approver="bob@acme.example", decision="approve", via="callback", at=T0, credential=CALLBACK),
    ]
    granted = _granted(_digest(ARGS))
    data = granted.data.model_copy(update={"votes": votes, "approvers": ["alice@acme.example", "bob@acme.example"]})
    return granted.model_copy(update={"data": data})


async def test_actions_tells_an_operator_token_and_a_chat_callback_as_explain_does() -> None:
    x = await _explanation(("actions.proposed", _proposed()), ("approvals", _granted_by_two()))
    [line] = action_lines([x])
    assert line.credentials == [
        f"alice@acme.example: operator token tok_0p3r470r, issued by key operator-3f2a9c1d7e4b at {OPERATOR.issued_at}",
        "bob@acme.example: chat callback through webhook endpoint ep-chat-1 (message msg_2Yd9)",
    ]
    # The same words as explain's `Authenticated` lines, less their code spans.
    said = [re.sub(r"`([^`]*)`", r"\1", m) for m in re.findall(r"\*\*Authenticated\*\* (.*)", render_markdown(x))]
    assert said == line.credentials
