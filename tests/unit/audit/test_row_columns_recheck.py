"""`verify --signatures` reads every row again from its own value: columns a superuser rewrote are named (auditor1 F2).

A superuser who re-chains a partition (and signs it anew, checkpoints stalled) can give a genuine approval another
task, record it as refused, or flag it a duplicate: its hash holds, the bus's copy of its value is the same, and the
readers trust those columns (`explain` skips a duplicate and lists a refused row as a dead letter). The recheck
observes the row's value and headers again, as the audit service did, and names whatever its columns say otherwise.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

import schemas as s
from schemas.examples import sample_events
from servicekit import KitSettings, deployment_authority, service_key, sign_event
from servicekit.authority import LOG_APPEND_TIME
from services.audit.records import DEFAULT_BOUNDS, observe
from services.audit.rows import LogRow
from services.audit.signature_check import DuplicateCheck, signature_recheck

PREFIX = "tidegate."
TRACEPARENT = b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()
    return KitSettings(keys_dir=tmp_path / "keys")


def granted_row(kit: KitSettings, *, seq: int = 1, duplicate: bool = False) -> LogRow:
    """bob's grant as the audit service stored it: signed by the approval service, observed, linked."""
    event = dict(sample_events())["approvals"]
    data = s.ApprovalData.model_validate(event.data.model_dump() | {"approver": "bob@acme.example"})
    grant = s.ApprovalGranted.build(data, source="tidegate/approval")
    signed = sign_event(grant, service_key(kit, "approval"))
    obs = observe(
        topic=PREFIX + "approvals", partition=0, offset=seq - 1, timestamp_ms=int(datetime.now(UTC).timestamp() * 1000),
        timestamp_type=LOG_APPEND_TIME, key=signed.key, value=s.encode(signed), headers=[("traceparent", TRACEPARENT)],
        prefix=PREFIX, check=deployment_authority(kit, history=True).check,
    )  # fmt: skip
    assert obs.valid, obs.invalid_reason
    return LogRow.link(obs, seq=seq, prev_hash=b"\0" * 32, duplicate=duplicate, recorded_at=datetime.now(UTC))


def test_a_genuine_row_holds_and_one_whose_columns_were_rewritten_is_named(kit: KitSettings) -> None:
    recheck = signature_recheck(deployment_authority(kit, history=True).check, PREFIX, DEFAULT_BOUNDS)
    genuine = granted_row(kit)
    assert recheck(genuine) is None

    moved = recheck(genuine._replace(task_id="t-elsewhere", tenant_id="globex"))
    assert moved is not None
    assert "tenant_id 'globex', its value says 'acme'" in moved
    assert "task_id 't-elsewhere'" in moved

    refused = recheck(genuine._replace(valid=False, invalid_reason="signature_invalid: signature of approval.granted does not verify"))
    assert refused is not None
    assert refused.startswith("stored as refused (signature_invalid")
    # A key unknown when the row was written may be registered since: a refusal for it is not named.
    assert recheck(genuine._replace(valid=False, invalid_reason="unknown_key: key 'approval-1' is not trusted")) is None


def test_a_flagged_duplicate_of_nothing_is_named_unless_the_log_was_pruned(kit: KitSettings) -> None:
    genuine = granted_row(kit)
    honest = DuplicateCheck()
    for row in (genuine, granted_row(kit, seq=2, duplicate=True)._replace(event_id=genuine.event_id)):  # a redelivered copy
        honest.feed(row)
    assert honest.problems(pruned=False) == []

    hidden = DuplicateCheck()
    hidden.feed(genuine._replace(duplicate=True))  # its only copy flagged: `explain` would skip bob's grant
    [(row, why)] = hidden.problems(pruned=False)
    assert row.seq == 1
    assert "no other valid row holds that event" in why
    assert hidden.problems(pruned=True) == []  # the unflagged row may be in an archive


def test_a_row_signed_by_a_key_this_machine_lacks_is_said_so_not_called_forged(kit: KitSettings, tmp_path: Path) -> None:
    elsewhere = KitSettings(keys_dir=tmp_path / "auditors-laptop")  # an auditor's machine without the deployment's keys
    (tmp_path / "auditors-laptop").mkdir()
    recheck = signature_recheck(deployment_authority(elsewhere, history=True).check, PREFIX, DEFAULT_BOUNDS)
    said = recheck(granted_row(kit))
    assert said is not None
    assert "signed by a key this machine's keyring does not hold" in said
    assert "TIDEGATE_KEYS_DIR" in said


def test_a_refusal_for_a_key_unknown_then_holds_only_if_the_key_was_put_on_file_after_the_record(kit: KitSettings) -> None:
    authority = deployment_authority(kit, history=True)
    genuine = granted_row(kit)
    refused = genuine._replace(valid=False, invalid_reason="unknown_key: key 'approval-1' is not trusted")
    arrived = genuine.kafka_ts.timestamp()

    def recheck(put: float | None) -> str | None:
        return signature_recheck(authority.check, PREFIX, DEFAULT_BOUNDS, added_at=lambda keyid: put)(refused)

    assert recheck(arrived + 3600) is None  # registered an hour after the record: it was unknown then, as stored
    said = recheck(arrived - 3600)
    assert said is not None  # on file an hour before: the DBA's reason (auditor2 N1)
    assert "was on file since" in said
    assert recheck(None) is None  # nothing known of when it was put there: the stored reason stands
    assert authority.added_at(json.loads(genuine.value or b"{}")["keyid"]) is not None  # the approval key's file, read
