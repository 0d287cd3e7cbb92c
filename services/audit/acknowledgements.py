"""An operator's acknowledgement of a recorded conflict: signed, so the audit's own database login cannot forge one.

A conflict (`audit.conflicts`) is evidence and stays for good. An on-call engineer who looked at one and found its
cause acknowledges it (`tidegate audit conflicts ack`): the acknowledgement names the conflict exactly (its position,
the genuine record's digest, the row the log holds there and what differs), says why, and is signed with the
operator's key (`servicekit.operator_key`). The signing and the check are the kit's row seal
(`servicekit.row_proofs.RowSeal`), as for every row that grants; the bytes are this module's (`ack_message`, the same
as before the kit held them: acknowledgements stored before still verify). `verify` counts a conflict as acknowledged
(shown, not a break) only under a valid signature by the operator it names, on the allow-list (`Authority`), whose key
was not taken away (`tidegate keys deny-operator`). A row of `audit.conflict_acks` written without such a key proves
nothing: the conflict stays a break and says why the acknowledgement does not count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from servicekit.row_proofs import ALTERED, NOT_ALLOWED, UNKNOWN_KEY, KeyHolders, RowSeal, operator_named, operator_not_denied
from servicekit.signing import SigningKey
from services.audit.chain import Conflict, RecordedConflict
from services.audit.rows import Fingerprint

__all__ = [
    "Acknowledgement",
    "Judged",
    "KeyHolders",
    "ack_claims",
    "ack_message",
    "acknowledge",
    "acknowledged_positions",
    "conflict_id",
    "detected_position",
    "judge",
    "refusal",
]

_DOMAIN = b"tidegate/audit-conflict-ack/v1\n"  # what the bytes are: an acknowledgement's signature is never anything else's

Position = tuple[str, int, int, bytes]
"""(topic, partition, kafka_offset, record_sha256): what names one conflict (`audit.conflicts`' key)."""


@dataclass(frozen=True)
class Acknowledgement:
    """One row of `audit.conflict_acks`: which conflict, why, and who signed it with which key, when."""

    topic: str
    partition: int
    kafka_offset: int
    record_sha256: bytes
    logged_seq: int | None
    differs: tuple[str, ...]
    reason: str
    acked_by: str
    acked_at: datetime
    key_id: str
    signature: str = ""

    @property
    def position(self) -> Position:
        """The conflict it names."""
        return (self.topic, self.partition, self.kafka_offset, self.record_sha256)


def conflict_id(c: RecordedConflict | Acknowledgement) -> str:
    """The short id a person types (`tidegate audit conflicts ack ID`): the first 16 hex digits of the genuine record's digest."""
    return c.record_sha256.hex()[:16]


def _position(c: RecordedConflict) -> Position:
    return (c.topic, c.partition, c.kafka_offset, c.record_sha256)


def ack_claims(ack: Acknowledgement) -> dict[str, Any]:
    """What an operator signs: the whole conflict as shown, the reason, who, with which key, when (not the signature)."""
    return {
        "topic": ack.topic,
        "partition": ack.partition,
        "kafka_offset": ack.kafka_offset,
        "record_sha256": ack.record_sha256.hex(),
        "logged_seq": ack.logged_seq,
        "differs": list(ack.differs),
        "reason": ack.reason,
        "acked_by": ack.acked_by,
        "acked_at": ack.acked_at.astimezone(UTC).isoformat(timespec="microseconds"),  # what PostgreSQL keeps of a time
        "key_id": ack.key_id,
    }


def _seal(operators: KeyHolders | None = None, key: SigningKey | None = None) -> RowSeal:
    """The seal of `audit.conflict_acks`: signed by the operator the row names, one whose key was not taken away."""
    return RowSeal("audit", "conflict_acks", _DOMAIN, key, operators, operator_not_denied, operator_named("acked_by"))


def ack_message(ack: Acknowledgement) -> bytes:
    """The bytes an operator signs for `ack`: the domain, then the canonical JSON of `ack_claims`."""
    return _seal().message(ack_claims(ack))


def acknowledge(key: SigningKey, conflict: RecordedConflict, reason: str, at: datetime) -> Acknowledgement:
    """`conflict` acknowledged for `reason` by the holder of `key` (an operator's), signed."""
    unsigned = Acknowledgement(
        conflict.topic, conflict.partition, conflict.kafka_offset, conflict.record_sha256, conflict.logged_seq, tuple(conflict.differs),
        reason, key.name, at.astimezone(UTC), key.key_id,
    )  # fmt: skip
    proof = _seal(key=key).sign(lambda key_id: ack_claims(replace(unsigned, key_id=key_id)))
    return replace(unsigned, key_id=proof.key_id, signature=proof.signature)


def refusal(ack: Acknowledgement, operators: KeyHolders) -> str | None:
    """Why `ack` does not count (None: the operator it names, on the allow-list, signed it with a key not taken away)."""
    unproven = _seal(operators).check(ack_claims(ack), ack.key_id, ack.signature)
    if unproven is None:
        return None
    if unproven.reason == UNKNOWN_KEY or not ack.key_id:
        return f"signed with key {ack.key_id!r} as {ack.acked_by!r}, which is no operator's key on the allow-list"
    if unproven.reason == NOT_ALLOWED:
        return f"signed by {ack.acked_by}, whose key was taken away (`tidegate keys deny-operator`): acknowledge it again"
    forged = "forged, or changed after it was signed" if unproven.reason == ALTERED else "it carries none"  # UNSIGNED: no signature
    return f"its signature by {ack.acked_by} ({ack.key_id}) does not verify: {forged}"


@dataclass(frozen=True)
class Judged:
    """The recorded conflicts, each acknowledged or not, and the acknowledgements that name no recorded conflict."""

    acknowledged: list[tuple[RecordedConflict, Acknowledgement]]
    """Each conflict an operator acknowledged, with the first acknowledgement that counts."""
    open: list[tuple[RecordedConflict, list[str]]]
    """Each conflict not acknowledged, with why each acknowledgement stored for it does not count."""
    orphans: list[tuple[Acknowledgement, str | None]]
    """Acknowledgements of no recorded conflict (the conflict removed?), with why each does not count (None: it verifies)."""


def judge(conflicts: Iterable[RecordedConflict], acks: Iterable[Acknowledgement], operators: KeyHolders | None) -> Judged:
    """Which conflicts an operator acknowledged. Without `operators` (no allow-list to check against) none is."""
    by_position: dict[Position, list[Acknowledgement]] = {}
    for ack in sorted(acks, key=lambda a: a.acked_at):
        by_position.setdefault(ack.position, []).append(ack)
    acknowledged, open_ = [], []
    for conflict in conflicts:
        why_not = []
        for ack in by_position.pop(_position(conflict), []):
            why = _mismatch(ack, conflict) or (refusal(ack, operators) if operators is not None else "no operator allow-list to check it")
            if why is None:
                acknowledged.append((conflict, ack))
                break
            why_not.append(why)
        else:
            open_.append((conflict, why_not))
    orphans = [(ack, refusal(ack, operators) if operators is not None else None) for acks_ in by_position.values() for ack in acks_]
    return Judged(acknowledged, open_, orphans)


def _mismatch(ack: Acknowledgement, conflict: RecordedConflict) -> str | None:
    """Why `ack` is not of `conflict` as recorded, though it names its position (None: it is)."""
    if (ack.logged_seq, ack.differs) != (conflict.logged_seq, tuple(conflict.differs)):
        return f"it names the logged row seq {ack.logged_seq} ({', '.join(ack.differs)}), not the conflict as recorded"
    return None


def detected_position(c: Conflict) -> Position:
    """The position of a conflict as the service detects it (what `audit.conflicts` stores it under)."""
    r = c.record
    return (r.topic, r.partition, r.kafka_offset, Fingerprint.of(r).digest())


def acknowledged_positions(
    conflicts: Iterable[RecordedConflict], acks: Iterable[Acknowledgement], operators: KeyHolders | None
) -> set[Position]:
    """The positions of the recorded conflicts an operator acknowledged (`judge`)."""
    return {_position(c) for c, _ in judge(conflicts, acks, operators).acknowledged}
