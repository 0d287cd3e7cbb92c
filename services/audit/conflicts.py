"""What `tidegate audit conflicts list|ack` does: the recorded conflicts with whether each is acknowledged, and acknowledging one.

An acknowledgement is signed by the operator's key and stored only if it will count (`acknowledgements.refusal`):
a key off the allow-list, or one taken away, is told so and nothing is written.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from servicekit.signing import SigningKey
from services.audit.acknowledgements import KeyHolders, acknowledge, conflict_id, judge, refusal
from services.audit.chain import RecordedConflict
from services.audit.repository import AuditLog

__all__ = ["ConflictState", "acknowledge_conflict", "list_conflicts"]

_ID = re.compile(r"^[0-9a-f]{8,64}$")


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
        offset=c.kafka_offset, logged_seq=c.logged_seq, differs=list(c.differs), detected_at=c.detected_at, problem=c.problem(),
        **more,  # type: ignore[arg-type]
    )  # fmt: skip


async def list_conflicts(log: AuditLog, operators: KeyHolders, prefix: str = "") -> list[ConflictState]:
    """Every conflict recorded in the deployment `prefix`, by position, each with its acknowledgement if one counts."""
    judged = judge(await log.conflicts(prefix), await log.acknowledgements(prefix), operators)
    states = [_state(c, refused=why) for c, why in judged.open]
    states += [_state(c, acknowledged_by=a.acked_by, acknowledged_at=a.acked_at, reason=a.reason) for c, a in judged.acknowledged]
    return sorted(states, key=lambda s: (s.topic, s.partition, s.offset, s.conflict_id))


async def acknowledge_conflict(
    log: AuditLog, key: SigningKey, ident: str, reason: str, operators: KeyHolders, *, prefix: str = "", at: datetime
) -> tuple[ConflictState, bool]:
    """Acknowledge the conflict `ident` names (its id or a longer prefix of its record_sha256) for `reason`, signed with `key`.

    Returns the conflict as it stands and whether an acknowledgement was written (False: one by an operator already counts).

    Raises:
        LookupError: `ident` names no conflict of the deployment, or several.
        ValueError: the reason is empty, or `key` is not an operator's key on the allow-list (nothing is written).
    """
    ident = ident.strip().lower()
    if not _ID.match(ident):
        raise LookupError(f"{ident!r} is not a conflict id (8 to 64 hex digits, as `tidegate audit conflicts list` shows)")
    if not reason.strip():
        raise ValueError("give the reason the conflict is known (--reason): it is kept, signed, with the acknowledgement")
    matches = [c for c in await log.conflicts(prefix) if c.record_sha256.hex().startswith(ident)]
    if not matches:
        raise LookupError(f"no conflict {ident} is recorded in this deployment (`tidegate audit conflicts list`)")
    if len(matches) > 1:
        where = ", ".join(f"{c.topic}[{c.partition}] offset {c.kafka_offset} ({c.record_sha256.hex()[:24]})" for c in matches)
        raise LookupError(f"{ident} names {len(matches)} conflicts: {where}; give more of the id")
    [conflict] = matches
    states = {(s.topic, s.partition, s.offset, s.record_sha256): s for s in await list_conflicts(log, operators, prefix)}
    if (state := states[(conflict.topic, conflict.partition, conflict.kafka_offset, conflict.record_sha256.hex())]).acknowledged:
        return state, False
    ack = acknowledge(key, conflict, reason.strip(), at)
    if (why := refusal(ack, operators)) is not None:
        raise ValueError(f"nothing stored: verify would not count this acknowledgement ({why})")
    await log.add_acknowledgement(ack)
    return _state(conflict, acknowledged_by=ack.acked_by, acknowledged_at=ack.acked_at, reason=ack.reason), True
