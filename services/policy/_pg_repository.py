"""The policy's repository on PostgreSQL (schema `policy`): `repository.PolicyRepository` in as few statements as it takes.

A batch of decisions reads what it depends on in one statement and records itself in one
(`_SELECT_HISTORY`, `_INSERT_DECISIONS`), under its tenants' advisory locks, taken in BEGIN's round trip; each call's ending is one
statement (`_END`), a batch's endings sent in one round trip; the five reads of a batch's tasks are one
(`_SELECT_TASK_READS`). tests/integration/policy/test_policy_round_trips.py holds the statements to their counts.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from schemas import ActionProposedData, Mode, ReasonCode
from servicekit import Reject
from servicekit.metrics import observe_retaken
from servicekit.provenance import Provenance
from servicekit.row_proofs import row_refused
from services.policy.facts import History, SystemRecord, stricter
from services.policy.payees import PayeeSeal
from services.policy.repository import (
    PAYOUT_WINDOW,
    TENANT_TOTAL,
    Answer,
    Decide,
    DecisionRecord,
    Ending,
    Forgotten,
    PaidOut,
    Pending,
    PolicyRepository,
    Scope,
    Settled,
    TaskInput,
    TaskReads,
    count_payout,
    count_spend,
    flow_row,
    history_from,
    kept_flow_facts,
    paid_before,
    payout_of,
    troubles,
)

__all__ = ["PgPolicyRepository"]

# A polled batch of at most this many proposals is decided under its tenant's lock only, not first on a snapshot
# (`PgPolicyRepository.decide_many`): a steady rate polls one or two at a time, and the snapshot was a statement of seven.
DECIDED_UNDER_THE_LOCK = 4

# The tenants whose budget-lock keys a process keeps (`PgPolicyRepository._lock_keys`); past it, they are asked again.
LOCK_KEYS_KEPT = 10_000


class UnreadableDecision(Reject):
    """A recorded decision whose row this release cannot read (its `proposal` of the wrong shape): refused, never decided again.

    The event that needs it is refused alone, dead-lettered naming the row (`handler_error`: redriven once it is restored).
    """


_ROW_FIX = (
    "the policy's database login may have been used to write it (docs/security/database.md): restore the row from a backup, "
    "then redrive its dead letters (`tidegate dead-letters redrive --service policy`)"
)


def _record_from(row: Sequence[Any] | asyncpg.Record) -> DecisionRecord:
    """A decision from its stored columns, in the order of `_COLUMNS`; `UnreadableDecision` (logged, counted) when it is none.

    Before, one row of the wrong shape failed the event that read it with a bare `ValidationError` (a traceback, a dead
    letter naming no row, nothing counted; attacker7).
    """
    key, action_id, tenant_id, task_id, outcome, digest, proposal, decided_event, authorized_event = row
    try:
        read = ActionProposedData.model_validate_json(proposal)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the proposal"
        why = f"its proposal is not a proposal this release reads ({exc.error_count()} errors; {where}: {first['msg']})"
        what = f"decision {key} (tenant {tenant_id}, task {task_id}, action {action_id})"
        row_refused("policy", "decisions", what, why, _ROW_FIX, counted_as="invalid")
        raise UnreadableDecision(ReasonCode.HANDLER_ERROR, f"the policy's recorded {what} is refused: {why}; {_ROW_FIX}") from None
    return DecisionRecord(
        key=key,
        action_id=action_id,
        tenant_id=tenant_id,
        task_id=task_id,
        outcome=outcome,
        action_digest=digest,
        proposal=read,
        decided_event=decided_event,
        authorized_event=authorized_event,
    )


# The first answer to an escalation ($1 its action id), recorded unless one is ($2 tenant, $3 task, $4 request, $5 how),
# with the first recorded (in one statement: the inserted row, or the row that was there; a row another copy inserted
# after this statement's snapshot is read by the caller's second try).
_ANSWER = """WITH put AS (
  INSERT INTO policy.answers (action_id, tenant_id, task_id, approval_id, answer) VALUES ($1, $2, $3, $4, $5)
  ON CONFLICT (action_id) DO NOTHING RETURNING approval_id, answer, answered_at)
