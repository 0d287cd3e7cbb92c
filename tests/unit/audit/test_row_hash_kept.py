"""A chain written by an earlier release still verifies: the bytes each row's hash covers never change with the code.

The row's bytes are made by hand-written fast encoders (`row_content`, `_headers`), and each cut that makes them
faster must make exactly the same bytes: else every row already written would fail `tidegate audit verify` (an
operator's whole log, reported as tampered). These hashes were written by the code before the encoders were last
made faster (release of 2026-12-06) and are held here as an auditor holds an old log: verbatim.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.audit.records import GENESIS, LogRow, observe

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
