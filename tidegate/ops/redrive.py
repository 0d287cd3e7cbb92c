"""Dead letters as the on-call reads and redrives them: which may be sent again, the original record, and the send.

A dead letter (`tidegate.event.rejected`) names the record a service refused: its topic, partition, offset, SHA-256
and the reason code. The audit log holds that record as it was on the bus (value, key and headers). A redrive sends
those bytes and headers, unchanged, to the same topic, logged in as a principal that already writes it
(`servicekit.bus_rights.redrive_principal`), after an operator-signed `tidegate.control.redrive` record says who sent
what and why. Every consumer checks the redriven record as it checks any (bounds, contract, the producer's signature,
its own idempotency): a redrive grants no authority. docs/operations.md, "Redriving a dead letter".
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from schemas import ControlRedrive, EventRejected, ReasonCode, approval_document, approval_message, decode_document
from servicekit.authority import Authority
from servicekit.bus_rights import redrive_principal
from servicekit.signing import Keyring
from services.audit import LogRow, SearchFilters, dead_letter_tenant_problem, named_record_problem

__all__ = [
    "REDRIVABLE",
    "DeadLetter",
    "Original",
    "Redriven",
    "Selection",
    "catalog_topic",
    "checked_alone",
    "dead_letter_of",
    "decision_verifies",
    "held_to_record",
    "named_service",
    "original_of",
    "original_problem",
    "proposed_again_of",
    "redriven_of",
    "refused_now",
    "select",
    "tenant_problem",
    "why_not",
]

# Codes whose cause lies outside the record: a bug or an outage that outlived the retries, an output Kafka refused (a
# topic's size limit raised since). Fixed, the same bytes may be handled: these are redriven.
REDRIVABLE = frozenset({ReasonCode.HANDLER_ERROR.value, ReasonCode.OUTPUT_TOO_LARGE.value, ReasonCode.OUTPUT_REFUSED.value})
# A key not on file when the record came: redriven only when asked (`--allow-unknown-key`), once the key is distributed.
UNKNOWN_KEY = ReasonCode.UNKNOWN_KEY.value
# A decision a policy could not verify: redriven when it verifies with the approval keys on file, as a policy of this release
# verifies it (one signed over `approval_document` reached a release 21 policy during the upgrade: upgrade note 22).
APPROVAL_UNAUTHENTICATED = ReasonCode.APPROVAL_UNAUTHENTICATED.value

_AUTHORITY = frozenset(
    c.value
    for c in (
        ReasonCode.SIGNATURE_MISSING, ReasonCode.SIGNATURE_INVALID, ReasonCode.SIGNER_NOT_ALLOWED, ReasonCode.SIGNER_RETIRED,
        ReasonCode.DIGEST_MISMATCH, ReasonCode.ACTION_ID_REUSED, ReasonCode.TASK_ID_REUSED, ReasonCode.AUTHORIZATION_REPLAYED,
        ReasonCode.CONTROL_REPLAYED, ReasonCode.TOOL_REPLY_MISMATCH,
        ReasonCode.KEPT_RESULT_REFUSED, ReasonCode.TASK_OF_ANOTHER_REQUESTER,
    )
)  # fmt: skip
_EXPIRED = frozenset(
    c.value for c in (ReasonCode.AUTHORIZATION_EXPIRED, ReasonCode.APPROVAL_EXPIRED, ReasonCode.TASK_EXPIRED, ReasonCode.STEP_TIMEOUT)
)
_CONTENT = frozenset(
    c.value for c in (ReasonCode.INVALID_EVENT, ReasonCode.TOO_LARGE, ReasonCode.TOO_DEEP, ReasonCode.NOT_FINITE, ReasonCode.INVALID_ARGS)
)


@dataclass(frozen=True)
class Redriven:
    """One `control.redrive` record: an operator sent a dead letter's record again."""

    by: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter of the audit log, with whether its row verifies and the redrives recorded of it."""

    id: str  # the `event.rejected`'s event id
    at: datetime  # when the broker appended it
    where: str  # its own position, `deadletter[p]@o`
    data: EventRejected
    unverified: str | None = None  # why its row does not verify from its own value (written into the database)
    redriven: tuple[Redriven, ...] = ()
    # the executor's signed result of the action its record names, when the call succeeded: the record was handled
    ran: str | None = None
    # the action the planner proposed again in place of the one whose authorization expired (`repeats`): nothing to do
    proposed_again: str | None = None

    @property
    def original(self) -> str:
        """Where the refused record is: `topic[partition]@offset` (the topic with its prefix)."""
        d = self.data.data
        return f"{d.topic}[{d.partition}]@{d.offset}"


@dataclass(frozen=True)
class Original:
    """The refused record as the bus held it: what a redrive sends."""

    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass
class Selection:
    """What `list` and `redrive` pick: dead letter ids (or unique beginnings of one), and filters, all combined."""

    ids: Sequence[str] = ()
    service: str | None = None
    code: str | None = None
    topic: str | None = None  # catalog name (`actions.proposed`) or the full name
    since: datetime | None = None
    unknown_ids: list[str] = field(default_factory=list)  # ids that name no dead letter, or several (filled by `select`)


def catalog_topic(topic: str, prefix: str) -> str | None:
    """`topic` without the deployment's prefix; None when it is not the deployment's."""
    return topic.removeprefix(prefix) if topic.startswith(prefix) else None


def dead_letter_of(row: LogRow, unverified: str | None = None) -> DeadLetter | None:
    """The dead letter a row of the log holds; None for a row that is not a readable `event.rejected`."""
    if not row.value:
        return None
    try:
        event = EventRejected.model_validate_json(row.value)
    except ValueError:
        return None
    where = f"{row.topic.rsplit('.', 1)[-1]}[{row.partition}]@{row.kafka_offset}"
    stored = None if row.valid else (row.invalid_reason or "not valid")  # the audit's verdict: signer_not_allowed of a forged one
    return DeadLetter(event.id, row.kafka_ts, where, event, unverified if unverified is not None else stored)


def named_service(dl: DeadLetter) -> str:
    """Who the on-call is told refused the record: the service a dead letter names, only when its row verifies.

    One whose row does not (a key that may not say it of that service, that record or that tenant) is not shown as
    that service's refusal: a stolen login's forgery must not send the on-call chasing the policy for a "lost" record.
    """
    service = dl.data.data.service
    return service if dl.unverified is None else f"not verified (names {service})"


def redriven_of(rows: Iterable[LogRow]) -> dict[str, tuple[Redriven, ...]]:
    """Dead letter id → the redrives the valid `control.redrive` rows record of it, oldest first."""
    out: dict[str, list[Redriven]] = {}
    for row in sorted(rows, key=lambda r: r.kafka_ts):
        if not row.valid or not row.value:
            continue
        try:
            d = ControlRedrive.model_validate_json(row.value).data
        except ValueError:
            continue
        out.setdefault(d.dead_letter_id, []).append(Redriven(d.set_by, row.kafka_ts, d.reason))
    return {k: tuple(v) for k, v in out.items()}


def _matches(dl: DeadLetter, s: Selection, prefix: str) -> bool:
    d = dl.data.data
    topic = s.topic if s.topic is None or s.topic.startswith(prefix) else prefix + s.topic
    return (
        (s.service is None or d.service == s.service)
        and (s.code is None or d.code == s.code)
        and (topic is None or d.topic == topic)
        and (s.since is None or dl.at >= s.since)
    )


def select(dead: Sequence[DeadLetter], s: Selection, prefix: str) -> list[DeadLetter]:
    """The dead letters `s` picks, oldest first; an id that names none or several is added to `s.unknown_ids`."""
    picked = [dl for dl in dead if _matches(dl, s, prefix)]
    if not s.ids:
        return picked
    chosen: dict[str, DeadLetter] = {}
    for wanted in s.ids:
        found = [dl for dl in picked if dl.id == wanted] or [dl for dl in picked if dl.id.startswith(wanted)]
        if len(found) == 1:
            chosen[found[0].id] = found[0]
        else:
            s.unknown_ids.append(wanted if not found else f"{wanted} (names {len(found)} dead letters: give more of it)")
    return [dl for dl in picked if dl.id in chosen]


def why_not(
    dl: DeadLetter, prefix: str, *, allow_unknown_key: bool = False, again: bool = False, approval_keys: Keyring | None = None
) -> str | None:
    """Why `dl` is not redriven (one line, with what to do instead), or None when it may be.

    `approval_keys`: the approval service's public keys, to tell a decision a policy could not verify (one signed as a newer
    release signs, at an older policy: upgrade note 22) from one that does not verify (None: no decision is redriven).
    """
    d = dl.data.data
    if dl.unverified is not None:
        return f"its row does not verify ({dl.unverified}): not a dead letter {d.service} wrote; nothing is sent of it"
    if dl.ran is not None:
        return f"{dl.ran}: its record was handled, whatever this dead letter says; nothing is sent of it"
    topic = catalog_topic(d.topic, prefix)
    if topic is None:
        return f"{d.topic} is not a topic of this deployment ({prefix})"
    if redrive_principal(topic) is None:
        if topic in ("control", "directory"):
            return f"{topic} holds state applied in order: a record sent again would undo newer ones; issue the command again"
        return f"no service consumes {topic} records that a redrive could help"
    code = d.code
    if code in _AUTHORITY:
        return f"{code} is a refusal for authority: the same bytes are refused again, and a redrive grants none (the signer sends anew)"
    if code == APPROVAL_UNAUTHENTICATED and not (approval_keys is not None and decision_verifies(dl, prefix, approval_keys)):
        return f"{code}: the decision it carries does not verify with the approval service's keys on file either; a redrive grants none"
    if code in _EXPIRED and dl.proposed_again is not None:
        return f"{code}: nothing ran, and {dl.proposed_again}: nothing to do"
    if code in _EXPIRED:
        return f"{code}: what it carried has expired for good; ask for a new decision (propose again)"
    if code in _CONTENT:
        return f"{code}: the same bytes fail the same check; the sender must send a corrected record"
    if code == UNKNOWN_KEY and not allow_unknown_key:
        return "unknown_key: once the signer's public key is on file (`tidegate keys list`), redrive it with --allow-unknown-key"
    if code not in REDRIVABLE and code not in (UNKNOWN_KEY, APPROVAL_UNAUTHENTICATED):
        return f"{code} is not a cause a redrive fixes (redriven: {', '.join(sorted(REDRIVABLE))}, and unknown_key when asked)"
    if dl.redriven and not again:
        last = dl.redriven[-1]
        return f"already redriven by {last.by} at {last.at:%Y-%m-%d %H:%M:%S}Z; --again sends it once more"
    return None


def decision_verifies(dl: DeadLetter, prefix: str, approval_keys: Keyring) -> bool:
    """Whether the decision `dl` carries whole verifies with `approval_keys` over either form a policy verifies now.

    Over `approval_document` of its data as carried (never parsed and dumped again), or over `approval_message` (before
    release 22). The policy verifies it again when it comes: this only tells a redrive that may help from one that cannot.
    """
    if not checked_alone(dl) or catalog_topic(dl.data.data.topic, prefix) != "approvals":
        return False
    try:
        event, document = decode_document("approvals", dl.data.data.raw_value)
        data = event.data
        messages = (approval_document(event.type, document["data"]), approval_message(event.type, data))
    except (ValueError, TypeError, KeyError):  # not a decision of the contract
        return False
    return bool(data.key_id and data.signature) and any(approval_keys.verify(data.key_id, m, data.signature) for m in messages)


def _headers(stored: list[dict[str, str]]) -> list[tuple[str, bytes | None]]:
    """A row's headers as Kafka had them (`services.audit.rows.headers_json`: text, base64 for bytes that are not UTF-8, or none)."""
    out: list[tuple[str, bytes | None]] = []
    for h in stored:
        if "v" in h:
            out.append((h["k"], h["v"].encode()))
        elif "b64" in h:
            out.append((h["k"], base64.b64decode(h["b64"])))
        else:
            out.append((h["k"], None))
    return out


