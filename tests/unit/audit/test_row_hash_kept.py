"""A chain written by an earlier release still verifies: the bytes each row's hash covers never change with the code.

The row's bytes are made by hand-written fast encoders (`row_content`, `_headers`), and each cut that makes them
faster must make exactly the same bytes: else every row already written would fail `tidegate audit verify` (an
operator's whole log, reported as tampered). These hashes were written by the code before the encoders were last
made faster (release of 2026-12-06) and are held here as an auditor holds an old log: verbatim.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.audit.chain import Head, chain_batch
from services.audit.records import observe
from services.audit.rows import GENESIS, LogRow

VALUE = json.dumps({
    "specversion": "1.0", "id": "e-1", "type": "tidegate.action.proposed", "source": "tidegate/planner",
    "time": "2026-01-02T03:04:05.678901+00:00", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    "data": {
        "action_id": "a-1", "task_id": "t-1", "tenant_id": "acme", "step": 0, "tool": "tag_ticket", "args": {"t": "é\u2028"},
        "proposer": "p",
    },
}).encode()  # fmt: skip

WRITTEN = [  # (key, value, headers) as Kafka delivered them, and the hash of the row the audit wrote of them
    (b"t-1", VALUE, [("ce_type", b"tidegate.action.proposed"), ("bin", b"\xff\x00"), ("nul", None), ("traceparent", b"00-x")],
     "12adfb97c793d4c95047e1db4757b92fc83afb0f300023968b44fc98b5bcd71c"),
    (None, None, [], "6d0a67062ae6d8d49f615134024b36ed290a82087d030e2996b693b4782cd935"),
    (b"\x00k", b"not json", [("", b"")], "70e2b0458471aacbce254720bb508c9dfbb6b6acb399ca470212855a1bb84725"),
]  # fmt: skip


def test_rows_written_before_hash_as_they_did() -> None:
    for key, value, headers, written in WRITTEN:
        obs = observe(
            topic="p.actions.proposed", partition=2, offset=41, timestamp_ms=1767323045678, timestamp_type=1,
            key=key, value=value, headers=headers, prefix="p.",
        )  # fmt: skip
        row = LogRow.link(obs, seq=7, prev_hash=GENESIS, duplicate=False, recorded_at=datetime(2026, 1, 2, 3, 4, 6, 123456, tzinfo=UTC))
        assert row.hash.hex() == written
        assert row.expected_hash() == row.hash  # the reference encoding, as `verify` recomputes it, agrees


def _event(step: int, event_id: str) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": event_id, "type": "tidegate.action.proposed", "source": "tidegate/planner",
        "time": "2026-01-02T03:04:05.678901+00:00", "tenantid": "acme", "subject": "t-1",
        "data": {
            "action_id": f"a-{step}", "task_id": "t-1", "tenant_id": "acme", "step": step, "tool": "tag_ticket", "args": {},
            "proposer": "p",
        },
    }).encode()  # fmt: skip


# A batch over two chains, one going on from a stored head: (partition, offset, seq, prev_hash, hash, duplicate, valid) of each
# row the code before the chain's loop was made faster (2026-12-06) wrote, verbatim.
BATCH_WRITTEN = [
    (0, 10, 5, "11" * 32, "be3527f0daef1c4e7a5a5b11a72d7d4cd40ffed00e8728bd707a467454b3b1af", False, True),
    (1, 0, 1, "00" * 32, "5e6aa003b440cfe937fc0c42ea48c90eba7783fef78b3df563a10cfc1ac11ad8", False, True),
    (0, 11, 6, "be3527f0daef1c4e7a5a5b11a72d7d4cd40ffed00e8728bd707a467454b3b1af",
     "d5e5fd1de5c7221b7c407e2820647fc6640b49499a87f48eaf52c4fce5113ffa", True, True),
    (1, 1, 2, "5e6aa003b440cfe937fc0c42ea48c90eba7783fef78b3df563a10cfc1ac11ad8",
     "178ca14052206715cac689b319478285527468cb264ec400d8810d0b32e943ad", False, False),
]  # fmt: skip


def test_a_batch_is_chained_as_it_was() -> None:
    """Each chain goes on from its head, a repeated event id is flagged, a record behind the head is a conflict, not a row."""
    spec = [(0, 10, _event(1, "e-1")), (1, 0, _event(2, "e-2")), (0, 11, _event(3, "e-1")), (0, 9, _event(4, "e-4")), (1, 1, b"not json")]
    header = [("ce_type", b"tidegate.action.proposed")]
    records = [
        observe(topic="p.actions.proposed", partition=p, offset=o, timestamp_ms=1767323045678 + o, timestamp_type=1, key=b"t-1", value=v,
                headers=header, prefix="p.")
        for p, o, v in spec
    ]  # fmt: skip
    heads = {("p.actions.proposed", 0): Head(4, b"\x11" * 32, 9)}
    result = chain_batch(records, heads, set(), datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC))
    rows = [(r.partition, r.kafka_offset, r.seq, r.prev_hash.hex(), r.hash.hex(), r.duplicate, r.valid) for r in result.rows]
    assert rows == BATCH_WRITTEN
    assert all(r.expected_hash() == r.hash for r in result.rows)
    assert (result.already_recorded, result.duplicates) == (0, 1)
    assert [(c.record.kafka_offset, c.seq) for c in result.conflicts] == [(9, None)]
