"""The executor's database restored from a backup: found at start (it then refuses to start), and caught up from the bus.

A claim (`executor.actions`) is the only thing that keeps an action from running twice. A database restored to a
backup has lost the claims made since, while the bus still holds the results the executor signed for them: a
re-authorized call of such an action would run again (a refund paid twice). So at start the executor reads the
results it signed on `actions.results` since the newest claim its database holds (`servicekit.bus_history.signed_since`)
and refuses to start when one's claim is missing or not finished. `tidegate db catch-up` then writes each such result back as its action's
finished claim (`keep_signed_result`), the signed event kept as it was published: a redelivered or re-authorized call
is answered from it (`kept_results`), never run.
"""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any, Literal

import asyncpg

from schemas import ActionAuthorized, ActionResultData
from servicekit import Authority
from servicekit.bus_history import BehindTheBus, SignedEvent, signed_since
from servicekit.catch_up_marks import unfinished_catch_up, unfinished_message
from services.executor.claims import ClaimStore
from services.executor.domain import TERMINAL

__all__ = ["Kept", "check_not_behind", "keep_signed_result"]

RESULTS = "actions.results"
Kept = Literal["recorded", "finished", "already"]
FIX = 'run `tidegate db catch-up` (docs/operations.md, "Restoring the database"), then start it again'


async def check_not_behind(
    pool: asyncpg.Pool, bootstrap: str, prefix: str, authority: Authority, *, client_options: dict[str, Any] | None = None
) -> None:
    """Raise BehindTheBus when a result the executor signed since the newest claim it holds has no finished claim.

    Every result published since the database's newest claim is checked (`signed_since`), not a tail of the topic: the
    executor publishes a finished action's kept result again when its call is authorized again, and an agent
    re-proposing old calls can fill any tail with old results whose claims a backup holds, hiding the newer ones
    (security6 F1, restore7 F2: six thousand re-proposals in a minute, before the restore). Nothing on the topic since
    (a new deployment, or one whose results left the bus) passes: there is nothing to compare.
    """
    # Any claim's time bounds the window from below: every result signed after the backup came after every claim it holds.
    if (began := await unfinished_catch_up(pool, "executor")) is not None:
        raise BehindTheBus(unfinished_message("the executor", began))
    newest = await pool.fetchval("SELECT max(claimed_at) FROM executor.actions WHERE topic_prefix = $1", prefix)
    async with aclosing(signed_since(bootstrap, prefix, RESULTS, authority, newest, client_options=client_options)) as chunks:
        async for results in chunks:
            ids = sorted({r.data(ActionResultData).action_id for r in results})
            rows = await pool.fetch("SELECT action_id, status FROM executor.actions WHERE action_id = ANY($1::text[])", ids)
            held = {row["action_id"]: row["status"] for row in rows}
            for signed in results:
                data = signed.data(ActionResultData)
                status = held.get(data.action_id)
                if status not in TERMINAL:
                    said = "no claim" if status is None else f"its claim is still {status}"
                    raise BehindTheBus(
                        f"the database is behind the bus: a result the executor signed on {prefix}{RESULTS}[{signed.partition}] "
                        f"(offset {signed.offset}, action {data.action_id}, {data.status}) has {said} in executor.actions: "
                        f"restored from a backup? Started, it could run an action again that already ran; {FIX}"
                    )


async def keep_signed_result(claims: ClaimStore, result: SignedEvent, authorization: ActionAuthorized | None) -> Kept:
    """Record `result` (the executor's signed result, verified) as its action's finished claim, unless the claim is finished already.

    `authorization`: the policy's signed authorization of that action, if the bus still holds it: the claim then keeps its
    event id, call and digest, so its redelivery is answered as any redelivery is. Without it, a re-authorization is
    answered from the claim too, then dead-lettered as `authorization_replayed` (its digest is not the claim's).
    Returns `recorded` (no claim was there), `finished` (an unfinished claim was ended) or `already`.
    """
    data = result.data(ActionResultData)
    auth = authorization.data if authorization is not None else None
    error = None
    if data.error is not None:  # as `CallError.to_json` stores it
        kept = {"type": data.error.type, "message": data.error.message, "retryable": data.error.retryable}
        error = json.dumps(kept | ({"maybe_applied": True} if data.error.maybe_applied else {}))
    async with claims.hold(data.action_id) as session:
        conn = session.connection
        if conn is None:
            raise RuntimeError("a catch-up writes the claims in PostgreSQL")
        status = await conn.fetchval("SELECT status FROM executor.actions WHERE action_id = $1", data.action_id)
        if status in TERMINAL:
            return "already"
        outcome = (
            data.status,
            json.dumps(data.result) if data.result is not None else None,
            error,
            data.attempts,
            data.duration_ms,
            data.cost.usd,
            result.text,
        )
        if status is not None:
            await conn.execute(
                "UPDATE executor.actions SET status = $2, result = $3::jsonb, error = $4::jsonb, attempts = $5, duration_ms = $6, "
                "cost_usd = $7, result_event = $8, finished_at = now(), updated_at = now() WHERE action_id = $1",
                data.action_id,
                *outcome,
            )
            return "finished"
        await conn.execute(
            "INSERT INTO executor.actions (action_id, event_id, tenant_id, task_id, step, tool, args, action_digest, status, result,"
            " error, attempts, duration_ms, cost_usd, result_event, owner, topic_prefix, started_at, finished_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10::jsonb, $11::jsonb, $12, $13, $14, $15, 'tidegate db catch-up', $16,"
            " now(), now())",
            data.action_id,
            authorization.id if authorization is not None else "",
            data.tenant_id,
            data.task_id,
            data.step,
            data.tool,
            json.dumps(auth.args if auth is not None else {}),
            auth.authorization.action_digest if auth is not None else "",
            *outcome,
            _prefix_of(result),
        )
        return "recorded"


def _prefix_of(result: SignedEvent) -> str:
    """The deployment's topic prefix, from where the result was read (`<prefix>actions.results`)."""
    return result.topic.removesuffix(RESULTS)
