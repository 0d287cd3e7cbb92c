"""A record on a topic no service reads that is not a valid event is counted, said and findable (oncall22 F1).

The services dead-letter what they refuse on the topics they consume (`tidegate_dead_letters_total`, TidegateDeadLetters).
The dead-letter topic itself, task outcomes and the checkpoints are read by the audit alone: before, a record there that is
not JSON, not the contract or not signed (written with a service's Kafka login, which may write the dead-letter topic) was
kept in the log and nothing else: no count, no line, no alert, and no search that lists it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import schemas as s
from servicekit import REPO_ROOT, KitSettings, deployment_authority, service_key
from servicekit.metrics import AUDIT_INVALID_RECORDS
from services.audit._log_base import SearchFilters
from services.audit.handlers import Recorder
from services.audit.records import invalid_code
from services.audit.repository import InMemoryAuditLog

PREFIX = "tidegate."


class Record:
    """What aiokafka hands the audit: one record as the broker appended it (LogAppendTime)."""

    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = PREFIX + topic, 3, offset, value
        self.timestamp, self.timestamp_type, self.key, self.headers = 1_790_000_000_000 + offset, 1, b"junk", ()


def count(topic: str, reason: str, dead_lettered: str) -> float:
    labels = {"topic": PREFIX + topic, "reason": reason, "dead_lettered": dead_lettered}
    return REGISTRY.get_sample_value("tidegate_audit_invalid_records_total", labels) or 0.0


def unsigned_dead_letter() -> bytes:
    """A well-formed dead letter that says the policy crashed on a proposal, signed by no one (a leaked login's forgery)."""
    data = s.EventRejectedData(
        tenant_id="acme", topic="tidegate.actions.proposed", partition=3, offset=5, raw_value="{}", code="handler_error",
        error="policy crashed", service="policy",
    )  # fmt: skip
    return s.encode(s.EventRejected.build(data, source="tidegate/policy"))


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    (tmp_path / "keys").mkdir()
    kit = KitSettings(keys_dir=tmp_path / "keys")
    service_key(kit, "policy")  # the deployment has a policy key: an unsigned event of it does not verify
    return Recorder(prefix=PREFIX, log=InMemoryAuditLog(), authority=deployment_authority(kit, history=True))


async def test_garbage_and_a_forgery_on_the_dead_letter_topic_are_counted_said_and_found(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    before = (count("deadletter", "invalid_json", "false"), count("deadletter", "signature_missing", "false"))
    caplog.set_level(logging.WARNING, logger="services.audit.handlers")
    await recorder.record_batch([Record("deadletter", 0, b"garbage from planner"), Record("deadletter", 1, unsigned_dead_letter())])

    # the page: counted where no consumer dead-letters it
    assert count("deadletter", "invalid_json", "false") - before[0] == 1
    assert count("deadletter", "signature_missing", "false") - before[1] == 1
    # the log line: where it is, what it is not, and how to list it
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 2
    assert "tidegate.deadletter[3]@0 is not a valid event (not JSON" in said[0]
    assert "no service reads that topic" in said[0]
    assert "tidegate audit search --invalid" in said[0]
    assert "tidegate.deadletter[3]@1 is not a valid event (signature_missing" in said[1]

    # the on-call's search finds both, and only them
    assert isinstance(recorder.log, InMemoryAuditLog)
    found = await recorder.log.search(SearchFilters(valid=False, topic_prefix=PREFIX))
    assert [(r.topic, r.kafka_offset) for r in found] == [("tidegate.deadletter", 0), ("tidegate.deadletter", 1)]


async def test_junk_on_a_topic_a_service_reads_is_counted_as_dead_lettered_and_not_said_twice(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent's junk proposal: the policy dead-letters it (its own count and line); the audit counts it, quietly."""
    before = count("actions.proposed", "invalid_json", "true")
    caplog.set_level(logging.WARNING, logger="services.audit.handlers")
    await recorder.record_batch([Record("actions.proposed", 7, b"not json at all")])
    assert count("actions.proposed", "invalid_json", "true") - before == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def total() -> float:
    return sum(x.value for m in AUDIT_INVALID_RECORDS.collect() for x in m.samples if x.name.endswith("_total"))


async def test_a_valid_record_is_not_counted(recorder: Recorder) -> None:
    before = total()
    recorder.authority = None  # no keys: the contract alone
    data = s.EventRejectedData(
        topic="tidegate.tasks", partition=0, offset=1, raw_value="x", code="invalid_event", error="e", service="planner"
    )
    await recorder.record_batch([Record("deadletter", 0, s.encode(s.EventRejected.build(data, source="tidegate/planner")))])
    assert [r.valid for r in recorder.log.rows] == [True]  # type: ignore[attr-defined]
    assert total() == before


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("not JSON: Expecting value: line 1 column 1 (char 0)", "invalid_json"),
        ("invalid event: (event): Value error, missing required attribute(s): id", "invalid_event"),
        ("no value (tombstone)", "tombstone"),
        ("signature_invalid: the signature does not verify", "signature_invalid"),
        ("too_deep: nested deeper than 64", "too_deep"),
        ("made-up: anything an attacker writes", "other"),
        (None, "other"),
    ],
)
def test_the_reason_label_is_a_bounded_code(reason: str | None, code: str) -> None:
    assert invalid_code(reason) == code


def test_the_rule_pages_on_what_no_service_dead_lettered_and_its_runbook_is_there() -> None:
    rules = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    [rule] = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "TidegateInvalidRecords"]
    assert 'tidegate_audit_invalid_records_total{dead_lettered="false"}' in rule["expr"]
    assert rule["labels"]["severity"] == "page"
    anchor = rule["annotations"]["runbook"].split("#")[1]
    assert f'<a id="{anchor}"></a>' in (REPO_ROOT / "docs" / "observability.md").read_text()