def original_of(row: LogRow) -> Original:
    """The record a log row holds, as the bus held it."""
    return Original(row.value, row.key, _headers(row.headers))


def original_problem(dl: DeadLetter, row: LogRow | None) -> str | None:
    """Why the log's row at the dead letter's position is not the record it refused (None: it is)."""
    d = dl.data.data
    if row is None:
        return f"the audit log holds no record at {dl.original} (has the audit service caught up? `tidegate audit verify --complete`)"
    value = row.value or b""
    digest = hashlib.sha256(value).hexdigest()
    if d.sha256 is not None:
        if digest != d.sha256 or (d.size is not None and d.size != len(value)):
            return f"the log's record at {dl.original} is not the one refused (its SHA-256 differs): not sent"
    elif d.truncated or d.raw_value != value.decode("utf-8", "replace"):
        return f"the dead letter carries no SHA-256 and the log's record at {dl.original} differs from its value: not sent"
    if (other := tenant_problem(dl, row)) is not None:
        return f"{other}: not sent"
    return None


def checked_alone(dl: DeadLetter) -> bool:
    """Whether a dead letter carries its record whole (the signer's check held its tenant to it): else the log's copy must."""
    d = dl.data.data
    return not d.truncated and d.sha256 is not None and hashlib.sha256(d.raw_value.encode("utf-8", "surrogatepass")).hexdigest() == d.sha256


