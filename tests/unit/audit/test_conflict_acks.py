"""A recorded conflict an operator acknowledged is shown by `verify`, not a break; only an allow-listed operator's signature counts.

The audit's own database login can insert rows (and false conflicts); it holds no operator's key. An acknowledgement
signed by any other key (the audit service's own, one made up), changed after it was signed, naming the conflict
otherwise than recorded, or by an operator whose key was taken away, does not count: the conflict stays a break.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

from servicekit import Authority, Keyring, KitSettings, SigningKey, deployment_authority, operator_key, service_key
from servicekit.signing import retire
from services.audit.acknowledgements import Acknowledgement, ack_message, acknowledge, conflict_id, refusal
from services.audit.chain import RecordedConflict
from services.audit.conflicts import acknowledge_conflict, list_conflicts
from services.audit.handlers import Recorder
from services.audit.repository import InMemoryAuditLog
from services.audit.rows import LogRow, Observed
from services.audit.verify import verify_log

TOPIC = "tidegate.actions.results"
AT = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()
    return KitSettings(keys_dir=tmp_path / "keys")


def forged_row(log: InMemoryAuditLog, genuine: Observed, value: bytes) -> None:
    """What the audit's database login can do: append a correctly chained row of its own content at the next offset."""
    head = max((r for r in log.rows if (r.topic, r.partition) == (genuine.topic, genuine.partition)), key=lambda r: r.seq)
    log.rows.append(
        LogRow.link(genuine._replace(value=value, headers_json=None), seq=head.seq + 1, prev_hash=head.hash, duplicate=False,
                    recorded_at=genuine.kafka_ts)
    )  # fmt: skip


async def conflicted(make: Any, offset: int = 1, log: InMemoryAuditLog | None = None) -> tuple[InMemoryAuditLog, RecordedConflict]:
    """A log whose row at `offset` the login forged, and the conflict the genuine record there made."""
    log = log or InMemoryAuditLog()
    if not log.rows:
        await log.append([make("actions.results", b"r0", offset=0)])
    genuine = make("actions.results", b'{"genuine": %d}' % offset, offset=offset)
    forged_row(log, genuine, b'{"forged": true}')
    await log.append([genuine])
    [conflict] = [c for c in await log.conflicts() if c.kafka_offset == offset]
    return log, conflict


async def verify(log: InMemoryAuditLog, kit: KitSettings, *, operators: bool = True) -> Any:
    authority = deployment_authority(kit) if operators else None
    return await verify_log(log, Keyring.load(kit.keys_dir, "audit"), prefix="tidegate.", operators=authority)


async def test_an_operators_acknowledgement_makes_the_conflict_shown_not_a_break_and_a_new_one_still_breaks(
    make: Any, kit: KitSettings
) -> None:
    log, conflict = await conflicted(make)
    before = await verify(log, kit)
    assert not before.ok
    assert "conflict recorded" in before.breaks[0].problem

    log.stored_acks.append(acknowledge(operator_key(kit), conflict, "restore drill 2026-12-05, INC-42", AT))
    after = await verify(log, kit)
    assert after.ok, [b.describe() for b in after.breaks]
    assert after.conflicts == 1
    [shown] = after.acknowledged
    assert (shown.topic, shown.offset, shown.seq, shown.acknowledged_by) == (TOPIC, 1, 2, kit.operator)
    assert shown.reason == "restore drill 2026-12-05, INC-42"
    assert f"conflict {conflict.record_sha256.hex()[:16]} acknowledged by {kit.operator}" in shown.describe()

    await conflicted(make, offset=3, log=log)
    again = await verify(log, kit)
    assert (again.conflicts, len(again.acknowledged)) == (2, 1)
    [brk] = again.breaks
    assert (brk.offset, brk.seq) == (3, 3)
    assert "conflict recorded" in brk.problem


async def test_without_an_operator_allow_list_no_acknowledgement_counts(make: Any, kit: KitSettings) -> None:
    log, conflict = await conflicted(make)
    log.stored_acks.append(acknowledge(operator_key(kit), conflict, "known", AT))
    report = await verify(log, kit, operators=False)
    assert not report.ok
    assert report.acknowledged == []


def _by_the_audits_own_key(kit: KitSettings, conflict: RecordedConflict) -> Acknowledgement:
    """The audit service's signing key is on the audit host, with its login: signed with it, under the operator's name."""
    audit = service_key(kit, "audit")
    return acknowledge(SigningKey(kit.operator, audit.private), conflict, "nothing to see", AT)


