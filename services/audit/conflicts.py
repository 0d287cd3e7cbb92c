"""What `tidegate audit conflicts list|ack` does: the recorded conflicts with whether each is acknowledged, and acknowledging one.

An acknowledgement is signed by the operator's key and stored only if it will count (`acknowledgements.refusal`):
a key off the allow-list, or one taken away, is told so and nothing is written. A conflict is named by its id (a
prefix of the genuine record's digest), by its position (`topic[partition]@offset`), or both. The audit's login may
insert conflict rows, so an id can name several (one carrying another's digest at another offset): then the position
picks, and the acknowledgement signs the position, so it counts for that row only.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from servicekit.signing import SigningKey
from services.audit.acknowledgements import KeyHolders, acknowledge, conflict_id, judge, refusal
from services.audit.chain import RecordedConflict
from services.audit.conflict_check import conflict_problem, position_of
from services.audit.repository import AuditLog

__all__ = ["ConflictState", "acknowledge_conflict", "list_conflicts"]

_ID = re.compile(r"^[0-9a-f]{8,64}$")
_AT = re.compile(r"^(?P<topic>[^\s\[\]@]+)\[(?P<partition>[0-9]{1,9})\]@(?P<offset>[0-9]{1,19})$")


class ConflictState(BaseModel):
    """One recorded conflict, and whether an operator acknowledged it (or why the acknowledgements stored do not count)."""

    model_config = ConfigDict(frozen=True)

    conflict_id: str
    record_sha256: str
    """The genuine record's digest (hex): with the position, what names the conflict."""
    topic: str
    partition: int
    offset: int
    logged_seq: int | None
    differs: list[str]
    detected_at: datetime
    problem: str
    at: str
    """Its position as `tidegate audit conflicts ack --at` takes it: `topic[partition]@offset`."""
    forged: bool = False
    """Its row's record_sha256 is not the digest of the record it stores: the audit service did not write it."""
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    reason: str | None = None
    refused: list[str] = []
    """Why each acknowledgement stored for it does not count (forged, changed, or by a key taken away)."""

    @property
    def acknowledged(self) -> bool:
        """True when an operator on the allow-list signed an acknowledgement of it."""
        return self.acknowledged_by is not None


def _state(c: RecordedConflict, **more: object) -> ConflictState:
    return ConflictState(
        conflict_id=conflict_id(c), record_sha256=c.record_sha256.hex(), topic=c.topic, partition=c.partition,
        offset=c.kafka_offset, logged_seq=c.logged_seq, differs=list(c.differs), detected_at=c.detected_at,
        problem=conflict_problem(c), at=position_of(c), forged=c.forged, **more,  # type: ignore[arg-type]
    )  # fmt: skip


async def list_conflicts(log: AuditLog, operators: KeyHolders, prefix: str = "") -> list[ConflictState]:
    """Every conflict recorded in the deployment `prefix`, by position, each with its acknowledgement if one counts."""
    judged = judge(await log.conflicts(prefix), await log.acknowledgements(prefix), operators)
    states = [_state(c, refused=why) for c, why in judged.open]
    states += [_state(c, acknowledged_by=a.acked_by, acknowledged_at=a.acked_at, reason=a.reason) for c, a in judged.acknowledged]
    return sorted(states, key=lambda s: (s.topic, s.partition, s.offset, s.conflict_id))


async def acknowledge_conflict(
    log: AuditLog,
    key: SigningKey,
    ident: str | None,
    reason: str,
    operators: KeyHolders,
    *,
    prefix: str = "",
    at: datetime,
    where: str | None = None,
) -> tuple[ConflictState, bool]:
    """Acknowledge the conflict `ident` (its id or a longer prefix of its record_sha256) and/or `where` (its position) names.

    `where` is `topic[partition]@offset` (the topic as listed, or without the deployment's prefix). Returns the
    conflict as it stands and whether an acknowledgement was written (False: one by an operator already counts).

    Raises:
        LookupError: they name no conflict of the deployment, or several (each listed, with how to pick it).
        ValueError: the reason is empty, or `key` is not an operator's key on the allow-list (nothing is written).
    """
    matches = _named(await log.conflicts(prefix), ident, where, prefix)
    if not reason.strip():
        raise ValueError("give the reason the conflict is known (--reason): it is kept, signed, with the acknowledgement")
    named = " ".join(filter(None, (ident and ident.strip().lower(), where and f"--at {where.strip()}")))
    if not matches:
        raise LookupError(f"no conflict {named} is recorded in this deployment (`tidegate audit conflicts list`)")
    if len(matches) > 1:
        raise LookupError(f"{named} names {len(matches)} conflicts; pick one: {'; '.join(_how_to_pick(c, matches) for c in matches)}")
    [conflict] = matches
    states = {(s.topic, s.partition, s.offset, s.record_sha256): s for s in await list_conflicts(log, operators, prefix)}
    if (state := states[(conflict.topic, conflict.partition, conflict.kafka_offset, conflict.record_sha256.hex())]).acknowledged:
        return state, False
    ack = acknowledge(key, conflict, reason.strip(), at)
    if (why := refusal(ack, operators)) is not None:
        raise ValueError(f"nothing stored: verify would not count this acknowledgement ({why})")
    await log.add_acknowledgement(ack)
    return _state(conflict, acknowledged_by=ack.acked_by, acknowledged_at=ack.acked_at, reason=ack.reason), True


def _named(conflicts: list[RecordedConflict], ident: str | None, where: str | None, prefix: str) -> list[RecordedConflict]:
    """The recorded conflicts `ident` and `where` both name (either may be left out, not both)."""
    if ident is None and where is None:
        raise LookupError("name the conflict: its id, its position (--at topic[partition]@offset), or both")
    if ident is not None:
        ident = ident.strip().lower()
        if not _ID.match(ident):
            raise LookupError(f"{ident!r} is not a conflict id (8 to 64 hex digits, as `tidegate audit conflicts list` shows)")
        conflicts = [c for c in conflicts if c.record_sha256.hex().startswith(ident)]
    if where is not None:
        if not (m := _AT.match(where.strip())):
            raise LookupError(f"--at {where!r} is not a position: give topic[partition]@offset, as `tidegate audit conflicts list` shows")
        topics = {m["topic"], prefix + m["topic"]}
        conflicts = [c for c in conflicts if c.topic in topics and (c.partition, c.kafka_offset) == (int(m["partition"]), int(m["offset"]))]
    return conflicts


def _how_to_pick(c: RecordedConflict, among: list[RecordedConflict]) -> str:
    """How to name `c` alone among `among`: its position, and its full digest too where another shares the position."""
    at = f"--at {position_of(c)}"
    if sum(position_of(o) == position_of(c) for o in among) > 1:
        at = f"{c.record_sha256.hex()} {at}"
    return f"{conflict_id(c)} at {position_of(c)}{' (forged conflict row)' if c.forged else ''}: ack {at}"
