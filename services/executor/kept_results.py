"""Which result event a finished claim keeps may go out again: only the executor's own signed event for that very action.

A finished claim (`executor.actions`) keeps the result event first published, and a redelivered or replayed
authorization is answered with it, byte for byte. The executor's own database login can write that row, so the event
kept is published again only when it verifies as the executor's (`Authority.check`, as every consumer checks it: a key
of the executor, current or retired within its grace) for exactly the authorization's action, tenant, task and step
(`servicekit.received.proven`, the approval's check of the results it keeps for an undo too).
Nothing kept is ever signed on its way out. A kept event that fails, or none at all, is refused: a log line, the
metric `tidegate_rows_refused_total{service="executor",table="actions"}`, and the delivery dead-lettered
(`kept_result_refused`, with why): the action is finished, so it is not run again either.
"""

from __future__ import annotations

from schemas import ActionAuthorizedData, ReasonCode, action_identity
from servicekit import Authority, Recorded, Reject
from servicekit.received import NotProven, proven
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
    kept = _proven(text, data, authority)
    if isinstance(kept, Recorded):
        return kept
    what = f"the result event kept for action {data.action_id} ({data.tool}, tenant {data.tenant_id}, task {data.task_id})"
    row_refused("executor", "actions", what, kept.why, _FIX, counted_as=kept.counted_as)
    raise Reject(
        ReasonCode.KEPT_RESULT_REFUSED,
        f"action {data.action_id} already finished, but the result event its claim keeps {kept.why}: it is not published again "
        "(nothing is signed) and the action is not run again; the executor's database login may have written it",
    )


def _proven(text: str | None, data: ActionAuthorizedData, authority: Authority | None) -> Recorded | NotProven:
    """`text` as a record to publish when it is the executor's signed result of `data`'s action; else why not."""
    if text is None:
        return NotProven("is missing (a finished claim always keeps one)", "unsigned")
    event = proven(TOPIC, text, action_identity(data), authority, signed="the executor's signed result")
    if isinstance(event, NotProven):
        return event
    return Recorded(TOPIC, event.key, text.encode(), event.traceparent, event, again=True)
