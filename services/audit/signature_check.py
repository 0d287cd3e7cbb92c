"""`tidegate audit verify --signatures`: each row observed again from its own value, with the deployment's keys.

The hashes prove the rows were not changed since they were written, not that the audit service wrote them: its
database login may INSERT, and a superuser may rewrite a chain and sign it anew. Every row is observed again from the
value and headers it stores, as the audit service observed the record: a row that claims a signature its value does
not carry is named, and so is a row whose columns read from its value (its event id and type, tenant, task, action,
tool, outcome, reasons, trace, time) say other than its value does, and a row stored as refused that its value shows
valid for a reason no later key explains. The readers trust those columns (`explain` and `search` select and group by
them): a genuine approval given another task, or recorded as refused, would otherwise pass (auditor1 F2).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from schemas import ReasonCode
from servicekit.intake import Bounds
from services.audit.records import EPOCH, SignatureCheck, observe
from services.audit.rows import LogRow, Observed, headers_json

__all__ = ["READ_FROM_VALUE", "DuplicateCheck", "Recheck", "signature_recheck"]


Recheck = Callable[[LogRow], str | None]
"""The problem with a row's stored verdict or columns, reached again from its value (None: it holds)."""

READ_FROM_VALUE = (
    "event_id", "event_type", "tenant_id", "task_id", "action_id", "tool", "outcome", "reasons", "trace_id", "traceparent", "event_time",
)  # fmt: skip
"""The columns the audit service reads from a record's value and headers (`records._fields`)."""

# Refusals that keys changed since may lift: a key unknown then and registered since, a signer allowed since (an
# operator or a client added), a grace window set longer. Any other refusal (a signature that does not verify, none at
# all, a value outside the contract) is a function of the stored bytes alone, so a row stored refused for it whose
# value verifies now was not refused by the audit service.
_KEYS_CHANGED_SINCE = (ReasonCode.UNKNOWN_KEY.value, ReasonCode.SIGNER_NOT_ALLOWED.value, ReasonCode.SIGNER_RETIRED.value)


def _kafka_headers(stored: Sequence[dict[str, str]]) -> list[tuple[str, bytes | None]] | None:
    """A row's headers as the Kafka record carried them (`records._headers` stored `v` as text, `b64` when not).

    None: they are not headers as the audit stores them (not a list of `{"k", "v" | "b64"}` of text), so no record had them.
    """
    if type(stored) is not list or not all(type(h) is dict and all(type(v) is str for v in h.values()) for h in stored):
        return None
    try:
        return [(h["k"], _value(h)) for h in stored]
    except (KeyError, ValueError):
        return None


def _value(header: dict[str, str]) -> bytes | None:
    """One stored header's value as Kafka carried it: `v` as text, `b64` when not, none (`k` alone)."""
    if "v" in header:
        return header["v"].encode()
    return base64.b64decode(header["b64"], validate=True) if "b64" in header else None


def _differs(row: LogRow, again: Observed) -> list[str]:
    return [name for name in READ_FROM_VALUE if getattr(row, name) != getattr(again, name)]


def _keyid(value: bytes | None) -> str | None:
    """The `keyid` an event's value names (None: not an event, or none named)."""
    try:
        doc = json.loads(value or b"")
    except ValueError:
        return None
    keyid = doc.get("keyid") if isinstance(doc, dict) else None
    return keyid if isinstance(keyid, str) else None


