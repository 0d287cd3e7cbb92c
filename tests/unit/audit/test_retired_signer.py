"""The audit's verdict on an event signed by a retired key: judged at the broker's append time, the same whenever it is read.

The live services refuse what a retired key signs once its grace has passed (`signer_retired`); the audit log
must not store such an event as valid. The time judged is the one the broker stamped on the record, stored with
the row (`kafka_ts`, `ts_type`): never the producer's timestamp or the audit's own clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import schemas as s
from schemas.examples import sample_events
from servicekit import KitSettings, SigningKey, deployment_authority, service_key, sign_as_operator, sign_event
from servicekit.authority import LOG_APPEND_TIME, Authority
from servicekit.signing import retire, rotate
from services.audit.records import observe
from services.audit.rows import Observed

PREFIX = "tidegate."
GRACE_S = 60.0
ROTATED_AT = datetime(2026, 12, 1, 4, 0, tzinfo=UTC).timestamp()
CREATE_TIME = 0  # a record stamped by its producer: its topic was not yet stamped by the broker
A_YEAR_S = 365 * 86_400


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()
    return KitSettings(keys_dir=tmp_path / "keys", retired_key_grace_s=GRACE_S)


@pytest.fixture
def stolen(kit: KitSettings) -> SigningKey:
    """The policy service's key, a copy of which the attacker kept, retired at `ROTATED_AT`."""
    key = service_key(kit, "policy")
    rotate(kit.keys_dir, "policy", now=datetime.fromtimestamp(ROTATED_AT, UTC))
    return SigningKey(key.name, key.private)  # the copy: it does not follow the key file to the next key


def history(kit: KitSettings, now: float) -> Authority:
    """The audit's authority (`history=True`), its wall clock at `now`: a reader of history must not consult it."""
    authority = deployment_authority(kit, history=True)
    authority.clock = lambda: now
    return authority


def decision() -> s.ActionDecided:
    event = dict(sample_events())["actions.decided"]
    assert isinstance(event, s.ActionDecided)
    return event


def recorded(
    authority: Authority, event: s.Envelope, *, at: float, timestamp_type: int = LOG_APPEND_TIME, topic: str = "actions.decided"
) -> Observed:
    """The row the audit makes of `event` on `topic`, its record stamped `at` (epoch seconds)."""
    return observe(
        topic=PREFIX + topic, partition=0, offset=7, timestamp_ms=int(at * 1000), timestamp_type=timestamp_type,
        key=event.key, value=s.encode(event), headers=[], prefix=PREFIX, check=authority.check,
    )  # fmt: skip


def test_an_event_the_broker_appended_after_the_grace_is_recorded_not_valid_as_signer_retired(kit: KitSettings, stolen: SigningKey) -> None:
    forged = sign_event(decision(), stolen)
    row = recorded(history(kit, now=ROTATED_AT + A_YEAR_S), forged, at=ROTATED_AT + GRACE_S + 1)
    assert not row.valid
    assert row.invalid_reason == f"signer_retired: key {stolen.key_id} was retired, and signs nothing new"
    assert row.event_id == forged.id  # recorded all the same, searchable by its id


def test_an_event_appended_within_the_grace_stays_valid_whenever_it_is_read(kit: KitSettings, stolen: SigningKey) -> None:
    in_flight = sign_event(decision(), stolen)
    for now in (ROTATED_AT + 1, ROTATED_AT + GRACE_S + 1, ROTATED_AT + A_YEAR_S):  # recorded at once, late, or a year on
        for at in (ROTATED_AT - 3600, ROTATED_AT + GRACE_S - 1):  # signed before the rotation, or in flight after it
            row = recorded(history(kit, now), in_flight, at=at)
            assert (row.valid, row.invalid_reason) == (True, None), (now, at)


def test_the_verdict_is_the_live_services_at_the_same_append_time(kit: KitSettings, stolen: SigningKey) -> None:
    """The audit agrees with what every live consumer did with the record: accepted it, or refused it `signer_retired`."""
    event = sign_event(decision(), stolen)
    live = deployment_authority(kit)
    live.clock = lambda: ROTATED_AT + A_YEAR_S  # a live consumer judges at the append time too, when the record carries one
    for at in (ROTATED_AT + GRACE_S - 1, ROTATED_AT + GRACE_S + 1):
        refusal = live.check(s.encode(event), event, appended_ms=int(at * 1000))
        row = recorded(history(kit, now=ROTATED_AT), event, at=at)
        assert row.valid == (refusal is None)
        assert row.invalid_reason == (None if refusal is None else f"{refusal.code}: {refusal.message}")


def test_a_producers_timestamp_is_never_judged(kit: KitSettings, stolen: SigningKey) -> None:
    """A record its topic held before the broker stamped it carries only the signer's own time: history keeps it as recorded then."""
    event = sign_event(decision(), stolen)
    for producer_says in (ROTATED_AT - 3600, ROTATED_AT + GRACE_S + 1):
        row = recorded(history(kit, now=ROTATED_AT + A_YEAR_S), event, at=producer_says, timestamp_type=CREATE_TIME)
        assert row.valid


def test_an_operator_denied_without_grace_keeps_only_what_was_appended_before(kit: KitSettings) -> None:
    data = s.ControlKillswitchData(tenant_id="*", tool="issue_refund", active=False, set_by=kit.operator)
    event = sign_as_operator(kit, s.ControlKillswitch.build(data, source="tidegate/cli"))  # with the key about to be denied
    retire(kit.operator_keys_dir, kit.operator, now=datetime.fromtimestamp(ROTATED_AT, UTC), grace=False)
    authority = history(kit, now=ROTATED_AT + A_YEAR_S)
    assert recorded(authority, event, at=ROTATED_AT - 1, topic="control").valid
    late = recorded(authority, event, at=ROTATED_AT + 1, topic="control")
    assert late.invalid_reason is not None
    assert late.invalid_reason.startswith("signer_retired: ")


def test_every_topic_is_stamped_by_the_broker() -> None:
    for name in [*s.TOPICS, "tools.inventory.requests", "tools.inventory.replies"]:
        assert s.topic_spec(name).kafka_config()["message.timestamp.type"] == "LogAppendTime", name
