"""What the audit keeps of a Kafka record: raw bytes always, event fields when they parse."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import schemas as s
from schemas.examples import sample_events
from services.audit.rows import COLUMNS, GENESIS, LogRow, content_bytes, headers_json, reference_content_bytes


def test_every_sample_event_is_valid_on_its_topic_with_its_fields_extracted(make: Any) -> None:
    samples = sample_events()
    sample_records = [make(topic, s.encode(event), key=event.key) for topic, event in samples]
    for (topic, event), obs in zip(samples, sample_records, strict=True):
        assert obs.valid, (topic, obs.invalid_reason)
        assert obs.event_id == event.id
        assert obs.event_type == event.type
        assert obs.tenant_id == event.tenantid
        assert obs.value == s.encode(event)
    decided = next(o for o in sample_records if o.event_type == "tidegate.action.decided")
    assert (decided.task_id, decided.action_id, decided.tool, decided.outcome, decided.reasons) == (
        "t-1",
        "a-1",
        "tag_ticket",
        "deny",
        ["no_permit"],
    )
    granted = next(o for o in sample_records if o.event_type == "tidegate.approval.granted")
    assert granted.outcome == "granted"


def test_a_record_that_is_not_an_event_is_kept_raw_with_the_reason(make: Any) -> None:
    garbage = make("tasks", b"\xff\xfenot json", key=b"t-9", headers=[("x-bin", b"\xff\x00"), ("ok", b"yes"), ("none", None)])
    assert not garbage.valid
    assert garbage.invalid_reason.startswith("not JSON")
    assert garbage.value == b"\xff\xfenot json"
    assert garbage.headers == [{"k": "x-bin", "b64": "/wA="}, {"k": "ok", "v": "yes"}, {"k": "none"}]
    wrong_topic = make("tasks", s.encode(sample_events()[1][1]))  # an action.proposed on `tasks`
    assert not wrong_topic.valid
    assert wrong_topic.event_type == "tidegate.action.proposed"
    assert make("control", None).invalid_reason == "no value (tombstone)"


def test_text_postgres_cannot_store_is_cleaned_but_the_raw_value_is_untouched(make: Any) -> None:
    raw = json.dumps({"id": "a\u0000b", "subject": "\ud800x", "tenantid": 7}).encode()
    obs = make("tasks", raw)
    assert obs.event_id == "a\ufffdb"
    assert obs.task_id is not None
    assert "\ud800" not in obs.task_id
    assert obs.tenant_id is None
    assert obs.value == raw


def test_unknown_topics_accept_any_tidegate_event(make: Any) -> None:
    event = sample_events()[0][1]
    assert make("some.new.topic", s.encode(event)).valid


def test_every_column_is_in_the_hash_and_null_differs_from_empty(sample_records: list[Any]) -> None:
    row = LogRow.link(sample_records[0], seq=1, prev_hash=GENESIS, duplicate=False, recorded_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert row.expected_hash() == row.hash
    changes = {
        "topic": "x", "partition": 9, "kafka_offset": 99, "seq": 2, "kafka_ts": datetime(2020, 1, 1, tzinfo=UTC), "ts_type": 1,
        "key": b"other", "headers": [], "value": b"{}", "valid": False, "invalid_reason": "r", "event_id": "e", "event_type": "t",
        "tenant_id": "z", "task_id": "q", "action_id": "a", "tool": "t", "outcome": "o", "reasons": ["x"], "trace_id": "0" * 32,
        "traceparent": "p", "event_time": datetime(2020, 1, 1, tzinfo=UTC), "duplicate": True,
        "recorded_at": datetime(2020, 1, 1, tzinfo=UTC), "prev_hash": b"\x01" * 32,
    }  # fmt: skip
    assert set(changes) == set(COLUMNS) - {"hash"}
    for column, value in changes.items():
        assert row._replace(**{column: value}).expected_hash() != row.hash, column
    assert reference_content_bytes([None]) != reference_content_bytes([""])
    assert reference_content_bytes(["ab", "c"]) != reference_content_bytes(["a", "bc"])


def test_the_fast_encoders_write_exactly_the_reference_bytes(make: Any) -> None:
    odd = make(
        "tasks",
        json.dumps({"id": 'é\u2028"x', "type": "t", "data": {"reasons": [{"code": "a\\b"}, {"code": "ü"}]}}).encode(),
        key=b"\x00k",
        headers=[("traceparent", "00-é".encode()), ("bin", b"\xff"), ("nul", None), ("", b"")],
    )
    records = [make(topic, s.encode(event), key=event.key) for topic, event in sample_events()] + [odd, make("control", None)]
    for obs in records:
        for recorded_at in (datetime(2026, 1, 1, tzinfo=UTC), datetime.now(UTC)):
            row = LogRow.link(obs, seq=3, prev_hash=GENESIS, duplicate=True, recorded_at=recorded_at)
            assert content_bytes(row.hashed_values()) == reference_content_bytes(row.hashed_values())
            assert row.hash == row.expected_hash()  # `link` hashes the record's bytes, made without the row's values
            assert obs.headers_json == headers_json(obs.headers)
            assert json.loads(obs.headers_json or "") == obs.headers
            assert LogRow.link(obs._replace(headers_json=None), seq=3, prev_hash=GENESIS, duplicate=True, recorded_at=recorded_at) == row


def test_the_parse_reads_every_value_as_json_loads_does() -> None:
    # What `observe` checks the signature of and reads the fields from: pydantic's parser where it reads the value, else json.loads.
    from services.audit.records import _parse

    odd = [b"NaN", b"[1e400, -Infinity]", b'"\\ud800"', b'{"\\ud800":1}', b'"\xed\xa0\x80"', b"-0", b"0.1e-310", b'{"a":1,"a":2}', b"\xff"]
    odd += ["é".encode("utf-16"), b"\xef\xbb\xbf{}", b"1 2", b'{"a":"\x01"}', b"[1,]", b"[-0.0, 1E2, 5e-324, 0.30000000000000004]"]
    odd += [b"123456789012345678901234567890", b"[1.00000000000000000000001, 9223372036854775808]", b"1" * 4300, b"9" * 4301]
    odd += [b"[" * 300 + b"]" * 300, b"+1", b"01", b".5", b"nan", b'"\\x41"', b"[1]\x00", b'"\\ud83d\\ude00"']
    for value in [*odd, *(s.encode(event) for _, event in sample_events())]:
        try:
            expected: Any = json.loads(value)
        except ValueError as exc:
            expected = repr(exc)
        try:
            got: Any = _parse(value)[0]
        except ValueError as exc:
            got = repr(exc)
        assert repr(got) == repr(expected), value