def _made_up_key(kit: KitSettings, conflict: RecordedConflict) -> Acknowledgement:
    return acknowledge(SigningKey.load_or_create(kit.keys_dir / "elsewhere", kit.operator), conflict, "nothing to see", AT)


def _reason_changed(kit: KitSettings, conflict: RecordedConflict) -> Acknowledgement:
    return dataclasses.replace(acknowledge(operator_key(kit), conflict, "drill", AT), reason="drill, and the rest too")


def _other_row(kit: KitSettings, conflict: RecordedConflict) -> Acknowledgement:
    """A genuine acknowledgement of the conflict as it was shown, the stored conflict since naming another row."""
    return acknowledge(operator_key(kit), dataclasses.replace(conflict, logged_seq=7), "drill", AT)


def _no_signature(kit: KitSettings, conflict: RecordedConflict) -> Acknowledgement:
    return dataclasses.replace(acknowledge(operator_key(kit), conflict, "drill", AT), signature="")


@pytest.mark.parametrize(
    ("forge", "why"),
    [
        (_by_the_audits_own_key, "which is no operator's key on the allow-list"),
        (_made_up_key, "which is no operator's key on the allow-list"),
        (_reason_changed, "does not verify: forged, or changed after it was signed"),
        (_no_signature, "does not verify"),
        (_other_row, "names the logged row seq 7"),
    ],
)
async def test_an_acknowledgement_no_allow_listed_operator_signed_does_not_count(make: Any, kit: KitSettings, forge: Any, why: str) -> None:
    log, conflict = await conflicted(make)
    operator_key(kit)  # the operator exists, on the allow-list
    log.stored_acks.append(forge(kit, conflict))
    report = await verify(log, kit)
    assert not report.ok
    assert report.acknowledged == []
    [brk] = report.breaks
    assert "conflict recorded" in brk.problem
    assert "an acknowledgement is stored but does not count" in brk.problem
    assert why in brk.problem


async def test_an_acknowledgement_by_an_operator_whose_key_was_taken_away_no_longer_counts(make: Any, kit: KitSettings) -> None:
    log, conflict = await conflicted(make)
    log.stored_acks.append(acknowledge(operator_key(kit), conflict, "drill", AT))
    assert (await verify(log, kit)).ok
    retire(kit.operator_keys_dir, kit.operator, now=AT, grace=False)  # `tidegate keys deny-operator`
    report = await verify(log, kit)
    assert not report.ok
    assert "whose key was taken away" in report.breaks[0].problem


async def test_an_acknowledgement_of_a_conflict_the_log_no_longer_holds_is_a_break(make: Any, kit: KitSettings) -> None:
    log, conflict = await conflicted(make)
    log.stored_acks.append(acknowledge(operator_key(kit), conflict, "drill", AT))
    log.stored_conflicts.clear()  # what only a superuser past the trigger can do
    report = await verify(log, kit)
    [brk] = report.breaks
    assert f"names conflict {conflict.record_sha256.hex()[:16]}, which audit.conflicts does not hold" in brk.problem


async def test_acknowledge_conflict_finds_it_by_id_signs_it_once_and_refuses_what_would_not_count(make: Any, kit: KitSettings) -> None:
    log, conflict = await conflicted(make)
    operators = deployment_authority(kit)
    ident = conflict.record_sha256.hex()[:16]
    with pytest.raises(LookupError, match="no conflict"):
        await acknowledge_conflict(log, operator_key(kit), "0" * 16, "drill", operators, at=AT)
    with pytest.raises(LookupError, match="not a conflict id"):
        await acknowledge_conflict(log, operator_key(kit), "offset 1", "drill", operators, at=AT)
    with pytest.raises(ValueError, match="reason"):
        await acknowledge_conflict(log, operator_key(kit), ident, "  ", operators, at=AT)
    stranger = SigningKey.load_or_create(kit.keys_dir / "elsewhere", "mallory")
    with pytest.raises(ValueError, match="nothing stored: verify would not count"):
        await acknowledge_conflict(log, stranger, ident, "drill", operators, at=AT)
    assert log.stored_acks == []
    [open_] = await list_conflicts(log, operators, "tidegate.")
    assert (open_.conflict_id, open_.acknowledged, open_.offset, open_.logged_seq) == (ident, False, 1, 2)

    state, written = await acknowledge_conflict(log, operator_key(kit), ident.upper(), " INC-42 ", operators, prefix="tidegate.", at=AT)
    assert (written, state.acknowledged_by, state.reason) == (True, kit.operator, "INC-42")
    state, written = await acknowledge_conflict(log, operator_key(kit), ident, "again", operators, at=AT)
    assert (written, state.reason, len(log.stored_acks)) == (False, "INC-42", 1)
    [listed] = await list_conflicts(log, operators, "tidegate.")
    assert (listed.acknowledged, listed.acknowledged_at) == (True, AT)


