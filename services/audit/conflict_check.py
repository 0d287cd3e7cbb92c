"""The conflicts of `tidegate audit verify`: each recorded conflict is a break, unless an operator acknowledged it.

A conflict (`audit.conflicts`) is a record the bus delivered at a position whose row holds other content: the log
was written by someone other than the audit service. An acknowledged one (`acknowledgements.py`: signed by an
operator on the allow-list) is shown, not a break, so `verify` is green again and the next conflict still fails it.
An acknowledgement that names no recorded conflict is a break too (the conflict removed?). A conflict row whose
`record_sha256` is not the digest of the record it stores was not written by the service (which derives one from the
other): it is shown as a forged conflict row, a break until an operator acknowledges it by its position.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from services.audit.acknowledgements import Judged, conflict_id
from services.audit.chain import RecordedConflict
from services.audit.chain_check import Break

__all__ = ["AcknowledgedConflict", "conflict_breaks", "conflict_problem", "position_of"]


def position_of(c: RecordedConflict) -> str:
    """Where a conflict is, as `tidegate audit conflicts ack --at` takes it: `topic[partition]@offset`."""
    return f"{c.topic}[{c.partition}]@{c.kafka_offset}"


def conflict_problem(c: RecordedConflict) -> str:
    """What `verify` and `conflicts list` say of a recorded conflict: a forged row says so first."""
    if not c.forged:
        return c.problem()
    return (
        f"forged conflict row: its record_sha256 {c.record_sha256.hex()[:16]}… is not the digest of the record it stores "
        f"({(c.stored_sha256 or b'').hex()[:16]}…), so the audit service did not write it: a login that may insert into "
        "audit.conflicts did (the audit's own). It may copy a genuine conflict's id; that one is at its own position. "
        f"Once looked at, acknowledge it by position: tidegate audit conflicts ack --at {position_of(c)}"
    )


class AcknowledgedConflict(BaseModel):
    """A recorded conflict an operator acknowledged: not a break, still shown."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    seq: int | None
    offset: int
    conflict_id: str
    record_sha256: str
    """The genuine record's digest (hex): with the position, what names the conflict."""
    problem: str
    acknowledged_by: str
    acknowledged_at: datetime
    reason: str
    forged: bool = False
    """Its row's digest is not its stored record's: a forged conflict row (`conflict_problem`), acknowledged by position."""

    def describe(self) -> str:
        """One line for a person."""
        where = f"{self.topic}[{self.partition}]" + (f" seq {self.seq}" if self.seq is not None else "") + f" (offset {self.offset})"
        what = "forged conflict row" if self.forged else "conflict"
        return (
            f"{where}: {what} {self.conflict_id} acknowledged by {self.acknowledged_by} "
            f"at {self.acknowledged_at:%Y-%m-%d %H:%M:%S}: {self.reason}"
        )


def conflict_breaks(judged: Judged) -> tuple[list[Break], list[AcknowledgedConflict]]:
    """A break for each conflict no operator acknowledged and for each acknowledgement of no recorded conflict; the acknowledged."""
    breaks = []
    for c, why_not in judged.open:
        problem = conflict_problem(c) + (f"; an acknowledgement is stored but does not count: {'; '.join(why_not)}" if why_not else "")
        breaks.append(Break(topic=c.topic, partition=c.partition, seq=c.logged_seq, offset=c.kafka_offset, problem=problem))
    for ack, why in judged.orphans:
        named = f"an acknowledgement by {ack.acked_by} names conflict {conflict_id(ack)}, which audit.conflicts does not hold"
        problem = f"{named}: the conflict was removed?" if why is None else f"{named}, and it does not count: {why}"
        breaks.append(Break(topic=ack.topic, partition=ack.partition, offset=ack.kafka_offset, problem=problem))
    acknowledged = [
        AcknowledgedConflict(
            topic=c.topic,
            partition=c.partition,
            seq=c.logged_seq,
            offset=c.kafka_offset,
            conflict_id=conflict_id(c),
            record_sha256=c.record_sha256.hex(),
            problem=conflict_problem(c),
            forged=c.forged,
            acknowledged_by=ack.acked_by,
            acknowledged_at=ack.acked_at,
            reason=ack.reason,
        )
        for c, ack in judged.acknowledged
    ]
    return breaks, acknowledged
