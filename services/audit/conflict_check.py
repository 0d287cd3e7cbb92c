"""The conflicts of `tidegate audit verify`: each recorded conflict is a break, unless an operator acknowledged it.

A conflict (`audit.conflicts`) is a record the bus delivered at a position whose row holds other content: the log
was written by someone other than the audit service. An acknowledged one (`acknowledgements.py`: signed by an
operator on the allow-list) is shown, not a break, so `verify` is green again and the next conflict still fails it.
An acknowledgement that names no recorded conflict is a break too (the conflict removed?).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from services.audit.acknowledgements import Judged, conflict_id
from services.audit.chain_check import Break

__all__ = ["AcknowledgedConflict", "conflict_breaks"]


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

    def describe(self) -> str:
        """One line for a person."""
        where = f"{self.topic}[{self.partition}]" + (f" seq {self.seq}" if self.seq is not None else "") + f" (offset {self.offset})"
        return (
            f"{where}: conflict {self.conflict_id} acknowledged by {self.acknowledged_by} "
            f"at {self.acknowledged_at:%Y-%m-%d %H:%M:%S}: {self.reason}"
        )


def conflict_breaks(judged: Judged) -> tuple[list[Break], list[AcknowledgedConflict]]:
    """A break for each conflict no operator acknowledged and for each acknowledgement of no recorded conflict; the acknowledged."""
    breaks = []
    for c, why_not in judged.open:
        problem = c.problem() + (f"; an acknowledgement is stored but does not count: {'; '.join(why_not)}" if why_not else "")
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
            problem=c.problem(),
            acknowledged_by=ack.acked_by,
            acknowledged_at=ack.acked_at,
            reason=ack.reason,
        )
        for c, ack in judged.acknowledged
    ]
    return breaks, acknowledged