async def test_two_conflicts_sharing_the_id_given_are_named_not_guessed(make: Any, kit: KitSettings) -> None:
    log, first = await conflicted(make)
    log, second = await conflicted(make, offset=3, log=log)
    assert first.record_sha256 != second.record_sha256
    # Two digests that share their first 8 hex digits (made so: 1 in 4 billion by chance).
    log.stored_conflicts = {k: dataclasses.replace(c, record_sha256=bytes.fromhex("ab" * 4) + c.record_sha256[4:])
                            for k, c in log.stored_conflicts.items()}  # fmt: skip
    with pytest.raises(LookupError, match="names 2 conflicts"):
        await acknowledge_conflict(log, operator_key(kit), "abababab", "drill", deployment_authority(kit), at=AT)


async def test_the_recorder_does_not_alert_again_on_a_redelivered_conflict_an_operator_acknowledged(
    make: Any, kit: KitSettings, caplog: pytest.LogCaptureFixture
) -> None:
    log, conflict = await conflicted(make)
    _, other = await conflicted(make, offset=3, log=log)
    log.stored_acks.append(acknowledge(operator_key(kit), conflict, "drill", AT))
    recorder = Recorder(prefix="tidegate.", log=log, authority=deployment_authority(kit))
    before = REGISTRY.get_sample_value("tidegate_audit_conflicts_total", {"topic": TOPIC}) or 0.0

    class Record:
        topic, partition, timestamp_type, key, headers = TOPIC, 0, 0, None, ()

        def __init__(self, offset: int) -> None:
            self.offset, self.timestamp, self.value = offset, 1_790_000_000_000 + offset, b'{"genuine": %d}' % offset

    with caplog.at_level(logging.WARNING, logger="services.audit.handlers"):
        result = await recorder.record_batch([Record(1), Record(3)])  # type: ignore[list-item]  # a redelivery of both
    assert len(result.conflicts) == 2  # both are still conflicts, and stay recorded
    assert recorder.conflicts == 1  # only the one no operator acknowledged is counted and alerted on
    assert REGISTRY.get_sample_value("tidegate_audit_conflicts_total", {"topic": TOPIC}) == before + 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"{TOPIC}[0] offset 3" in errors[0]
    assert any("an operator acknowledged it: not alerted" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert other.kafka_offset == 3


# Made by the code before the acknowledgement was sealed with `servicekit.row_proofs` (its own `ack_message` and
# `verifies`), with a fixed operator key: stored acknowledgements like these must still count after the upgrade.
OPS = SigningKey("ops", Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"ops-seed").digest()))
STORED = RecordedConflict(
    TOPIC, 0, 1, 2, ["value", "headers"], hashlib.sha256(b"genuine").digest(), datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
)
STORED_AT = datetime(2026, 12, 5, 9, 30, 15, 123456, tzinfo=UTC)
OLD_ACK = ("ops-3c39293a7d29", "_cWJGZqw9AQxPv3YfE25I_extNECK6mpGBQ2rwWgqM-vvQvcSqHy3FW12q3CGNXgrELcnKyZnD2ft1a_OBpbDw")
OLD_BYTES = (
    b'tidegate/audit-conflict-ack/v1\n{"acked_at":"2026-12-05T09:30:15.123456+00:00","acked_by":"ops","differs":["value","headers"],'
    b'"kafka_offset":1,"key_id":"ops-3c39293a7d29","logged_seq":2,"partition":0,"reason":"INC-42: restore drill",'
    b'"record_sha256":"dfec22473777f0ddaea98d74045c22ae9029a8e3b75aa8fcce941aa29e5b073b","topic":"tidegate.actions.results"}'
)


def _allow_listed(tmp_path: Path, key: SigningKey) -> Authority:
    operators = tmp_path / "keys" / "operators"
    operators.mkdir(parents=True, exist_ok=True)
    public = key.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (operators / f"{key.name}.pub").write_bytes(public)
    return Authority(tmp_path / "keys", operators, tmp_path / "keys" / "clients", recheck_s=0.0)