def tenant_problem(dl: DeadLetter, row: LogRow | None) -> str | None:
    """Why a dead letter's tenant is not that of the log's record at its position (the record it names, by its SHA-256)."""
    return dead_letter_tenant_problem(dl.data.data, row)


def held_to_record(dl: DeadLetter, row: LogRow | None) -> DeadLetter:
    """`dl`, marked not verified when the log's record at its position is another, or another tenant's.

    The signer's check holds a dead letter to what it carries, never to the position it names: a stolen key's dead
    letter can carry a record made up whole (its SHA-256 matching) and name where the log holds another one, or mark
    itself `truncated`, or name a SHA-256 of something else. The audit keeps every record's bytes as the bus held them:
    a record there that is not the one the dead letter names was not refused by it (`named_record_problem`).
    """
    if dl.unverified is not None or row is None:
        return dl
    why = named_record_problem(dl.data.data, row)
    if why is None:
        return dl
    return DeadLetter(dl.id, dl.at, dl.where, dl.data, f"{ReasonCode.SIGNER_NOT_ALLOWED.value}: {why}", dl.redriven, dl.ran)


# The call's own outcomes (`actions.results`): a dead letter of one is a consumer (the planner, the policy's spend, the
# approval service) that failed to handle the result, never a refusal that the result belies.
_RESULTS = frozenset({"tidegate.action.succeeded", "tidegate.action.failed", "tidegate.action.unknown"})


