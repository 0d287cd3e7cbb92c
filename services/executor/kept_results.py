"""Which result event a finished claim keeps may go out again: only the executor's own signed event for that very action.

A finished claim (`executor.actions`) keeps the result event first published, and a redelivered or replayed
authorization is answered with it, byte for byte. The executor's own database login can write that row, so the event
kept is published again only when it verifies as the executor's (`Authority.check`, as every consumer checks it: a key
of the executor, current or retired within its grace) for exactly the authorization's action, tenant, task and step.
Nothing kept is ever signed on its way out. A kept event that fails, or none at all, is refused: a log line, the
metric `tidegate_rows_refused_total{service="executor",table="actions"}`, and the delivery dead-lettered
(`kept_result_refused`, with why): the action is finished, so it is not run again either.
"""

from __future__ import annotations

from schemas import ActionAuthorizedData, ReasonCode, action_identity, decode_document
from servicekit import Authority, Recorded, Reject
from servicekit.row_proofs import row_refused

__all__ = ["kept_result"]

TOPIC = "actions.results"
_FIX = (
    "the action is finished and is not run again; its outcome as the executor recorded it is in executor.actions. The executor's "
    "database login may have been used to write it: rotate that login's password (docs/security/database.md)"
)


def kept_result(text: str | None, data: ActionAuthorizedData, authority: Authority | None) -> Recorded:
    """The result event `text` a finished claim keeps, to publish again as it is; Reject when it is not the executor's own for `data`.

    `authority`: the deployment's public keys (None: nothing kept is trusted). A refusal is logged and counted first.
    """
    proven = _proven(text, data, authority)
    if isinstance(proven, Recorded):
        return proven
    why, counted_as = proven
    what = f"the result event kept for action {data.action_id} ({data.tool}, tenant {data.tenant_id}, task {data.task_id})"
    row_refused("executor", "actions", what, why, _FIX, counted_as=counted_as)
    raise Reject(
        ReasonCode.KEPT_RESULT_REFUSED,
        f"action {data.action_id} already finished, but the result event its claim keeps {why}: it is not published again "
        "(nothing is signed) and the action is not run again; the executor's database login may have written it",
    )


def _proven(text: str | None, data: ActionAuthorizedData, authority: Authority | None) -> Recorded | tuple[str, str]:
    """`text` as a record to publish when it is the executor's signed result of `data`'s action; else why not, and the metric's reason."""
    if text is None:
        return "is missing (a finished claim always keeps one)", "unsigned"
    try:
        event, document = decode_document(TOPIC, text)
    except ValueError as exc:  # pydantic's ValidationError, or JSON that is not
        return f"is not a result event ({type(exc).__name__})", "invalid"
    if authority is None:
        return "cannot be verified (this executor was given no public keys)", "invalid"
    refusal = authority.check(text, event, document)
    if refusal is not None:
        return f"is refused: {refusal.message}", "unsigned" if refusal.code == ReasonCode.SIGNATURE_MISSING else "invalid"
    theirs = action_identity(event.data)  # the envelope's tenant is its data's (the contract)
    if theirs != action_identity(data):
        named = ", ".join(f"{k} {v}" for k, v in theirs.items())
        return f"is the executor's signed result of another action ({named})", "invalid"
    return Recorded(TOPIC, event.key, text.encode(), event.traceparent, event)
