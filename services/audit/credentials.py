"""How an approver was authenticated, in words: one reading of a signed vote's credential for every audit reader.

`tidegate audit explain` (Markdown and HTML) and `tidegate audit actions` (table, CSV, JSON) both say it, from the
`ApprovalCredential` the vote names; they differ only in how an id is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import schemas as s

__all__ = ["approver_credentials", "credential_text"]


def credential_text(c: s.ApprovalCredential | None, code: Callable[[str], str] = str) -> str:
    """The credential's kind, id and who issued it (never the secret); `code`: how an id is shown (an inline code span in Markdown)."""
    if c is None:
        return "credential not recorded (a vote signed before Tidegate named it)"
    if c.kind == "callback":
        return f"chat callback through webhook endpoint {code(c.id)}" + (f" (message {code(c.message_id)})" if c.message_id else "")
    what = ("operator token" if c.operator else "API token") if c.kind == "api_token" else "one-time link"
    issued = f"issued by key {code(c.issued_by)}" if c.issued_by else "issuer not recorded"
    return f"{what} {code(c.id)}, {issued}" + (f" at {c.issued_at}" if c.issued_at else "")


def approver_credentials(credentials: Mapping[str, s.ApprovalCredential | None]) -> list[str]:
    """`approver: credential` for each approver of a decision (an `ApprovalStep`'s `credentials`), in plain text."""
    return [f"{who}: {credential_text(c)}" for who, c in credentials.items()]