def ran_asked(row: LogRow | None, prefix: str) -> SearchFilters | None:
    """The search of the log for the executor's signed success of the action the record at `row` names (None: none to make).

    Of that very action: its tenant and task as well as its id (an agent picks its action ids, and another tenant's agent
    may pick the same one). None for a record that is itself a result (`ran_of`).
    """
    if row is None or not row.action_id or row.event_type in _RESULTS:
        return None
    return SearchFilters(
        event_type="tidegate.action.succeeded",
        action_id=row.action_id,
        tenant=row.tenant_id,
        task_id=row.task_id,
        topic_prefix=prefix,
        valid=True,
    )


def ran_of(row: LogRow | None, results: Iterable[LogRow]) -> str | None:
    """What the executor's signed result says of the action the record at `row` names, when it succeeded (None: none did).

    `results`: the log's valid `action.succeeded` rows of that action (`ran_asked`; only the executor's key may sign one). A
    dead letter of a record whose action then succeeded says a refusal that the call's own outcome belies (attacker3 F3: the
    executor's stolen login and key wrote one of an authorization the executor ran): the on-call must not redo a call that
    was made. Not so of a record that is itself a result (review62): its consumer's handling of it is still owed (the
    planner's next step, the policy's count of what a payee was paid), and a redrive is what gives it.
    """
    if row is None or not row.action_id or row.event_type in _RESULTS:
        return None
    done = next(
        (r for r in results if r.valid and r.action_id == row.action_id and r.tenant_id == row.tenant_id and r.task_id == row.task_id),
        None,
    )
    if done is None:
        return None
    at = f"{done.kafka_ts:%Y-%m-%d %H:%M:%S}Z"
    return f"action {row.action_id} succeeded: the executor's signed result at {at} (`tidegate audit explain {row.action_id}`)"