def test_an_acknowledgement_the_former_code_stored_still_counts_and_the_seal_signs_the_same_bytes(tmp_path: Path) -> None:
    operators = _allow_listed(tmp_path, OPS)
    stored = Acknowledgement(
        TOPIC, 0, 1, STORED.record_sha256, 2, ("value", "headers"), "INC-42: restore drill", "ops", STORED_AT, *OLD_ACK
    )
    assert refusal(stored, operators) is None
    assert ack_message(stored) == OLD_BYTES
    made = acknowledge(OPS, STORED, "INC-42: restore drill", STORED_AT.astimezone(UTC))
    assert made == stored
    assert refusal(dataclasses.replace(stored, reason="INC-42: restore drill, and more"), operators) is not None


async def test_an_acknowledgement_by_an_operator_who_rotated_their_key_still_counts(make: Any, kit: KitSettings) -> None:
    log, conflict = await conflicted(make)
    log.stored_acks.append(acknowledge(operator_key(kit), conflict, "drill", AT))
    retire(kit.operator_keys_dir, kit.operator, now=AT)  # `tidegate keys rotate operator`: the old key is kept, with grace
    assert (await verify(log, kit)).ok


def test_an_acknowledgement_signed_by_another_operator_under_this_ones_name_does_not_count(tmp_path: Path) -> None:
    """An operator on the allow-list may acknowledge as themselves, not as a colleague: the key must be the named operator's."""
    operators = _allow_listed(tmp_path, OPS)
    mallory = SigningKey("mallory", Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"mallory-seed").digest()))
    _allow_listed(tmp_path, mallory)
    as_ops = dataclasses.replace(acknowledge(mallory, STORED, "drill", AT), acked_by="ops")
    forged = acknowledge(SigningKey("ops", mallory.private), STORED, "drill", AT)  # mallory's key, named as ops'
    assert refusal(as_ops, operators) is not None
    assert "which is no operator's key on the allow-list" in (refusal(forged, operators) or "")
    assert refusal(acknowledge(mallory, STORED, "drill", AT), operators) is None


def test_the_conflicts_metric_says_an_acknowledged_conflicts_redelivery_is_not_counted_again() -> None:
    [help_text] = [m.documentation for m in REGISTRY.collect() if m.name == "tidegate_audit_conflicts"]
    assert "a redelivery of a conflict an operator acknowledged is not counted again" in help_text


def decoy(log: InMemoryAuditLog, genuine: RecordedConflict, offset: int, *, forged: bool) -> RecordedConflict:
    """What the audit's login can insert: a conflict row carrying `genuine`'s digest at another offset.

    A copy of the genuine row's record (consistent: its digest is its record's), or a record of its own (`forged`: the
    digest is not its record's, as `PgConflicts` re-derives it when read).
    """
    row = dataclasses.replace(
        genuine, kafka_offset=offset, logged_seq=None, differs=[], stored_sha256=hashlib.sha256(b"decoy").digest() if forged else None
    )
    log.stored_conflicts[(row.topic, row.partition, offset, row.record_sha256)] = row
    return row


async def test_a_decoy_carrying_a_conflicts_digest_cannot_block_its_acknowledgement(make: Any, kit: KitSettings) -> None:
    """Finding F4: the id (even all 64 hex digits) named the genuine conflict and the decoy, so `ack` refused both for good."""
    log, conflict = await conflicted(make)
    decoy(log, conflict, 999_999, forged=False)
    operators = deployment_authority(kit)
    for ident in (conflict.record_sha256.hex()[:16], conflict.record_sha256.hex()):
        with pytest.raises(LookupError, match="names 2 conflicts; pick one") as refused:
            await acknowledge_conflict(log, operator_key(kit), ident, "INC-44", operators, at=AT)
        assert f"ack --at {TOPIC}[0]@1" in str(refused.value)
        assert f"ack --at {TOPIC}[0]@999999" in str(refused.value)
    assert log.stored_acks == []

    state, written = await acknowledge_conflict(
        log, operator_key(kit), conflict.record_sha256.hex()[:16], "INC-44", operators, at=AT, where=f"{TOPIC}[0]@1"
    )
    assert (written, state.offset, state.at, state.acknowledged_by) == (True, 1, f"{TOPIC}[0]@1", kit.operator)
    report = await verify(log, kit)
    [shown] = report.acknowledged
    assert (shown.offset, shown.forged) == (1, False)
    [brk] = report.breaks  # the decoy is a conflict of its own, still open
    assert brk.offset == 999_999

    # The acknowledgement signs the position: moved to the decoy (a login that may write acks, stolen), it does not count.
    log.stored_acks.append(dataclasses.replace(log.stored_acks[0], kafka_offset=999_999, logged_seq=None, differs=()))
    [brk] = (await verify(log, kit)).breaks
    assert brk.offset == 999_999
    assert "does not verify: forged, or changed after it was signed" in brk.problem

    # By position alone (the topic as listed, or without the deployment's prefix), the decoy is acknowledged too.
    state, written = await acknowledge_conflict(log, operator_key(kit), None, "INC-44: the decoy", operators, prefix="tidegate.", at=AT,
                                                where="actions.results[0]@999999")  # fmt: skip
    assert (written, state.offset) == (True, 999_999)
    assert (await verify(log, kit)).ok