def signature_recheck(
    check: SignatureCheck,
    prefix: str,
    bounds: Bounds,
    *,
    added_at: Callable[[str], float | None] | None = None,
    keys_hint: str = "the keys folder, TIDEGATE_KEYS_DIR, must keep every public key, retired ones too",
) -> Recheck:
    """A `Recheck` that observes a row's value again as the audit service did (`check`: the history authority).

    A row stored as a valid event that the authority refuses now claims a signature it does not carry (or a key was
    taken out of the keyring: keep retired public keys). A row stored as refused that verifies now is named unless keys
    changed since may explain it (`_KEYS_CHANGED_SINCE`): a key registered since may verify it, and it granted nothing.
    With `added_at` (`Authority.added_at`: when a key's public file was put on file), "since" is held to the key's own
    time: a key on file before the record arrived explains no such refusal (the reason is the DBA's column to choose:
    auditor2 N1, bob's grant relabelled `signer_not_allowed`). `keys_hint`: where the missing key should have been.
    """

    def recheck(row: LogRow) -> str | None:
        stamp_ms = (row.kafka_ts - EPOCH) // timedelta(milliseconds=1)
        if (headers := _kafka_headers(row.headers)) is None:
            said = headers_json(row.headers)[:80]
            return f"its headers are not Kafka headers as the audit stores them ({said}): a row the audit service did not write"
        again = observe(
            topic=row.topic, partition=row.partition, offset=row.kafka_offset, timestamp_ms=stamp_ms, timestamp_type=row.ts_type,
            key=row.key, value=row.value, headers=headers, prefix=prefix, bounds=bounds, check=check,
        )  # fmt: skip
        if row.valid and not again.valid and (again.invalid_reason or "").startswith(ReasonCode.UNKNOWN_KEY.value):
            return (
                f"stored as a valid event, but signed by a key this machine's keyring does not hold ({again.invalid_reason}): "
                f"not verified here ({keys_hint})"
            )
        if row.valid and not again.valid:
            why = again.invalid_reason
            return f"stored as a valid event, but its value does not verify: {why} (a row the audit service did not write?)"
        if differs := _differs(row, again):
            said = "; ".join(f"{name} {getattr(row, name)!r}, its value says {getattr(again, name)!r}" for name in differs)
            return f"its columns say other than its value: {said} (a row the audit service did not write)"
        if not row.valid and again.valid:
            if not (row.invalid_reason or "").startswith(_KEYS_CHANGED_SINCE):
                return (
                    f"stored as refused ({row.invalid_reason}), but its value verifies, and no change of keys since explains it "
                    "(a row the audit service did not write)"
                )
            keyid = _keyid(row.value)
            put = added_at(keyid) if added_at is not None and keyid is not None else None
            if put is not None and put <= row.kafka_ts.timestamp():
                return (
                    f"stored as refused ({row.invalid_reason}), but its value verifies, and the key that signed it ({keyid}) was "
                    f"on file since {datetime.fromtimestamp(put, UTC):%Y-%m-%d %H:%M:%S} UTC, before the record arrived "
                    f"({row.kafka_ts:%Y-%m-%d %H:%M:%S} UTC): no change of keys explains it (a row the audit service did not write)"
                )
        return None

    return recheck


@dataclass
class DuplicateCheck:
    """Whether each row flagged `duplicate` duplicates something: a valid, unflagged row of the same event id.

    The service flags a valid event whose id a valid, unflagged row already holds (`chain.chain_records`). `duplicate`
    is a column the readers trust (`explain` skips a flagged row): a genuine approval flagged so disappeared from its
    task's story, chain and checkpoints signed anew by a superuser (auditor1 F2). Fed every row of the log (`feed`), it
    names each flagged row whose event no unflagged valid row holds. A log pruned into archives may have lost that row,
    so there nothing is named. (Two unflagged rows of one id are not named: two copies of the service appending the
    same event on two partitions at once each flag neither, as designed.)
    """

    unflagged: set[str] = field(default_factory=set)
    flagged: dict[str, LogRow] = field(default_factory=dict)  # the first flagged row of each event id (to name it)

    def feed(self, row: LogRow) -> None:
        """Count one row (rows of any chain, in any order)."""
        if not row.valid or not row.event_id:
            return
        if row.duplicate:
            self.flagged.setdefault(row.event_id, row)
        else:
            self.unflagged.add(row.event_id)

    def unmatched(self) -> list[str]:
        """The event ids of flagged rows no unflagged row fed holds (ask the rest of the log: `AuditLog.unflagged_event_ids`)."""
        return [event_id for event_id in self.flagged if event_id not in self.unflagged]

    def problems(self, *, elsewhere: Collection[str] = (), pruned: bool) -> list[tuple[LogRow, str]]:
        """Each flagged row that duplicates nothing, with why.

        `elsewhere`: the unmatched ids an unflagged row holds in rows not fed (before a `--from-checkpoint` start);
        `pruned`: whether any chain was pruned into an archive (where the row duplicated may be: then nothing is named).
        """
        if pruned:
            return []
        said = "flagged a duplicate of event {}, but no other valid row holds that event (its only copy hidden?)"
        return [(self.flagged[event_id], said.format(event_id)) for event_id in self.unmatched() if event_id not in elsewhere]