SELECT approval_id, answer, answered_at FROM put
UNION ALL SELECT approval_id, answer, answered_at FROM policy.answers WHERE action_id = $1"""

_COLUMNS = "key, action_id, tenant_id, task_id, outcome, action_digest, proposal::text, decided_event, authorized_event"
_SELECT_DECISION = f"SELECT {_COLUMNS} FROM policy.decisions WHERE key = $1"

# What a batch's decisions depend on, in one statement: decisions already recorded under its keys ($1),
# spend of its scopes (tenant $2, task $3) and the rows of its (tenant $4, payee $5) known, with their proofs; what
# its tasks paid out, what its tenants paid its payees since $6 (`PAYOUT_WINDOW` ago), and what its tenants ($7) paid out
# since then without a human (`payouts.approved`), any task and payee.
_SELECT_HISTORY = f"""SELECT
  ARRAY(SELECT ({_COLUMNS}) FROM policy.decisions WHERE key = ANY($1::text[])) AS decisions,
  ARRAY(SELECT (s.tenant_id, s.task_id, s.amount_usd) FROM policy.spend s
        JOIN unnest($2::text[], $3::text[]) AS w(t, k) ON s.tenant_id = w.t AND s.task_id = w.k) AS spend,
  ARRAY(SELECT (p.tenant_id, p.payee, p.key_id, p.proof) FROM policy.known_payees p
        JOIN unnest($4::text[], $5::text[]) AS w(t, y) ON p.tenant_id = w.t AND p.payee = w.y) AS payees,
  ARRAY(SELECT ('task', o.tenant_id, o.task_id, sum(o.amount_usd)) FROM policy.payouts o
        JOIN unnest($2::text[], $3::text[]) AS w(t, k) ON o.tenant_id = w.t AND o.task_id = w.k
        WHERE o.failed_at IS NULL GROUP BY o.tenant_id, o.task_id)
    || ARRAY(SELECT ('payee', o.tenant_id, o.payee, sum(o.amount_usd)) FROM policy.payouts o
        JOIN unnest($4::text[], $5::text[]) AS w(t, y) ON o.tenant_id = w.t AND o.payee = w.y
        WHERE o.allowed_at > $6::timestamptz AND o.failed_at IS NULL GROUP BY o.tenant_id, o.payee)
    || ARRAY(SELECT ('tenant', o.tenant_id, '{TENANT_TOTAL}', sum(o.amount_usd)) FROM policy.payouts o
        WHERE o.tenant_id = ANY($7::text[]) AND o.allowed_at > $6::timestamptz AND o.failed_at IS NULL AND NOT o.approved
        GROUP BY o.tenant_id) AS paid"""

# A batch's new decisions ($1), what the allowed ones pay out ($3) and their reservations ($2), as JSON arrays of rows in
# the columns' order, and what those add to each scope's spend, in one statement.
_INSERT_DECISIONS = (
    """WITH decided AS (INSERT INTO policy.decisions
    (key, action_id, tenant_id, task_id, outcome, action_digest, proposal, decided_event, authorized_event, flow_facts)
    SELECT d->>0, d->>1, d->>2, d->>3, d->>4, d->>5, (d->>6)::jsonb, d->>7, d->>8, nullif(d->9, 'null')
    FROM jsonb_array_elements($1::jsonb) AS d),
  paid AS (INSERT INTO policy.payouts (action_id, tenant_id, task_id, payee, amount_usd, approved)
    SELECT p->>0, p->>1, p->>2, p->>3, (p->>4)::numeric, (p->>5)::boolean FROM jsonb_array_elements($3::jsonb) AS p
    ON CONFLICT (action_id) DO NOTHING),
  reserved AS (INSERT INTO policy.reservations (action_id, tenant_id, task_id, tool, args, amount_usd, status)
    SELECT x->>0, x->>1, x->>2, x->>3, (x->>4)::jsonb, (x->>5)::numeric, 'reserved' FROM jsonb_array_elements($2::jsonb) AS x
    ON CONFLICT (action_id) DO NOTHING RETURNING tenant_id, task_id, amount_usd),
  delta AS (SELECT tenant_id, task_id, sum(amount_usd) AS amount FROM (SELECT tenant_id, task_id, amount_usd FROM reserved
    UNION ALL SELECT tenant_id, '"""
    + TENANT_TOTAL
    + """', amount_usd FROM reserved) AS r GROUP BY tenant_id, task_id)
INSERT INTO policy.spend AS s (tenant_id, task_id, amount_usd) SELECT tenant_id, task_id, amount FROM delta ORDER BY tenant_id, task_id
ON CONFLICT (tenant_id, task_id) DO UPDATE SET amount_usd = s.amount_usd + EXCLUDED.amount_usd"""
)


# A payee learned ($1, $2, from $3) with its proof ($4, $5); a stored row keeps its first lesson while its proof is the same.
_INSERT_PAYEE = """INSERT INTO policy.known_payees AS p (tenant_id, payee, learned_from, key_id, proof) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id, payee) DO UPDATE SET learned_from = EXCLUDED.learned_from, key_id = EXCLUDED.key_id, proof = EXCLUDED.proof,
  added_at = now() WHERE p.proof IS DISTINCT FROM EXCLUDED.proof"""

# Values tasks have read, as JSON ($1): [[tenant, task, trusted, source, [value, ...]], ...]; the text of their untrusted
# sources ($3): [[tenant, task, source, {field: text}], ...], a source's first text kept; the tasks whose request it is,
# with the mode each asked for and who it names ($2): [[tenant, task, mode, requester], ...], once each. A task learned again
# keeps the stricter mode and its first requester (a row from before migration 016, which has none, takes this one).
_INSERT_PROVENANCE = """WITH learned AS (
  INSERT INTO policy.tasks_learned AS l (tenant_id, task_id, mode, requested_by, planned_here)
  SELECT t->>0, t->>1, t->>2, t->>3, (t->>4)::boolean FROM json_array_elements($2::json) AS t
  ON CONFLICT (tenant_id, task_id) DO UPDATE
  SET mode = CASE WHEN EXCLUDED.mode = 'draft' AND l.mode = 'autonomous' THEN 'draft' ELSE l.mode END,
    requested_by = coalesce(l.requested_by, EXCLUDED.requested_by),
    planned_here = CASE WHEN l.requested_by IS NULL THEN EXCLUDED.planned_here ELSE l.planned_here END
  WHERE (EXCLUDED.mode = 'draft' AND l.mode = 'autonomous') OR (l.requested_by IS NULL AND EXCLUDED.requested_by IS NOT NULL)
), texts AS (
  INSERT INTO policy.untrusted_texts (tenant_id, task_id, source, texts)
  SELECT t->>0, t->>1, t->>2, t->3 FROM json_array_elements($3::json) AS t ON CONFLICT DO NOTHING
)
INSERT INTO policy.provenance (tenant_id, task_id, value, trusted, source)
SELECT g->>0, g->>1, v, (g->>2)::boolean, g->>3 FROM json_array_elements($1::json) AS g, json_array_elements_text(g->4) AS v
ON CONFLICT DO NOTHING"""


def _json(value: Any) -> str:
    """`value` as JSON text for a `json` parameter; orjson where it can (a lone surrogate: json, which escapes it).

    One parameter PostgreSQL unpacks, not text arrays: asyncpg encodes an array element by element, at about a
    microsecond each (a tenth of that as JSON).
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


# A decision's five reads of its task, one row per (tenant, task) asked for, in one statement (one snapshot).
_SELECT_TASK_READS = """
SELECT w.t AS tenant_id, w.k AS task_id,
  ARRAY(SELECT r.tool FROM policy.reservations r WHERE r.tenant_id = w.t AND r.task_id = w.k AND r.status = 'reserved') AS awaiting,
  ARRAY(SELECT (p.value, p.source, p.trusted) FROM policy.provenance p
        WHERE p.tenant_id = w.t AND p.task_id = w.k ORDER BY p.learned_at) AS provenance,
  ARRAY(SELECT (d.proposal->>'tool', d.outcome, f->'external_recipients', f->'amount_usd') FROM policy.decisions d
        CROSS JOIN LATERAL (SELECT CASE WHEN d.outcome = 'allow'
          THEN coalesce(d.flow_facts, d.decided_event::jsonb #> '{data,facts}') END AS f) AS x
        WHERE d.tenant_id = w.t AND d.task_id = w.k ORDER BY d.decided_at, d.key) AS decisions,
  ARRAY(SELECT (o.status, o.attempts, o.error, o.action_id) FROM policy.call_outcomes o WHERE o.tenant_id = w.t AND o.task_id = w.k)
    AS outcomes,
  ARRAY(SELECT (s.record_id, s.amount_usd, s.currency, s.source) FROM policy.records s
        WHERE s.tenant_id = w.t AND s.task_id = w.k) AS records,
  EXISTS(SELECT 1 FROM policy.tasks_learned l WHERE l.tenant_id = w.t AND l.task_id = w.k) AS learned,
  (SELECT l.mode FROM policy.tasks_learned l WHERE l.tenant_id = w.t AND l.task_id = w.k) AS mode,
  (SELECT l.requested_by FROM policy.tasks_learned l WHERE l.tenant_id = w.t AND l.task_id = w.k) AS requested_by,
  (SELECT l.planned_here FROM policy.tasks_learned l WHERE l.tenant_id = w.t AND l.task_id = w.k) AS planned_here,
  ARRAY(SELECT DISTINCT d.proposal->>'requested_by' FROM policy.decisions d WHERE d.tenant_id = w.t AND d.task_id = w.k
        AND d.proposal->>'undoes' IS NULL AND d.proposal->>'requested_by' IS NOT NULL) AS proposed_for,
  EXISTS(SELECT 1 FROM policy.tasks_forgotten f WHERE f.tenant_id = w.t AND f.task_id = w.k) AS forgotten
FROM (SELECT DISTINCT t, k FROM unnest($1::text[], $2::text[]) AS u(t, k)) AS w
"""

# The kept text of the untrusted sources asked for, as (tenant $1, task $2, source $3) triples.
_SELECT_TEXTS = """SELECT x.tenant_id, x.task_id, x.source, x.texts::text AS texts FROM policy.untrusted_texts x
JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(t, k, s) ON x.tenant_id = u.t AND x.task_id = u.k AND x.source = u.s"""

# The tool and args of calls whose outcome recorded an error ($1: their action ids), for the task reads' failed reads.
_SELECT_FAILED_CALLS = "SELECT action_id, tool, args::text FROM policy.reservations WHERE action_id = ANY($1::text[])"

# A task's working state, as (table, when a row was written, which rows may go): a held reservation stays until resolved.
_WORKING_STATE = (
    ("provenance", "learned_at", ""),
    ("untrusted_texts", "learned_at", ""),
    ("records", "read_at", ""),
    ("call_outcomes", "seen_at", ""),
    ("tasks_learned", "learned_at", ""),
    ("reservations", "created_at", " AND status <> 'reserved'"),
)

# Up to $2 rows of one kind written before $1, deleted by their addresses (by key, PostgreSQL may hash the batch and
# scan the whole table), and their tasks named forgotten in the same statement.
_FORGET = """WITH gone AS (
  DELETE FROM policy.{table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM policy.{table} WHERE {written_at} < $1{only} LIMIT $2))
  RETURNING tenant_id, task_id),
named AS (INSERT INTO policy.tasks_forgotten (tenant_id, task_id) SELECT DISTINCT tenant_id, task_id FROM gone
  ON CONFLICT DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM gone) AS rows, (SELECT count(*) FROM named) AS tasks"""

# The fate of a call's reservation, as common table expressions over $1 (its action id); each adds what it
# changes to the task's and the tenant's spend. A reservation released as expired (`expired_at` set) that
# is settled after all is counted again: what was held is not subtracted from the settled cost.
_SPEND = (
    "spent AS (INSERT INTO policy.spend AS s (tenant_id, task_id, amount_usd)"
    " SELECT b.tenant_id, w.k, b.delta FROM budget b CROSS JOIN LATERAL unnest(ARRAY[b.task_id, '" + TENANT_TOTAL + "']) AS w(k)"
    " ON CONFLICT (tenant_id, task_id) DO UPDATE SET amount_usd = s.amount_usd + EXCLUDED.amount_usd)"
)


def _released(when: str = "") -> str:
    """Release $1's reservation if it is still held (`when`: a further condition)."""
    return (
        "UPDATE policy.reservations SET status = 'released', updated_at = now() WHERE action_id = $1 AND status = 'reserved'"
        + when
        + " RETURNING tenant_id, task_id, -amount_usd AS delta"
    )


def _held(cost: str, when: str = "") -> str:
    """Hold $1's reservation until a human resolves the call, keeping what its attempts cost (parameter `cost`).

    A held reservation's `settled_usd` is that reported cost (NULL: none reported): the figure a human's
    `confirmed_done` settles it at. `when`: a further condition.
    """
    return (
        "UPDATE policy.reservations SET outcome_unknown_at = coalesce(outcome_unknown_at, now()),"
        f" settled_usd = coalesce(settled_usd, {cost}::numeric) WHERE action_id = $1" + when
    )


def _settled_at(cost: str, when: str = "") -> str:
    """Settle $1's reservation at the cost in parameter `cost` (when NULL: what its unknown outcome cost, else the estimate).

    `when`: a further condition.
    """
    actual = f"coalesce({cost}::numeric, settled_usd, amount_usd)"
    return (
        f"UPDATE policy.reservations SET status = 'settled', settled_usd = {actual}, updated_at = now()"
        " WHERE action_id = $1 AND (status = 'reserved' OR (status = 'released' AND expired_at IS NOT NULL))"
        + when
        + f" RETURNING tenant_id, task_id, {actual} - CASE WHEN expired_at IS NULL THEN amount_usd ELSE 0 END AS delta"
    )


_RELEASE = f"budget AS ({_released()}), {_SPEND}"
_HOLD = f"held AS ({_held('$2')})"


def _settle(cost: str) -> str:
    """Settle $1's reservation at the cost in parameter `cost` (the estimate when NULL)."""
    return f"budget AS ({_settled_at(cost)}), {_SPEND}"


# What a settled reservation was for, read in the statement's snapshot (these columns never change).
_SETTLED = "SELECT action_id, tenant_id, tool, args::text AS args FROM policy.reservations WHERE action_id = $1"

# How a call ended and what its result taught ($2..$10, $13, $14; $6: its untrusted values as a JSON object, value → where;
# $13: why a trusted read of the system of record failed; $14: its untrusted text to quote, source → field → text),
# as common table expressions before its reservation's fate.
_ENDED = """outcome AS (INSERT INTO policy.call_outcomes (tenant_id, task_id, action_id, status, attempts, error)
    VALUES ($2, $3, $1, $4, $5::integer, $13::text) ON CONFLICT (action_id) DO NOTHING),
  unpaid AS (UPDATE policy.payouts SET failed_at = now() WHERE action_id = $1 AND $4::text = 'failed' AND failed_at IS NULL),
  learned AS (INSERT INTO policy.provenance (tenant_id, task_id, value, trusted, source)
    SELECT $2, $3, w.key, false, w.value FROM json_each_text($6::json) AS w ON CONFLICT DO NOTHING),
  texts AS (INSERT INTO policy.untrusted_texts (tenant_id, task_id, source, texts)
    SELECT $2, $3, w.key, w.value FROM json_each($14::json) AS w ON CONFLICT DO NOTHING),
  read AS (INSERT INTO policy.records (tenant_id, task_id, record_id, amount_usd, currency, source)
    SELECT $2, $3, $7::text, $8::double precision, $9::text, $10::text WHERE $7::text IS NOT NULL
    ON CONFLICT (tenant_id, task_id, record_id) DO UPDATE SET amount_usd = EXCLUDED.amount_usd,
    currency = EXCLUDED.currency, source = EXCLUDED.source, read_at = now())"""

# A call's whole ending in one statement: `_ENDED` ($1..$10), then its reservation's fate by $11 (`Ending.budget`):
# released, held (keeping $12, what the attempts cost), or settled at $12 (as `_settled_at` when NULL); what a settled
# reservation was for is its one row.
_END = (
    "WITH " + _ENDED + ", released AS (" + _released(" AND $11::text = 'release'") + "),"
    " held AS (" + _held("$12", " AND $11::text = 'hold'") + "), settled AS (" + _settled_at("$12", " AND $11::text = 'settle'") + "),"
    " budget AS (SELECT * FROM released UNION ALL SELECT * FROM settled), " + _SPEND + " " + _SETTLED + " AND $11::text = 'settle'"
)


def _settled(row: asyncpg.Record | None) -> Settled | None:
    return Settled(row["tenant_id"], row["tool"], json.loads(row["args"])) if row is not None else None


class PgPolicyRepository(PolicyRepository):
    """The asyncpg implementation, on the `policy` schema.

    `seal` signs the payees it learns and checks those it reads (`payees.PayeeSeal`): the policy's login can write
    `policy.known_payees`, so a row counts only with its proof. Without a seal no stored payee counts (fail closed).
    """

    def __init__(self, pool: asyncpg.Pool, seal: PayeeSeal | None = None) -> None:
        self._pool = pool
        self._seal = seal
        self._lock_key: dict[str, int] = {}  # each tenant's budget lock (`_lock_keys`)

    async def decision(self, key: str) -> DecisionRecord | None:
        """See PolicyRepository."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_SELECT_DECISION, key)
        return _record_from(row) if row else None

    async def decide_once(self, key: str, tenant_id: str, task_id: str, payee: str | None, decide: Decide) -> tuple[DecisionRecord, bool]:
        """See PolicyRepository."""
        return (await self.decide_many([Pending(key, tenant_id, task_id, payee, decide)]))[0]

    async def decide_many(self, items: list[Pending]) -> list[tuple[DecisionRecord, bool]]:
        """See PolicyRepository: one transaction, one commit, a handful of round trips for the whole batch.

        Two copies of the service must never both spend a tenant's last dollar, so the unit of work
        holds the tenant's lock. Deciding a large batch is the costly part, so it is done first, outside
        the lock, on a snapshot of the history; under the lock the history is read again and each
        decision is kept only if it still holds (`Pending.holds`), else taken again there. One copy
        alone always keeps its decisions; several copies deciding for one tenant overlap all but the
        writes. A batch of at most `DECIDED_UNDER_THE_LOCK` proposals (what a steady rate polls) is
        decided under the lock at once: the snapshot would cost a statement to save a fraction of a millisecond of lock.
        """
        if not items:
            return []
        tenants = sorted({i.tenant_id for i in items})
        async with self._pool.acquire() as conn:
            provisional = await self._decide_on_a_snapshot(conn, items, tenants) if len(items) > DECIDED_UNDER_THE_LOCK else {}
            keys = await self._lock_keys(conn, tenants)
            try:
                # Serialise per tenant, in a fixed order so that two copies of the service never deadlock: BEGIN and the
                # tenants' locks in one round trip (the simple protocol, which takes no parameters: the keys are integers).
                await conn.execute("BEGIN; " + "; ".join(f"SELECT pg_advisory_xact_lock({int(key)})" for key in keys))
                recorded, spend, known, paid = await self._read_history(conn, items, tenants)
                results: list[tuple[DecisionRecord, bool]] = []
                new: list[tuple[Pending, DecisionRecord]] = []
                retaken: dict[str, int] = {}
                for item in items:
                    if item.key in recorded:
                        results.append((recorded[item.key], False))
                        continue
                    history = self._history_of(item, spend, known, paid)
                    taken = provisional.get(item.key)
                    if taken is not None and item.holds(taken[0], history):
                        record = taken[1]
                    else:
                        record = item.decide(history)
                        if taken is not None:  # decided on the snapshot, which went stale
                            retaken[item.tenant_id] = retaken.get(item.tenant_id, 0) + 1
                    recorded[item.key] = record
                    new.append((item, record))
                    results.append((record, True))
                    self._reserve(spend, paid, item, record)
                await self._insert(conn, new)
            except BaseException:
                if not conn.is_closed() and conn.is_in_transaction():
                    await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
            for tenant, count in retaken.items():
                observe_retaken(tenant, count)
            return results

    async def _lock_keys(self, conn: Any, tenants: list[str]) -> list[int]:
        """The keys of the tenants' budget locks, `hashtext('policy-budget:' || tenant)` as every copy takes them.

        Asked of PostgreSQL once per tenant and kept (its hash of a text never changes), so that a batch's BEGIN and
        locks go in one round trip with the keys written as integers.
        """
        if missing := [t for t in tenants if t not in self._lock_key]:
            if len(self._lock_key) + len(missing) > LOCK_KEYS_KEPT:
                self._lock_key.clear()
            rows = await conn.fetch("SELECT t, hashtext('policy-budget:' || t) AS key FROM unnest($1::text[]) AS t", missing)
            self._lock_key.update((r["t"], r["key"]) for r in rows)
        return [self._lock_key[t] for t in tenants]

    async def _decide_on_a_snapshot(self, conn: Any, items: list[Pending], tenants: list[str]) -> dict[str, tuple[History, DecisionRecord]]:
        """Decide `items` outside the lock, on the history as it is now: each new decision by key, with the history it read."""
        recorded, spend, known, paid = await self._read_history(conn, items, tenants)
        provisional: dict[str, tuple[History, DecisionRecord]] = {}
        for item in items:
            if item.key in recorded or item.key in provisional:
                continue
            history = self._history_of(item, spend, known, paid)
            record = item.decide(history)
            provisional[item.key] = (history, record)
            self._reserve(spend, paid, item, record)
        return provisional

    async def _read_history(
        self, conn: Any, items: list[Pending], tenants: list[str]
    ) -> tuple[dict[str, DecisionRecord], dict[tuple[str, str], float], set[tuple[str, str]], PaidOut]:
        """What a batch's decisions depend on: decisions already recorded, spend by scope, known payees (those proven), paid out."""
        seal = self._seal
        scopes = sorted({(i.tenant_id, i.task_id) for i in items} | {(t, TENANT_TOTAL) for t in tenants})
        wanted = sorted({(i.tenant_id, i.payee) for i in items if i.payee})
        row = await conn.fetchrow(
            _SELECT_HISTORY,
            [i.key for i in items],
            [sc[0] for sc in scopes],
            [sc[1] for sc in scopes],
            [w[0] for w in wanted],
            [w[1] for w in wanted],
            datetime.now(UTC) - PAYOUT_WINDOW,
            tenants,
        )
        recorded = {r[0]: _record_from(r) for r in row["decisions"]}
        spend = {(t, k): float(amount) for t, k, amount in row["spend"]}
        paid: PaidOut = {(kind, t, k): float(amount) for kind, t, k, amount in row["paid"]}
        known = {(t, y) for t, y, key_id, proof in row["payees"] if seal is not None and seal.known(t, y, key_id, proof)}
        return recorded, spend, known, paid

    @staticmethod
    def _history_of(item: Pending, spend: dict[tuple[str, str], float], known: set[tuple[str, str]], paid: PaidOut) -> History:
        return history_from(
            spend.get((item.tenant_id, item.task_id), 0.0),
            spend.get((item.tenant_id, TENANT_TOTAL), 0.0),
            item.payee is not None and (item.tenant_id, item.payee) in known,
            *paid_before(paid, item.tenant_id, item.task_id, item.payee),
        )

    @staticmethod
    def _reserve(spend: dict[tuple[str, str], float], paid: PaidOut, item: Pending, record: DecisionRecord) -> None:
        """Count `record`'s reservation in `spend` and what it pays out in `paid`, so that the next decision of the batch sees them."""
        if record.reservation is not None:
            count_spend(spend, item.tenant_id, item.task_id, record.reservation.amount_usd)
        if (payout := payout_of(record)) is not None:
            count_payout(paid, item.tenant_id, item.task_id, item.payee, payout)

    async def _insert(self, conn: Any, decided_now: list[tuple[Pending, DecisionRecord]]) -> None:
        if not decided_now:
            return
        records = [r for _, r in decided_now]
        paid = [
            [r.action_id, r.tenant_id, r.task_id, item.payee, str(Decimal(payout.amount_usd)), payout.approved]
            for item, r in decided_now
            if (payout := payout_of(r)) is not None
        ]
        decided = [
            [
                r.key,
                r.action_id,
                r.tenant_id,
                r.task_id,
                r.outcome,
                r.action_digest,
                r.proposal.model_dump_json(),
                r.decided_event,
                r.authorized_event,
                kept_flow_facts(r),
            ]
            for r in records
        ]
        held = [r.reservation for r in records if r.reservation is not None]
        # An amount as asyncpg sent a float to a numeric column: its exact decimal value, rounded by the column.
        reserved = [[h.action_id, h.tenant_id, h.task_id, h.tool, json.dumps(h.args), str(Decimal(h.amount_usd))] for h in held]
        await conn.execute(_INSERT_DECISIONS, _json(decided), _json(reserved), _json(paid))

    async def answer(self, action_id: str, tenant_id: str, task_id: str, approval_id: str, answer: str) -> Answer:
        """See PolicyRepository."""
        async with self._pool.acquire() as conn:
            for _ in range(2):  # the second try reads the row a concurrent first answer committed after the first's snapshot
                row = await conn.fetchrow(_ANSWER, action_id, tenant_id, task_id, approval_id, answer)
                if row is not None:
                    return Answer(row["approval_id"], row["answer"], row["answered_at"])
        raise RuntimeError(f"no answer recorded nor read for action {action_id}")  # unreachable: a conflict's row is committed

    async def release(self, action_id: str) -> bool:
        """See PolicyRepository."""
        async with self._pool.acquire() as conn:
            return bool(await conn.fetchval(f"WITH {_RELEASE} SELECT count(*) FROM budget", action_id))

    async def settle(self, action_id: str, cost_usd: float | None) -> Settled | None:
        """See PolicyRepository."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(f"WITH {_settle('$2')} {_SETTLED}", action_id, cost_usd)
        return _settled(row)

    async def hold_unknown(self, action_id: str, cost_usd: float | None = None) -> None:
        """See PolicyRepository."""
        async with self._pool.acquire() as conn:
            await conn.execute(f"WITH {_HOLD} SELECT 1", action_id, cost_usd)

    async def end(self, ending: Ending) -> Settled | None:
        """See PolicyRepository: one statement (its own transaction), whatever the call's fate."""
        return (await self.end_many([ending]))[0]

    async def end_many(self, endings: list[Ending]) -> list[Settled | None]:
        """See PolicyRepository: one statement per ending (`_END`), all sent in one round trip and one transaction."""
        if not endings:
            return []
        rows = []
        for e in endings:
            record_id, record = e.record if e.record is not None else (None, None)
            rows.append(
                (
                    e.action_id,
                    e.tenant_id,
                    e.task_id,
                    e.status,
                    e.attempts,
                    _json(e.learned),  # one parameter, not text arrays encoded element by element (`_json`)
                    record_id,
                    record.amount_usd if record else None,
                    record.currency if record else None,
                    record.source if record else None,
                    e.budget,
                    e.cost_usd,
                    e.read_error,
                    _json(e.texts),
                )
            )
        async with self._pool.acquire() as conn:
            settled = {r["action_id"]: _settled(r) for r in await conn.fetchmany(_END, rows)}  # a row for each settled reservation
        return [settled.get(e.action_id) if e.budget == "settle" else None for e in endings]

    async def release_expired(self, reserved_before: datetime, *, limit: int = 1000) -> list[str]:
        """See PolicyRepository (several copies may sweep at once: a row another copy holds is skipped)."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE policy.reservations SET status = 'released', expired_at = now(), updated_at = now()"
                " WHERE action_id IN (SELECT action_id FROM policy.reservations WHERE status = 'reserved'"
                "   AND outcome_unknown_at IS NULL AND created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
                " RETURNING action_id, tenant_id, task_id, amount_usd",
                reserved_before,
                limit,
            )
            deltas: dict[tuple[str, str], float] = {}
            for row in rows:
                count_spend(deltas, row["tenant_id"], row["task_id"], -float(row["amount_usd"]))
            for (tenant_id, task_id), amount in sorted(deltas.items()):
                await conn.execute(
                    "INSERT INTO policy.spend AS s (tenant_id, task_id, amount_usd) VALUES ($1, $2, $3)"
                    " ON CONFLICT (tenant_id, task_id) DO UPDATE SET amount_usd = s.amount_usd + EXCLUDED.amount_usd",
                    tenant_id,
                    task_id,
                    amount,
                )
            return [r["action_id"] for r in rows]

    async def forget_tasks_before(self, cutoff: datetime, *, limit: int = 10_000) -> Forgotten:
        """See PolicyRepository: each kind of row in one statement, found by its BRIN index and deleted by address.

        Each statement deletes and names the tasks in one step, so no decision ever reads a task with part of
        its state gone and not yet named forgotten. Copies sweeping at once skip the rows the other deleted.
        """
        rows = tasks = 0
        async with self._pool.acquire() as conn:
            for table, written_at, only in _WORKING_STATE:
                deleted, named = await conn.fetchrow(_FORGET.format(table=table, written_at=written_at, only=only), cutoff, limit) or (0, 0)
                rows, tasks = rows + deleted, tasks + named
        return Forgotten(rows, tasks)

    async def add_known_payee(self, tenant_id: str, payee: str, learned_from: str) -> None:
        """See PolicyRepository: with its proof, which replaces a stored row's when that differs (none, forged, another key's)."""
        proof = self._seal.prove(tenant_id, payee) if self._seal is not None else None
        async with self._pool.acquire() as conn:
            await conn.execute(_INSERT_PAYEE, tenant_id, payee, learned_from, proof and proof.key_id, proof and proof.signature)

    async def record_policy_version(self, version: str, files: dict[str, str], settings: dict[str, Any], published_by: str) -> None:
        """See PolicyRepository."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO policy.policy_versions (version, files, settings, published_by)"
                " VALUES ($1, $2::jsonb, $3::jsonb, $4) ON CONFLICT DO NOTHING",
                version,
                json.dumps(files),
                json.dumps(settings, default=str),
                published_by,
            )

    async def learn(self, tenant_id: str, task_id: str, *, trusted: dict[str, str], untrusted: dict[str, str]) -> None:
        """See PolicyRepository: one statement for both."""
        await self.learn_many([TaskInput(tenant_id, task_id, trusted, untrusted)])

    async def learn_many(self, inputs: list[TaskInput]) -> None:
        """See PolicyRepository: one statement for every task of the batch.

        The values go as one JSON parameter (`_json`), grouped by (tenant, task, trusted, source); the tasks
        whose request it is are marked learned in the same statement.
        """
        groups: dict[tuple[str, str, bool, str], list[str]] = {}
        for i in inputs:
            for trusted, learned in ((True, i.trusted), (False, i.untrusted)):
                for value, source in learned.items():
                    groups.setdefault((i.tenant_id, i.task_id, trusted, source), []).append(value)
        # Each task once (a statement may not update a row twice): the stricter mode, the first requester.
        requests: dict[tuple[str, str], Mode] = {}
        requesters: dict[tuple[str, str], tuple[str | None, bool | None]] = {}
        for i in inputs:
            if i.request:
                requests[(i.tenant_id, i.task_id)] = stricter(i.mode, requests.get((i.tenant_id, i.task_id)))
                first = requesters.get((i.tenant_id, i.task_id))
                requesters[(i.tenant_id, i.task_id)] = first if first is not None and first[0] else (i.requested_by, i.planned_here)
        texts = [[i.tenant_id, i.task_id, source, fields] for i in inputs for source, fields in i.texts.items()]
        if not groups and not requests and not texts:
            return
        tasks = [[*scope, mode, *requesters[scope]] for scope, mode in sorted(requests.items())]
        async with self._pool.acquire() as conn:
            await conn.execute(
                _INSERT_PROVENANCE, _json([[*group, values] for group, values in groups.items()]), _json(tasks), _json(texts)
            )

    async def untrusted_texts(self, wanted: Mapping[Scope, Collection[str]]) -> dict[Scope, dict[str, dict[str, str]]]:
        """See PolicyRepository: one statement for every task and source asked for."""
        keys = [(t, k, source) for (t, k), sources in wanted.items() for source in sources]
        if not keys:
            return {}
        out: dict[Scope, dict[str, dict[str, str]]] = {}
        async with self._pool.acquire() as conn:
            for r in await conn.fetch(_SELECT_TEXTS, *(list(column) for column in zip(*keys, strict=True))):
                out.setdefault((r["tenant_id"], r["task_id"]), {})[r["source"]] = orjson.loads(r["texts"])
        return out

    async def learn_record(self, tenant_id: str, task_id: str, record_id: str, record: SystemRecord) -> None:
        """See PolicyRepository."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO policy.records (tenant_id, task_id, record_id, amount_usd, currency, source) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (tenant_id, task_id, record_id) DO UPDATE SET amount_usd = EXCLUDED.amount_usd,"
                " currency = EXCLUDED.currency, source = EXCLUDED.source, read_at = now()",
                tenant_id,
                task_id,
                record_id,
                record.amount_usd,
                record.currency,
                record.source,
            )

    async def record_outcome(self, tenant_id: str, task_id: str, action_id: str, status: str, attempts: int) -> None:
        """See PolicyRepository."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO policy.call_outcomes (tenant_id, task_id, action_id, status, attempts) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (action_id) DO NOTHING",
                tenant_id,
                task_id,
                action_id,
                status,
                attempts,
            )

    async def task_reads(self, scopes: list[Scope]) -> dict[Scope, TaskReads]:
        """See PolicyRepository: one statement for every task of a batch."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_SELECT_TASK_READS, [t for t, _ in scopes], [k for _, k in scopes])
            failed = {action_id: error for r in rows for _, _, error, action_id in r["outcomes"] if error is not None}
            # The calls of those that failed (rare): a second statement, so that the one every decision runs has no join,
            # whose generic plan PostgreSQL judges too dear and plans anew at every call (0.6 ms of its CPU a decision).
            calls = {a: (tool, args) for a, tool, args in await conn.fetch(_SELECT_FAILED_CALLS, list(failed))} if failed else {}
        return {
            (r["tenant_id"], r["task_id"]): TaskReads(
                list(r["awaiting"]),
                Provenance.of(r["provenance"]),
                [flow_row(tool or "", outcome, facts) for tool, outcome, *facts in r["decisions"]],
                troubles((status, attempts) for status, attempts, _, _ in r["outcomes"]),
                {i: SystemRecord(amount, currency, source) for i, amount, currency, source in r["records"]},
                r["learned"],
                r["forgotten"],
                [(calls[a][0], json.loads(calls[a][1]), error, a) for _, _, error, a in r["outcomes"] if error is not None and a in calls],
                mode=r["mode"],
                requested_by=r["requested_by"],
                proposed_for=frozenset(r["proposed_for"]),
                planned_here=r["planned_here"],
            )
            for r in rows
        }

    async def _read(self, tenant_id: str, task_id: str) -> TaskReads:
        return (await self.task_reads([(tenant_id, task_id)]))[(tenant_id, task_id)]

    async def provenance(self, tenant_id: str, task_id: str) -> Provenance:
        """See PolicyRepository."""
        return (await self._read(tenant_id, task_id)).provenance

    async def records(self, tenant_id: str, task_id: str) -> dict[str, SystemRecord]:
        """See PolicyRepository."""
        return (await self._read(tenant_id, task_id)).records

    async def task_decisions(self, tenant_id: str, task_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """See PolicyRepository."""
        return (await self._read(tenant_id, task_id)).decisions

    async def awaiting_results(self, tenant_id: str, task_id: str) -> list[str]:
        """See PolicyRepository."""
        return (await self._read(tenant_id, task_id)).awaiting

    async def task_troubles(self, tenant_id: str, task_id: str) -> tuple[int, int]:
        """See PolicyRepository."""
        return (await self._read(tenant_id, task_id)).troubles