async def test_a_conflict_row_whose_digest_is_not_its_records_is_shown_as_forged_and_acknowledged_by_position(
    make: Any, kit: KitSettings
) -> None:
    log, conflict = await conflicted(make)
    forged = decoy(log, conflict, 999_999, forged=True)
    operators = deployment_authority(kit)
    states = {s.offset: s for s in await list_conflicts(log, operators, "tidegate.")}
    assert (states[1].forged, states[999_999].forged) == (False, True)
    assert states[999_999].problem.startswith("forged conflict row: its record_sha256")
    assert f"tidegate audit conflicts ack --at {TOPIC}[0]@999999" in states[999_999].problem
    assert not states[1].problem.startswith("forged")
    report = await verify(log, kit)
    forged_break = next(b for b in report.breaks if b.offset == 999_999)
    assert "forged conflict row" in forged_break.problem
    assert "the audit service did not write it" in forged_break.problem
    with pytest.raises(LookupError, match=r"\(forged conflict row\): ack --at"):
        await acknowledge_conflict(log, operator_key(kit), conflict_id(forged), "x", operators, at=AT)

    for where in (f"{TOPIC}[0]@1", f"{TOPIC}[0]@999999"):
        await acknowledge_conflict(log, operator_key(kit), None, "INC-45", operators, at=AT, where=where)
    report = await verify(log, kit)
    assert report.ok, [b.describe() for b in report.breaks]
    assert {(a.offset, a.forged) for a in report.acknowledged} == {(1, False), (999_999, True)}
    assert "forged conflict row" in next(a for a in report.acknowledged if a.forged).describe()


async def test_a_position_names_one_conflict_or_says_why_not(make: Any, kit: KitSettings) -> None:
    log, conflict = await conflicted(make)
    operators = deployment_authority(kit)
    with pytest.raises(LookupError, match="name the conflict"):
        await acknowledge_conflict(log, operator_key(kit), None, "x", operators, at=AT)
    for bad in ("actions.results@1", "actions.results[0]", "a b[0]@1", "actions.results[-1]@1"):
        with pytest.raises(LookupError, match="is not a position"):
            await acknowledge_conflict(log, operator_key(kit), None, "x", operators, at=AT, where=bad)
    with pytest.raises(LookupError, match="no conflict"):
        await acknowledge_conflict(log, operator_key(kit), None, "x", operators, at=AT, where=f"{TOPIC}[0]@2")
    with pytest.raises(LookupError, match="no conflict"):  # the id and the position must name the same conflict
        await acknowledge_conflict(log, operator_key(kit), "0" * 16, "x", operators, at=AT, where=f"{TOPIC}[0]@1")
    # Two conflict rows at one position (the genuine record and another the login inserted there): the id picks, as told.
    other = dataclasses.replace(conflict, record_sha256=hashlib.sha256(b"other").digest())
    log.stored_conflicts[(TOPIC, 0, 1, other.record_sha256)] = other
    with pytest.raises(LookupError, match="names 2 conflicts") as refused:
        await acknowledge_conflict(log, operator_key(kit), None, "x", operators, at=AT, where=f"{TOPIC}[0]@1")
    assert f"ack {conflict.record_sha256.hex()} --at {TOPIC}[0]@1" in str(refused.value)
    full = conflict.record_sha256.hex()
    state, _ = await acknowledge_conflict(log, operator_key(kit), full, "x", operators, at=AT, where=f"{TOPIC}[0]@1")
    assert state.record_sha256 == conflict.record_sha256.hex()
