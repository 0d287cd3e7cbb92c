"""Placing records in chains: one chain per partition, each position once, each event id counted once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import schemas as s
from schemas.examples import sample_events
from services.audit.chain import Head, Logged, chain_batch
from services.audit.rows import GENESIS, Fingerprint

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def test_rows_are_numbered_and_linked_per_partition(make: Any) -> None:
    records = [make("tasks", b"x", partition=p, offset=o) for o in range(3) for p in (0, 1)]
    result = chain_batch(records, {}, set(), NOW)
    for p in (0, 1):
        chain = [r for r in result.rows if r.partition == p]
        assert [r.seq for r in chain] == [1, 2, 3]
        assert chain[0].prev_hash == GENESIS
        assert [r.prev_hash for r in chain[1:]] == [r.hash for r in chain[:-1]]


def test_positions_already_recorded_are_skipped_after_a_redelivery(make: Any) -> None:
    first = chain_batch([make("tasks", b"x", offset=o) for o in range(5)], {}, set(), NOW)
    head = first.rows[-1]
    held = Logged(kept_from=0, rows={r.kafka_offset: (r.seq, Fingerprint.of(r)) for r in first.rows})
    again = chain_batch(
        [make("tasks", b"x", offset=o) for o in range(3, 8)],
        {("tidegate.tasks", 0): Head(head.seq, head.hash, head.kafka_offset)},
        set(),
        NOW,
        {("tidegate.tasks", 0): held},
    )
    assert again.already_recorded == 2
    assert again.conflicts == []
    assert [(r.seq, r.kafka_offset) for r in again.rows] == [(6, 5), (7, 6), (8, 7)]
    assert again.rows[0].prev_hash == head.hash


def test_a_second_copy_of_an_event_is_kept_but_flagged_duplicate(make: Any) -> None:
    event = sample_events()[0][1]
    raw = s.encode(event)
    result = chain_batch([make("tasks", raw, offset=0), make("tasks", raw, offset=1)], {}, set(), NOW)
    assert [r.duplicate for r in result.rows] == [False, True]
    later = chain_batch([make("tasks", raw, partition=3, offset=0)], {}, {event.id}, NOW)
    assert later.rows[0].duplicate
    assert later.duplicates == 1
    # Invalid records never count as copies of an event, even if they carry its id.
    forged = chain_batch([make("actions.proposed", raw, offset=0)], {}, set(), NOW)
    assert not forged.rows[0].valid
    assert not forged.rows[0].duplicate


def test_the_database_tuple_follows_the_column_order(make: Any) -> None:
    import json

    from services.audit._pg_rows import db_tuple as _db_tuple
    from services.audit.rows import COLUMNS

    obs = make("tasks", s.encode(sample_events()[0][1]), headers=[("a", b"b"), ("traceparent", "é".encode())])
    row = chain_batch([obs], {}, set(), NOW).rows[0]
    at = COLUMNS.index("headers")
    for written in (_db_tuple(row), _db_tuple(row, obs.headers_json)):  # headers as JSON text, made here or by `observe`
        assert written[:at] + written[at + 1 :] == row.as_tuple()[:at] + row.as_tuple()[at + 1 :]
        assert json.loads(written[at]) == row.headers
