"""The records that bind the approval's endpoint rows and token revocations: who may sign them, and how they are applied.

The attacker here holds a Kafka login that appends to `directory` or `control` (or replays what is there), not a key
the services trust: a record signed by another service's key is refused, an older one never undoes a newer one, and a
row no record names is trusted only where the operator allows it. The real stack: tests/security/test_approval_login_rollback.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

import schemas as s
from servicekit import Authority, ControlState, KitSettings, deployment_authority, service_key, sign_as_operator, sign_event
from servicekit.bus import Reject
from services.approval._pins import RowPins

DIGEST, OTHER = "a" * 64, "b" * 64


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()
    return KitSettings(keys_dir=tmp_path / "keys", operator_private_keys_dir=tmp_path / "operator", operator="oncall")


@pytest.fixture
def authority(kit: KitSettings) -> Authority:
    service_key(kit, "approval")
    service_key(kit, "policy")
    sign_as_operator(kit, pin())  # makes the operator's key, on the allow-list
    return deployment_authority(kit)


def pin(digest: str = DIGEST) -> s.DirectoryEndpoint:
    data = s.DirectoryEndpointData(tenant_id="acme", endpoint_id="chat", row_sha256=digest, set_by="approval")
    return s.DirectoryEndpoint.build(data, source="tidegate/approval")


def revoked(kind: type[s.DirectoryTokenRevoked] | type[s.ControlTokenRevoked]) -> s.Envelope:
    return kind.build(s.TokenRevokedData(tenant_id="acme", token_id="tok_1", set_by="oncall"), source="tidegate/cli")


def check(authority: Authority, event: s.Envelope) -> str | None:
    refusal = authority.check(s.encode(event), event)
    return None if refusal is None else refusal.code


def test_only_the_approval_service_or_an_operator_signs_a_pin_and_only_an_operator_a_revocation_on_control(
    kit: KitSettings, authority: Authority
) -> None:
    approval, policy = service_key(kit, "approval"), service_key(kit, "policy")
    assert check(authority, sign_event(pin(), approval, sequence=time.time_ns())) is None
    assert check(authority, sign_as_operator(kit, pin())) is None
    assert check(authority, sign_event(pin(), policy, sequence=time.time_ns())) == "signer_not_allowed"
    assert check(authority, sign_event(pin(), approval)) == "control_replayed"  # no sequence
    assert check(authority, sign_event(revoked(s.DirectoryTokenRevoked), approval, sequence=time.time_ns())) is None
    assert check(authority, sign_event(revoked(s.ControlTokenRevoked), approval, sequence=time.time_ns())) == "signer_not_allowed"
    assert check(authority, sign_as_operator(kit, revoked(s.ControlTokenRevoked))) is None


async def test_an_older_pin_replayed_never_undoes_a_newer_one(kit: KitSettings) -> None:
    approval = service_key(kit, "approval")
    old = sign_event(pin(DIGEST), approval, sequence=time.time_ns())
    new = sign_event(pin(OTHER), approval, sequence=time.time_ns())
    state = ControlState()
    await state.apply(old)
    await state.apply(new)
    with pytest.raises(Reject) as replayed:
        await state.apply(old)
    assert replayed.value.code == "control_replayed"
    assert state.endpoints["acme", "chat"][1] == OTHER

    own = ControlState()  # the service applies its own record at once, then reads an older one from the topic
    own.pin_endpoint("acme", "chat", new.sequence or 0, OTHER)
    await own.apply(old)
    assert own.endpoints["acme", "chat"][1] == OTHER


async def test_a_revocation_on_either_topic_revokes() -> None:
    pins = RowPins(ControlState())
    assert not pins.revoked("tok_1")
    pins.control.revoked_tokens["tok_1"] = "acme"
    assert pins.revoked("tok_1")


def test_a_row_is_current_only_when_the_newest_pin_names_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    state = ControlState()
    lax, strict = RowPins(state), RowPins(state, required=True)
    assert lax.endpoint_refusal("acme", "chat", DIGEST) is None  # written before pins: trusted, said once
    assert lax.endpoint_refusal("acme", "chat", DIGEST) is None
    assert caplog.text.count("is trusted though no tidegate.directory.endpoint record names its row") == 1
    assert (strict.endpoint_refusal("acme", "chat", DIGEST) or "").startswith("unpinned:")
    state.pin_endpoint("acme", "chat", 1, OTHER)
    assert (lax.endpoint_refusal("acme", "chat", DIGEST) or "").startswith("rolled_back:")
    assert lax.endpoint_refusal("acme", "chat", OTHER) is None
    assert strict.endpoint_refusal("acme", "chat", OTHER) is None


class Directory:
    """`directory` as every copy of the approval service reads it: each record published, applied in order by a reader."""

    def __init__(self) -> None:
        self.reader = ControlState()  # another service (or this copy at its next start) reading the topic
        self.refused: list[str] = []

    async def publish(self, record: s.Envelope) -> None:
        try:
            await self.reader.apply(record)
        except Reject as exc:
            self.refused.append(exc.code)


async def test_a_copy_whose_clock_is_behind_still_pins_after_the_newest_pin_and_the_earlier_row_stays_refused(kit: KitSettings) -> None:
    """Copy A (clock a minute ahead) registered the endpoint; copy B, a minute behind, removes it at once (the secret leaked).

    B's pin went out with B's wall clock for its sequence, below A's: every service, B too at its next start, refused it
    as replayed, B's own state kept A's pin, and B wrote its row anyway: the removal refused, and A's row, the one
    the newest pin still named, trusted again once whoever holds the database login put it back.
    """
    approval = service_key(kit, "approval")
    directory = Directory()
    now = time.time_ns()
    a = sign_event(pin(DIGEST), approval, sequence=now + 60 * 10**9)  # copy A's pin of the enabled row, its clock ahead
    await directory.publish(a)
    state = ControlState()
    await state.apply(a)  # copy B read it
    caught_up = []

    async def catch_up() -> None:
        caught_up.append(True)

    b = RowPins(
        state,
        sign=lambda record, sequence: sign_event(record, approval, sequence=sequence),
        publish=directory.publish,
        caught_up=catch_up,
        clock=lambda: now - 60 * 10**9,  # copy B's clock, a minute behind
    )
    await b.pin_endpoint("acme", "chat", OTHER)  # B's removal: the disabled row's digest
    assert caught_up == [True]  # it read `directory` to its end before it chose a sequence
    assert directory.refused == []  # not refused as a replay
    assert directory.reader.endpoints["acme", "chat"][1] == OTHER  # every reader names the removal's row
    assert b.pinned("acme", "chat") == OTHER
    assert (b.endpoint_refusal("acme", "chat", DIGEST) or "").startswith("rolled_back:")  # A's row put back: refused
    await b.pin_endpoint("acme", "chat", DIGEST)  # and the next change after it, on the same clock
    assert directory.refused == []
    assert directory.reader.endpoints["acme", "chat"][1] == DIGEST


async def test_two_changes_of_one_endpoint_published_at_once_on_a_clock_behind_are_both_taken(kit: KitSettings) -> None:
    """One copy, its clock behind the newest pin, publishes two changes of one endpoint while the first is still in flight.

    Before, the sequence it sent was noted only once the broker had acknowledged it: both took the newest known + 1, and
    every reader refused the second as replayed while its row was written (the endpoint refused as rolled back).
    """
    approval = service_key(kit, "approval")
    directory = Directory()
    now = time.time_ns()
    newest = sign_event(pin(DIGEST), approval, sequence=now + 60 * 10**9)
    await directory.publish(newest)
    state = ControlState()
    await state.apply(newest)

    async def slow_publish(record: s.Envelope) -> None:
        await asyncio.sleep(0.01)  # the broker's acknowledgement takes a moment
        await directory.publish(record)

    async def caught_up() -> None:
        await asyncio.sleep(0)

    pins = RowPins(
        state,
        sign=lambda record, sequence: sign_event(record, approval, sequence=sequence),
        publish=slow_publish,
        caught_up=caught_up,
        clock=lambda: now - 60 * 10**9,
    )
    await asyncio.gather(pins.pin_endpoint("acme", "chat", OTHER), pins.pin_endpoint("acme", "chat", DIGEST))
    assert directory.refused == []


async def test_revocations_read_on_either_topic_revoke(kit: KitSettings, authority: Authority) -> None:
    """A signed `tidegate.directory.token_revoked` (the service's) and `tidegate.control.token_revoked` (an operator's),
    applied as read from their topics, each revoke their token; nothing else does."""
    state = ControlState()
    pins = RowPins(state)
    await state.apply(sign_event(revoked(s.DirectoryTokenRevoked), service_key(kit, "approval"), sequence=time.time_ns()))
    assert pins.revoked("tok_1")
    other = s.TokenRevokedData(tenant_id="acme", token_id="tok_2", set_by="oncall")
    assert not pins.revoked("tok_2")
    await state.apply(sign_as_operator(kit, s.ControlTokenRevoked.build(other, source="tidegate/cli")))
    assert pins.revoked("tok_2")
    assert not pins.revoked("tok_3")


def test_a_revocation_whose_row_failed_says_what_to_run_where_there_is_no_sweep(caplog: pytest.LogCaptureFixture) -> None:
    """The operator's `tidegate approvals token revoke` met a database that failed the row: the CLI has no sweep to write
    it later, so the line says to revoke again; the service's own says its sweep will."""
    with caplog.at_level(logging.ERROR):
        RowPins(ControlState(), operator=True).row_unwritten("tok_1", "acme", OSError("disk full"))
        RowPins(ControlState()).row_unwritten("tok_2", "acme", OSError("disk full"))
    cli, service = (r.getMessage() for r in caplog.records)
    assert "OSError: disk full" in cli
    assert "tidegate approvals token revoke tok_1" in cli
    assert "sweep" not in cli
    assert "the sweep writes it" in service