def proposed_again_of(row: LogRow | None, proposals: Iterable[LogRow]) -> str | None:
    """The proposal that makes the action at `row` again (`repeats` names it), said for the on-call; None when there is none.

    `proposals`: the log's valid `action.proposed` rows of the record's task. The planner proposes an authorization the executor
    refused as expired again by itself (`TIDEGATE_PLANNER_PROPOSALS_AGAIN_AFTER_EXPIRY`); its dead letter said "propose
    again" to an on-call who had nothing to do (oncall F3).
    """
    if row is None or not row.action_id:
        return None
    for proposal in proposals:
        try:
            data = json.loads(proposal.value or b"{}").get("data") or {}
        except ValueError:
            continue
        if proposal.valid and data.get("repeats") == row.action_id and proposal.action_id:
            at = f"{proposal.kafka_ts:%Y-%m-%d %H:%M:%S}Z"
            return f"the planner proposed it again as action {proposal.action_id} at {at} (`tidegate audit explain {proposal.action_id}`)"
    return None


def refused_now(authority: Authority, topic: str, original: Original, now_ms: int) -> str | None:
    """What every consumer of `topic` would refuse the record for if it came now (None: it would pass to its handler).

    The consumers' own first checks, on the bytes about to be sent (contract, then the producer's signature, a retired
    key's grace judged at `now_ms`): a record they would dead-letter again is not sent. A key still not on file says so.
    """
    raw = original.value or b""
    try:
        event, document = decode_document(topic, raw)
    except Exception as exc:  # ValidationError, RecursionError: the contract's refusal, whatever it is
        return f"it fails its topic's contract now ({type(exc).__name__}): every consumer would dead-letter it again"
    refusal = authority.check(raw, event, document, appended_ms=now_ms)
    if refusal is None:
        return None
    return f"every consumer would refuse it again now ({refusal.code}: {refusal.message[:300]}); nothing sent"


def as_json(dl: DeadLetter, prefix: str, why: str | None) -> str:
    """One dead letter as a JSON line of `tidegate dead-letters list --json`."""
    d = dl.data.data
    return json.dumps(
        {
            "id": dl.id, "at": dl.at.isoformat(), "where": dl.where, "service": d.service, "shown_as": named_service(dl),
            "code": d.code, "error": d.error,
            "topic": catalog_topic(d.topic, prefix) or d.topic, "partition": d.partition, "offset": d.offset, "key": d.key,
            "tenant_id": d.tenant_id, "task_id": d.task_id, "size": d.size, "sha256": d.sha256, "unverified": dl.unverified, "ran": dl.ran,
            "proposed_again": dl.proposed_again,
            "redrivable": why is None, "why_not": why,
            "redriven": [{"by": r.by, "at": r.at.isoformat(), "reason": r.reason} for r in dl.redriven],
        }
    )  # fmt: skip
